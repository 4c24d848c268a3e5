"""Removing records from the local store: every row of theirs, in the caller's transaction.

:func:`remove_records` is the one place that knows which tables hold rows of a record
(:data:`PER_RECORD_TABLES`), so eviction, cache clearing and deletion cannot forget one. The
conflict log is kept (:data:`KEPT_TABLES`: the app shows it, and it is bounded by itself), and
so is the outbox: a record with entries in it has unsynced changes, and removing it is refused.

The one exception is a deleted record whose tombstone the relay purged
(:meth:`~crdt_sync.store.sqlite.LocalStore.forget_purged`): the relay refuses its pending
changes for good, so that caller first logs each write they hold as lost to the deletion, then
passes ``drop_pending=True`` and the record's outbox entries leave with it. Nothing else may.
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
#: unsynced changes, except with ``drop_pending``) and the conflict log (history the app shows).
KEPT_TABLES = ("outbox", "conflict_log")

# Keys per statement (SQLite allows 32,766 parameters; two per key).
_CHUNK = 400


def remove_records(
    db: sqlite3.Connection, keys: Sequence[tuple[str, str]], *, drop_pending: bool = False
) -> None:
    """Delete every row of these ``(collection, record_id)`` records from each per-record
    table, inside the caller's transaction (on the store's SQLite thread). Records not in the
    store are ignored.

    Args:
        db: the store's connection, inside a write transaction.
        keys: the records.
        drop_pending: also delete their outbox entries instead of refusing. Only for a
            caller that has already logged what those entries wrote as lost (the purge of a
            deleted record, see the module docstring).

    Raises:
        InvalidState: without ``drop_pending``, one of them has unsynced changes (outbox
            entries); nothing is removed by this call (the check comes first).
    """
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        if drop_pending:
            continue
        row = db.execute(
            f"SELECT collection, id FROM outbox WHERE {_match(len(chunk))} LIMIT 1",
            [part for key in chunk for part in key],
        ).fetchone()
        if row is not None:
            raise InvalidState(
                f"record {row[0]}/{row[1]} has unsynced changes: it cannot be removed"
            )
    tables = (*_BY_KEY, "outbox") if drop_pending else _BY_KEY
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        params = [part for key in chunk for part in key]
        for table in tables:
            db.execute(f"DELETE FROM {table} WHERE {_match(len(chunk))}", params)
        remove_rows(db, chunk)


def _match(count: int) -> str:
    # OR of primary-key equalities: each is an index lookup (a row-value IN (VALUES ...) list
    # is a full scan in SQLite, see docs/architecture.md).
    return " OR ".join(["(collection = ? AND id = ?)"] * count)
