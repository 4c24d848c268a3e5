"""The public API: what `import crdt_sync` and `import crdt_sync.client` offer is pinned here."""

from __future__ import annotations

import crdt_sync.client

import crdt_sync

CORE = {
    "ArrayEditor", "AuthError", "BatchError", "CacheEvent", "CacheEventKind", "CachePolicy",
    "Conflict", "ConflictLogEntry", "ConnectionClosed",
    "CorruptStoreError", "CrdtSyncError", "HybridClock", "InvalidEdit", "InvalidMessage",
    "InvalidState", "LocalStore", "LwwPolicy", "MapEditor", "MessageTooBig", "OfflineError",
    "Outbox", "OutboxEntry", "OutboxError", "OutboxStatus", "ProtocolError", "Record",
    "RecordDeleted", "RecordEditor", "RecordNotFound", "RemoteUpdate", "SchemaVersionError",
    "StoreError",
    "TextField", "Timestamp", "UnsupportedVersion", "UnsyncedChangesError", "UpdateBlocked",
    "UpdateRejected", "InvalidQuery", "SearchHit", "LiveQuery", "QueryResult", "RecordChanged",
    "field", "Query", "Claim",
}  # fmt: skip


def _public(module: object) -> set[str]:
    return {
        name
        for name in vars(module)
        if not name.startswith("_")
        and not isinstance(getattr(module, name), type(crdt_sync))
        and name != "annotations"
    }


def test_core_exports() -> None:
    assert set(crdt_sync.__all__) == CORE
    assert set(dir(crdt_sync)) >= CORE
    for name in CORE:  # each resolves (lazily) to the object of that name
        assert getattr(crdt_sync, name).__name__ == name


def test_client_exports() -> None:
    assert {"Replica", "RecordChange", "Status", "Progress"} <= _public(crdt_sync.client)


def test_every_error_derives_from_the_root() -> None:
    for name in CORE:
        value = getattr(crdt_sync, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, crdt_sync.CrdtSyncError), name
