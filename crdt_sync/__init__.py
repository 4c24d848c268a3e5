"""crdt-sync: offline-first replication of CRDT records (pycrdt/Yjs) through a relay.

``import crdt_sync`` loads nothing: each public name is imported from its module when first
used (PEP 562), so ``import crdt_sync.protocol``, ``crdt_sync.records`` or ``crdt_sync.yjs``
brings in neither asyncio nor aiosqlite. The names, and where they live:

- records (pure): ``Record``, ``RecordEditor``, ``MapEditor``, ``ArrayEditor``, ``TextField``,
  ``LwwPolicy``, ``Conflict``, ``HybridClock``, ``Timestamp`` (:mod:`crdt_sync.records`);
- the local store: ``LocalStore``, ``Outbox``, ``RemoteUpdate``, ``ConflictLogEntry``,
  ``SearchHit``, ``LiveQuery``, ``QueryResult``, ``RecordChanged`` (:mod:`crdt_sync.store`),
  ``OutboxEntry``, ``OutboxStatus`` (:mod:`crdt_sync.outbox`);
- filters for queries, subscriptions and grants: ``field``, ``Query``, ``Claim``
  (:mod:`crdt_sync.query`);
- the cache's retention, quota and expiry: ``CachePolicy``, ``CacheEvent``, ``CacheEventKind``
  (:mod:`crdt_sync.cache_policy`);
- every error (:mod:`crdt_sync.errors`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "ArrayEditor": "crdt_sync.records.record",
    "MapEditor": "crdt_sync.records.record",
    "Record": "crdt_sync.records.record",
    "RecordEditor": "crdt_sync.records.record",
    "TextField": "crdt_sync.records.text",
    "LwwPolicy": "crdt_sync.records.lww",
    "Conflict": "crdt_sync.records.layout",
    "HybridClock": "crdt_sync.records.clock",
    "Timestamp": "crdt_sync.records.clock",
    "CacheEvent": "crdt_sync.cache_policy",
    "CacheEventKind": "crdt_sync.cache_policy",
    "CachePolicy": "crdt_sync.cache_policy",
    "OutboxEntry": "crdt_sync.outbox",
    "OutboxStatus": "crdt_sync.outbox",
    "ConflictLogEntry": "crdt_sync.store.sqlite",
    "LocalStore": "crdt_sync.store.sqlite",
    "Outbox": "crdt_sync.store.sqlite",
    "RemoteUpdate": "crdt_sync.store.sqlite",
    "SearchHit": "crdt_sync.store.local_query",
    "LiveQuery": "crdt_sync.store.live_query",
    "QueryResult": "crdt_sync.store.live_query",
    "RecordChanged": "crdt_sync.store.record_changes",
    "field": "crdt_sync.query",
    "Query": "crdt_sync.query",
    "Claim": "crdt_sync.query",
    **dict.fromkeys(
        [
            "AuthError",
            "BatchError",
            "ConnectionClosed",
            "CorruptStoreError",
            "CrdtSyncError",
            "InvalidEdit",
            "InvalidMessage",
            "InvalidQuery",
            "InvalidState",
            "MessageTooBig",
            "OfflineError",
            "OutboxError",
            "ProtocolError",
            "RecordDeleted",
            "RecordNotFound",
            "SchemaVersionError",
            "StoreError",
            "UnsupportedVersion",
            "UnsyncedChangesError",
            "UpdateBlocked",
            "UpdateRejected",
        ],
        "crdt_sync.errors",
    ),
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'crdt_sync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from .cache_policy import CacheEvent as CacheEvent
    from .cache_policy import CacheEventKind as CacheEventKind
    from .cache_policy import CachePolicy as CachePolicy
    from .errors import AuthError as AuthError
    from .errors import BatchError as BatchError
    from .errors import ConnectionClosed as ConnectionClosed
    from .errors import CorruptStoreError as CorruptStoreError
    from .errors import CrdtSyncError as CrdtSyncError
    from .errors import InvalidEdit as InvalidEdit
    from .errors import InvalidMessage as InvalidMessage
    from .errors import InvalidQuery as InvalidQuery
    from .errors import InvalidState as InvalidState
    from .errors import MessageTooBig as MessageTooBig
    from .errors import OfflineError as OfflineError
    from .errors import OutboxError as OutboxError
    from .errors import ProtocolError as ProtocolError
    from .errors import RecordDeleted as RecordDeleted
    from .errors import RecordNotFound as RecordNotFound
    from .errors import SchemaVersionError as SchemaVersionError
    from .errors import StoreError as StoreError
    from .errors import UnsupportedVersion as UnsupportedVersion
    from .errors import UnsyncedChangesError as UnsyncedChangesError
    from .errors import UpdateBlocked as UpdateBlocked
    from .errors import UpdateRejected as UpdateRejected
    from .outbox import OutboxEntry as OutboxEntry
    from .outbox import OutboxStatus as OutboxStatus
    from .query import Claim as Claim
    from .query import Query as Query
    from .query import field as field
    from .records.clock import HybridClock as HybridClock
    from .records.clock import Timestamp as Timestamp
    from .records.layout import Conflict as Conflict
    from .records.lww import LwwPolicy as LwwPolicy
    from .records.record import ArrayEditor as ArrayEditor
    from .records.record import MapEditor as MapEditor
    from .records.record import Record as Record
    from .records.record import RecordEditor as RecordEditor
    from .records.text import TextField as TextField
    from .store.live_query import LiveQuery as LiveQuery
    from .store.live_query import QueryResult as QueryResult
    from .store.local_query import SearchHit as SearchHit
    from .store.record_changes import RecordChanged as RecordChanged
    from .store.sqlite import ConflictLogEntry as ConflictLogEntry
    from .store.sqlite import LocalStore as LocalStore
    from .store.sqlite import Outbox as Outbox
    from .store.sqlite import RemoteUpdate as RemoteUpdate
