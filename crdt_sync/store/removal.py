"""Removing records from the local store: every row a record has, in every per-record table.

:func:`remove_records` runs inside a write transaction of the store (the group commit's
callable, on the store's thread). It deletes what the store holds of each record: the
``records`` row (snapshot, state vector), its ``updates`` rows, its conflict log and pending
conflict scan, and the rows of any other table keyed by ``(collection, id)`` (e.g. a
projection added by a later migration), found from the schema. It never touches ``outbox``:
callers remove only records without unsynced changes (``LocalStore.drop_records`` checks that
in the same transaction), so nothing unsynced is ever lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["remove_records"]

# Tables that are not per-record data (or must never lose a row here).
_KEEP = frozenset({"outbox", "meta", "sqlite_sequence"})
_KEYS_PER_STATEMENT = 400


def per_record_tables(db: sqlite3.Connection) -> list[str]:
    """The tables with ``collection`` and ``id`` columns, outbox and meta excepted."""
    tables = []
    for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall():
        if name in _KEEP:
            continue
        columns = {row[1] for row in db.execute(f'PRAGMA table_info("{name}")')}
        if {"collection", "id"} <= columns:
            tables.append(str(name))
    return sorted(tables)


def remove_records(db: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> None:
    """Delete every row of these ``(collection, record_id)`` records from every per-record
    table of the local store (in the caller's transaction). The outbox is left alone: check
    that the records have no pending entries first."""
    if not keys:
        return
    by_collection: dict[str, list[str]] = {}
    for collection, record_id in dict.fromkeys(keys):
        by_collection.setdefault(collection, []).append(record_id)
    for table in per_record_tables(db):
        for collection, ids in by_collection.items():
            # ``collection = ? AND id IN (...)`` uses the (collection, id) indexes; a
            # ``(collection, id) IN (VALUES ...)`` would scan the table.
            for start in range(0, len(ids), _KEYS_PER_STATEMENT):
                chunk = ids[start : start + _KEYS_PER_STATEMENT]
                marks = ",".join("?" for _ in chunk)
                db.execute(
                    f'DELETE FROM "{table}" WHERE collection = ? AND id IN ({marks})',
                    [collection, *chunk],
                )
