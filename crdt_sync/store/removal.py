"""Removing records from the local store: every row a record owns, in one place.

:func:`remove_records` is THE function that drops records' local rows. Anything that takes
records out of the store goes through it: the removal of deleted records whose tombstone the
relay purged (:meth:`~crdt_sync.store.sqlite.LocalStore.forget_purged`), and later cache
eviction, retention and ``clear_cache()``. A table that holds per-record rows (a projection of
the fields, a full-text index, access times...) adds its ``DELETE`` to :data:`RECORD_TABLES`
(or, for a table keyed otherwise, to :func:`remove_records`), so no caller can forget it.

**No silent loss**: by default a record with pending local changes (an entry in the outbox) is
*kept*, whatever the caller asked; only a caller that has settled those changes itself (logged
them as lost, as the purge of a deleted record does) passes ``drop_pending=True``. The
conflict log is never touched: it is the record of what was lost.

Runs inside the caller's transaction, on the store's SQLite thread (a group-commit write
body), so the removal commits or rolls back with the rest of the caller's change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

__all__ = ["RECORD_TABLES", "remove_records"]

#: Tables whose rows belong to one record, keyed by ``(collection, id)``. ``records`` is last:
#: a record without a ``records`` row does not exist for any reader.
RECORD_TABLES: Sequence[str] = ("updates", "conflict_scan", "outbox", "records")

_CHUNK = 400  # (collection, id) pairs per statement


def remove_records(
    db: sqlite3.Connection,
    keys: Iterable[tuple[str, str]],
    *,
    drop_pending: bool = False,
) -> list[tuple[str, str]]:
    """Delete every local row of the records ``keys`` (see the module docstring).

    Args:
        db: the store's connection, inside a write transaction.
        keys: ``(collection, record_id)`` pairs; records not in the store are ignored.
        drop_pending: also remove records that have outbox entries, and those entries. Only
            for a caller that has already made sure their changes are not silently lost.

    Returns:
        The keys of the records removed (those that were in the store and allowed), in order.
    """
    wanted = list(dict.fromkeys(keys))
    removed: list[tuple[str, str]] = []
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        present = _present(db, chunk)
        if not drop_pending:
            present -= _pending(db, chunk)
        batch = [key for key in chunk if key in present]
        if not batch:
            continue
        for table in RECORD_TABLES:
            db.executemany(f"DELETE FROM {table} WHERE collection = ? AND id = ?", batch)
        removed.extend(batch)
    return removed


def _present(db: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    return {
        (str(c), str(r))
        for key in keys
        for c, r in db.execute(
            "SELECT collection, id FROM records WHERE collection = ? AND id = ?", key
        )
    }


def _pending(db: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    return {
        (str(c), str(r))
        for key in keys
        for c, r in db.execute(
            "SELECT collection, id FROM outbox WHERE collection = ? AND id = ? LIMIT 1", key
        )
    }
