"""Queries and full-text search on the projection, run on the store's SQLite thread.

A query is one SQL statement over the ``projection`` table (:mod:`crdt_sync.store.projection`)
joined to each record's metadata: the filter compiles with :func:`crdt_sync.query.to_sql`,
ordering and paging are SQL's, and rows become :class:`~crdt_sync.records.record.Record`
snapshots by decoding their JSON row (no document is read). The indexes the app declared are
on the same expressions, so an indexed range with ``ORDER BY ... LIMIT`` reads only the
rows it returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..query import Filter, Query, json_column, to_sql
from ..records.record import Record
from .projection import decode_fields, field_sql

__all__ = ["SearchHit", "count_rows", "query_rows", "query_sql", "record_from_row", "search_rows"]

_COLUMN = json_column("fields", scalars_only=True)

# No join to ``records``: the projection row carries the times; a result's state vector is
# not read (``b""``), except by :func:`record_from_row`.
_SELECT = (
    "SELECT p.id, p.fields, p.nested, p.created_at, p.updated_at, p.accessed_at,"
    " EXISTS (SELECT 1 FROM outbox o WHERE o.collection = p.collection AND o.id = p.id)"
)
_FROM = " FROM projection p"


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A full-text search result: the record, its rank (lower is better: FTS5's bm25) and a
    snippet of the matching text with the match marked."""

    record: Record
    rank: float
    snippet: str


def _where(collection: str, where: Filter | None) -> tuple[str, list[Any]]:
    sql, params = " WHERE p.collection = ?", [collection]
    if where is not None:
        condition, more = to_sql(where, _COLUMN)
        sql += f" AND {condition}"
        params += more
    return sql, params


def _record(
    collection: str,
    row: Sequence[Any],
    accessed: Mapping[tuple[str, str], float],
    state_vector: bytes = b"",
) -> Record:
    record_id = row[0]
    return Record(
        collection=collection,
        id=record_id,
        fields=decode_fields((row[1], row[2])),
        created_at=row[3],
        updated_at=row[4],
        accessed_at=max(row[5], accessed.get((collection, record_id), row[5])),
        pending=bool(row[6]),
        state_vector=state_vector,
    )


def query_rows(
    db: sqlite3.Connection,
    query: Query,
    where: Filter | None,
    accessed: Mapping[tuple[str, str], float],
) -> list[Record]:
    """The records of ``query`` (its filter already resolved as ``where``)."""
    sql, params = query_sql(query, where)
    return [_record(query.collection, row, accessed) for row in db.execute(sql, params)]


def query_sql(query: Query, where: Filter | None) -> tuple[str, list[Any]]:
    """The statement :func:`query_rows` runs, and its parameters."""
    sql, params = _where(query.collection, where)
    order = [f"{field_sql(name)} {'DESC' if desc else 'ASC'}" for name, desc in query.ordering]
    # Ties by id, in the direction of the last key: one index scan (forward or backward).
    last_desc = bool(query.ordering) and query.ordering[-1][1]
    sql += " ORDER BY " + ", ".join([*order, "p.id DESC" if last_desc else "p.id ASC"])
    if query.limit is not None or query.offset:
        sql += " LIMIT ? OFFSET ?"
        params += [-1 if query.limit is None else query.limit, query.offset]
    return _SELECT + _FROM + sql, params


def record_from_row(
    db: sqlite3.Connection, collection: str, record_id: str, accessed_at: float
) -> Record | None:
    """The record read from its projection row, or None if it has none (or its state vector
    is not stored yet): read its document instead."""
    rows = db.execute(
        _SELECT + ", r.state_vector" + _FROM + " JOIN records r ON r.collection = p.collection"
        " AND r.id = p.id WHERE p.collection = ? AND p.id = ?",
        (collection, record_id),
    ).fetchall()  # all: a statement left unfinished would hold a read snapshot (and the WAL)
    row = rows[0] if rows else None
    if row is None or row[7] is None:
        return None
    return _record(collection, row, {(collection, record_id): accessed_at}, bytes(row[7]))


def count_rows(db: sqlite3.Connection, collection: str, where: Filter | None) -> int:
    """How many records of ``collection`` match ``where``."""
    sql, params = _where(collection, where)
    return int(db.execute("SELECT COUNT(*) FROM projection p" + sql, params).fetchone()[0])


def search_rows(
    db: sqlite3.Connection,
    collection: str,
    match: str,
    where: Filter | None,
    limit: int,
    marks: tuple[str, str],
    accessed: Mapping[tuple[str, str], float],
) -> list[SearchHit]:
    """Full-text matches of the FTS5 query ``match`` in ``collection``, best first."""
    sql, params = _where(collection, where)
    rows = db.execute(
        _SELECT
        + ", record_text.rank, snippet(record_text, 2, ?, ?, '…', 12)"
        + _FROM
        + " JOIN record_text ON record_text.rowid = p.rowid"
        + sql
        + " AND record_text MATCH ? ORDER BY record_text.rank, p.id LIMIT ?",
        [*marks, *params, match, limit],
    )
    return [SearchHit(_record(collection, row, accessed), float(row[7]), row[8]) for row in rows]
