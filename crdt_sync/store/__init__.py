"""The local store: records, outbox and sync state in one SQLite file per replica."""
