"""The relay's persistence, behind one seam (:class:`RelayStorage`).

- ``base.py``: the :class:`RelayStorage` protocol (everything the relay asks of a storage) and
  :class:`StorageNumbers` (what it reports for ``/metrics``);
- ``sqlite.py``: :class:`SQLiteRelayStorage`, the embedded default (one SQLite file, WAL);
- ``memory.py``: :class:`MemoryRelayStorage`, in memory, for in-process tests;
- ``state_cache.py``: :class:`StateCache`, merged record states kept in memory (any engine).
"""

from __future__ import annotations

from .base import (
    Committed,
    IndexedFields,
    Purged,
    RecordKey,
    RecordPurged,
    RelayStorage,
    Row,
    StorageNumbers,
)
from .memory import MemoryRelayStorage
from .sqlite import DB_FILENAME, DEFAULT_FORGET_ORIGINS_AFTER, SQLiteRelayStorage
from .state_cache import DEFAULT_STATE_CACHE_BYTES, StateCache

__all__ = [
    "DB_FILENAME",
    "DEFAULT_FORGET_ORIGINS_AFTER",
    "DEFAULT_STATE_CACHE_BYTES",
    "Committed",
    "IndexedFields",
    "MemoryRelayStorage",
    "Purged",
    "RecordKey",
    "RecordPurged",
    "RelayStorage",
    "Row",
    "SQLiteRelayStorage",
    "StateCache",
    "StorageNumbers",
]
