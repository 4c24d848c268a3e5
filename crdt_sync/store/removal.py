"""Removing records from the local store: every row of theirs, in the caller's transaction.

:func:`remove_records` is the one place that knows which tables hold rows of a record
(:data:`PER_RECORD_TABLES`), so eviction, cache clearing and deletion cannot forget one. The
conflict log is kept (:data:`KEPT_TABLES`: the app shows it, and it is bounded by itself), and
so is the outbox: a record with entries in it has unsynced changes, and removing it is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..errors import InvalidState
from .projection import remove_rows

__all__ = ["KEPT_TABLES", "PER_RECORD_TABLES", "remove_records"]

#: Tables with rows per record (``collection``, ``id`` columns) that leave with the record:
#: deleted by key, except the projection and its full-text rows (``projection``,
#: ``record_text``), which :func:`crdt_sync.store.projection.remove_rows` deletes.
PER_RECORD_TABLES = ("records", "updates", "conflict_scan", "projection", "record_text")
_BY_KEY = ("records", "updates", "conflict_scan")

#: Tables with ``collection``, ``id`` columns whose rows stay: the outbox (never removed:
#: unsynced changes) and the conflict log (history the app shows).
KEPT_TABLES = ("outbox", "conflict_log")

# Keys per statement (SQLite allows 32,766 parameters; two per key).
_CHUNK = 400


def remove_records(db: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> None:
    """Delete every row of these ``(collection, record_id)`` records from each per-record
    table, inside the caller's transaction (on the store's SQLite thread). Records not in the
    store are ignored.

    Raises:
        InvalidState: one of them has unsynced changes (outbox entries); nothing is removed
            by this call (the check comes first).
    """
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        row = db.execute(
            f"SELECT collection, id FROM outbox WHERE {_match(len(chunk))} LIMIT 1",
            [part for key in chunk for part in key],
        ).fetchone()
        if row is not None:
            raise InvalidState(
                f"record {row[0]}/{row[1]} has unsynced changes: it cannot be removed"
            )
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        params = [part for key in chunk for part in key]
        for table in _BY_KEY:
            db.execute(f"DELETE FROM {table} WHERE {_match(len(chunk))}", params)
        remove_rows(db, chunk)


def _match(count: int) -> str:
    # OR of primary-key equalities: each is an index lookup (a row-value IN (VALUES ...) list
    # is a full scan in SQLite, see docs/architecture.md).
    return " OR ".join(["(collection = ? AND id = ?)"] * count)
