"""The local store's SQLite schema, its version and its migrations.

The file is marked as ours with ``PRAGMA application_id`` and versioned with
``PRAGMA user_version``; :data:`MIGRATIONS` upgrades an older file step by step, each step in
one transaction.
"""

from __future__ import annotations

#: ``PRAGMA application_id`` of a crdt-sync local store ("CRSY").
APPLICATION_ID = 0x43525359

#: The schema version this code writes and reads.
SCHEMA_VERSION = 4

#: ``MIGRATIONS[n]`` upgrades a file from version ``n`` to ``n + 1``.
MIGRATIONS: dict[int, list[str]] = {
    0: [
        # Key/value settings of this replica: replica id, HLC position, sync cursor.
        """CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        # One row per record. ``confirmed`` is the compacted snapshot of what the relay has
        # confirmed; the record's current state is that snapshot plus every row of
        # ``updates`` (confirmed rows and pending local ones).
        """CREATE TABLE records (
            collection   TEXT NOT NULL,
            id           TEXT NOT NULL,
            confirmed    BLOB NOT NULL DEFAULT x'',
            state_vector BLOB,
            client_id    INTEGER NOT NULL,
            created_at   REAL NOT NULL,
            updated_at   REAL NOT NULL,
            accessed_at  REAL NOT NULL,
            PRIMARY KEY (collection, id)
        ) WITHOUT ROWID""",
        # Updates since the snapshot, in arrival order. ``outbox_seq`` is NULL for confirmed
        # updates (received from, or acknowledged by, the relay) and names the outbox entry of
        # a pending local update. ``bundle`` = 1: ``data`` holds several confirmed updates of
        # one remote batch, each as lib0 varUint length + bytes.
        """CREATE TABLE updates (
            rowid      INTEGER PRIMARY KEY,
            collection TEXT NOT NULL,
            id         TEXT NOT NULL,
            data       BLOB NOT NULL,
            bundle     INTEGER NOT NULL DEFAULT 0,
            outbox_seq INTEGER UNIQUE
        )""",
        "CREATE INDEX updates_by_record ON updates (collection, id)",
        # The outbox: one entry per local edit, ordered by seq (never reused).
        """CREATE TABLE outbox (
            seq          INTEGER PRIMARY KEY AUTOINCREMENT,
            collection   TEXT NOT NULL,
            id           TEXT NOT NULL,
            status       TEXT NOT NULL DEFAULT 'queued',
            created_at   REAL NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            error_code   TEXT,
            error_reason TEXT
        )""",
        "CREATE INDEX outbox_by_record ON outbox (collection, id)",
        # LWW writes that lost to a concurrent write (bounded; oldest dropped first).
        """CREATE TABLE conflicts (
            rowid       INTEGER PRIMARY KEY,
            collection  TEXT NOT NULL,
            id          TEXT NOT NULL,
            field       TEXT NOT NULL,
            lost_ts     TEXT NOT NULL,
            lost_value  TEXT,
            lost_deleted INTEGER NOT NULL,
            won_ts      TEXT NOT NULL,
            won_value   TEXT,
            won_deleted INTEGER NOT NULL,
            detected_at REAL NOT NULL,
            UNIQUE (collection, id, field, lost_ts)
        )""",
    ],
    1: [
        # The conflict log of record layout v2 (crdt_sync.records.layout): every slot, not only LWW
        # fields; what lost and what won each with its kind (value, deleted, text, map,
        # array) and, when known, its HLC timestamp; ``conflict_key`` identifies a conflict
        # within its record (the losing entry's key for a lost write).
        """CREATE TABLE conflict_log (
            rowid        INTEGER PRIMARY KEY,
            collection   TEXT NOT NULL,
            id           TEXT NOT NULL,
            conflict_key TEXT NOT NULL,
            path         TEXT NOT NULL,
            lost_kind    TEXT NOT NULL,
            lost_value   TEXT,
            lost_ts      TEXT,
            won_kind     TEXT NOT NULL,
            won_value    TEXT,
            won_ts       TEXT,
            detected_at  REAL NOT NULL,
            UNIQUE (collection, id, conflict_key)
        )""",
        """INSERT INTO conflict_log (collection, id, conflict_key, path, lost_kind, lost_value,
            lost_ts, won_kind, won_value, won_ts, detected_at)
           SELECT collection, id, lost_ts, json_array(field),
                  CASE lost_deleted WHEN 1 THEN 'deleted' ELSE 'value' END, lost_value, lost_ts,
                  CASE won_deleted WHEN 1 THEN 'deleted' ELSE 'value' END, won_value, won_ts,
                  detected_at
           FROM conflicts ORDER BY rowid""",
        "DROP TABLE conflicts",
        # Records changed by remote updates whose conflicts are not logged yet: filled in the
        # transaction that applies the updates, emptied by the background conflict scan (so a
        # scan interrupted by a crash resumes at the next open).
        """CREATE TABLE conflict_scan (
            collection TEXT NOT NULL,
            id         TEXT NOT NULL,
            PRIMARY KEY (collection, id)
        ) WITHOUT ROWID""",
    ],
    2: [
        # The projection (crdt_sync.store.projection): each record's top-level fields, what
        # queries read. ``fields``: a JSON object of the scalar ones (text, numbers, booleans,
        # null), which the app's declared indexes are on; ``nested``: a JSON object of the
        # others (maps, lists, bytes...) or NULL. The times are copies of ``records``'.
        """CREATE TABLE projection (
            rowid       INTEGER PRIMARY KEY,
            collection  TEXT NOT NULL,
            id          TEXT NOT NULL,
            fields      TEXT NOT NULL,
            nested      TEXT,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL,
            accessed_at REAL NOT NULL,
            UNIQUE (collection, id)
        )""",
        # Full-text search over the declared text fields of each record; rowid = projection's.
        """CREATE VIRTUAL TABLE record_text USING fts5 (
            collection UNINDEXED, id UNINDEXED, body,
            tokenize = 'unicode61 remove_diacritics 2'
        )""",
        # Existing records get their projection row from the scan that follows remote updates.
        "INSERT OR IGNORE INTO conflict_scan (collection, id) SELECT collection, id FROM records",
    ],
    3: [
        # Deletion (docs/records.md, "Deleting a record"): the key of the record's tombstone
        # (its greatest, an HLC timestamp) once its document holds one, else NULL. Written
        # with the local delete or the remote update that brings the tombstone, so reads skip
        # deleted records without decoding documents.
        "ALTER TABLE records ADD COLUMN deleted TEXT",
    ],
}
