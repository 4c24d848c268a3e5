"""crdt-sync: offline-first replication of CRDT records (pycrdt/Yjs) through a relay.

``import crdt_sync`` loads nothing: each public name is imported from its module when first
used (PEP 562), so ``import crdt_sync.protocol``, ``crdt_sync.records`` or ``crdt_sync.yjs``
brings in neither asyncio nor aiosqlite. The names, and where they live:

- records (pure): ``Record``, ``RecordEditor``, ``MapEditor``, ``ArrayEditor``, ``TextField``,
  ``LwwPolicy``, ``Conflict``, ``HybridClock``, ``Timestamp`` (:mod:`crdt_sync.records`);
- the local store: ``LocalStore``, ``Outbox``, ``RemoteUpdate``, ``ConflictLogEntry``
  (:mod:`crdt_sync.store`), ``OutboxEntry``, ``OutboxStatus`` (:mod:`crdt_sync.outbox`);
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
    "OutboxEntry": "crdt_sync.outbox",
    "OutboxStatus": "crdt_sync.outbox",
    "ConflictLogEntry": "crdt_sync.store.sqlite",
    "LocalStore": "crdt_sync.store.sqlite",
    "Outbox": "crdt_sync.store.sqlite",
    "RemoteUpdate": "crdt_sync.store.sqlite",
    **dict.fromkeys(
        [
            "AuthError",
            "BatchError",
            "ConnectionClosed",
            "CorruptStoreError",
            "CrdtSyncError",
            "InvalidEdit",
            "InvalidMessage",
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
    from .errors import AuthError as AuthError
    from .errors import BatchError as BatchError
    from .errors import ConnectionClosed as ConnectionClosed
    from .errors import CorruptStoreError as CorruptStoreError
    from .errors import CrdtSyncError as CrdtSyncError
    from .errors import InvalidEdit as InvalidEdit
    from .errors import InvalidMessage as InvalidMessage
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
    from .errors import UpdateBlocked as UpdateBlocked
    from .errors import UpdateRejected as UpdateRejected
    from .outbox import OutboxEntry as OutboxEntry
    from .outbox import OutboxStatus as OutboxStatus
    from .records.clock import HybridClock as HybridClock
    from .records.clock import Timestamp as Timestamp
    from .records.layout import Conflict as Conflict
    from .records.lww import LwwPolicy as LwwPolicy
    from .records.record import ArrayEditor as ArrayEditor
    from .records.record import MapEditor as MapEditor
    from .records.record import Record as Record
    from .records.record import RecordEditor as RecordEditor
    from .records.text import TextField as TextField
    from .store.sqlite import ConflictLogEntry as ConflictLogEntry
    from .store.sqlite import LocalStore as LocalStore
    from .store.sqlite import Outbox as Outbox
    from .store.sqlite import RemoteUpdate as RemoteUpdate
