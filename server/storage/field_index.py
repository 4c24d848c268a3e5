"""The relay's field index in SQLite: each record's indexed top-level fields, one row per field.

Table ``record_fields (tenant, collection, record_id, field, value)``, primary key per record
and field, plus the index ``record_fields_by_value (tenant, collection, field, value)`` that
every leaf of a subscription or grant filter looks up (``crdt_sync.subscriptions.index_sql``).
``value`` has no declared type, so it keeps what was stored: integers, reals and text, which
SQLite orders and compares as :func:`crdt_sync.query.matches` does.

The rows of a record are rewritten by the group commit that writes its updates, in the same
transaction (:func:`rewrite_fields_in_thread`); a relay storage of schema 1 is filled once
when opened (:func:`backfill_fields_in_thread`). Functions named ``*_in_thread`` run on the
connection's thread (``crdt_sync.store.sqlite_thread.on_thread``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from crdt_sync.subscriptions import Selection, index_sql

from ..record_fields import FieldReader
from .base import IndexedFields, RecordKey

FIELDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS record_fields (
    tenant TEXT NOT NULL, collection TEXT NOT NULL, record_id TEXT NOT NULL,
    field TEXT NOT NULL, value,
    PRIMARY KEY (tenant, collection, record_id, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS record_fields_by_value
    ON record_fields (tenant, collection, field, value);
"""

_ALL_RECORDS = "SELECT DISTINCT record_id FROM changes WHERE tenant = ? AND collection = ?"
_NOTHING = "SELECT NULL AS record_id WHERE 0"
_KEYS_PER_QUERY = 400

StatesQuery = Callable[[int], str]


def members_query(tenant: str, selection: Selection) -> tuple[str, list[Any]]:
    """The SQL (and parameters) selecting the ids of the records ``selection`` (resolved)
    holds: an indexed lookup per filter leaf, the ids on the ``changes`` primary key, the
    grant's scope intersected. ``tests/server/test_storage_sqlite.py`` checks its plan."""
    c = selection.collection
    scope = [("tenant", tenant), ("collection", c)]
    parts: list[str] = []
    params: list[Any] = []
    if selection.everything:
        parts.append(_ALL_RECORDS)
        params += [tenant, c]
    else:
        for f in selection.filters:
            sql, p = index_sql(f, table="record_fields", scope=scope, all_records=_ALL_RECORDS)
            parts.append(sql)
            params += p
        if selection.ids:
            parts.append(f"{_ALL_RECORDS} AND record_id IN (SELECT value FROM json_each(?))")
            params += [tenant, c, json.dumps(sorted(selection.ids))]
    if not parts:
        return _NOTHING, []
    sql = " UNION ".join(f"SELECT record_id FROM ({p})" for p in parts)
    if selection.scope is not None:
        scope_sql, scope_params = index_sql(
            selection.scope, table="record_fields", scope=scope, all_records=_ALL_RECORDS
        )
        sql = f"SELECT record_id FROM ({sql}) INTERSECT SELECT record_id FROM ({scope_sql})"
        params += scope_params
    return sql, params


def read_fields_in_thread(
    conn: sqlite3.Connection, tenant: str, keys: list[RecordKey]
) -> dict[RecordKey, IndexedFields]:
    """The indexed fields of the stored records among ``keys`` (``{}`` for one without)."""
    found: dict[RecordKey, IndexedFields] = {}
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        values = ",".join("(?,?)" for _ in chunk)
        flat = [v for key in chunk for v in key]
        for collection, record_id in conn.execute(
            f"WITH k(c, r) AS (VALUES {values}) SELECT k.c, k.r FROM k WHERE EXISTS "
            "(SELECT 1 FROM changes WHERE tenant = ? AND collection = k.c AND record_id = k.r)",
            [*flat, tenant],
        ):
            found[(str(collection), str(record_id))] = {}
        for collection, record_id, name, value in conn.execute(
            f"WITH k(c, r) AS (VALUES {values}) SELECT f.collection, f.record_id, f.field, "
            "f.value FROM k CROSS JOIN record_fields f ON f.tenant = ? AND "
            "f.collection = k.c AND f.record_id = k.r",
            [*flat, tenant],
        ):
            found.setdefault((str(collection), str(record_id)), {})[str(name)] = value
    return found


def rewrite_fields_in_thread(
    conn: sqlite3.Connection,
    reindex: list[tuple[tuple[str, str, str], list[bytes] | None, list[bytes]]],
    states_query: StatesQuery,
    reader: FieldReader,
    states: dict[tuple[str, str, str], list[bytes]] | None = None,
) -> dict[tuple[str, str, str], tuple[IndexedFields | None, IndexedFields]]:
    """Rewrite the index rows of records being written, inside the caller's transaction and
    before it stores their new updates.

    Args:
        reindex: per record ``(tenant, collection, record_id)``: its committed updates before
            this write if the caller has them (``None``: read them here when needed), and the
            write's.
        states_query: the storage's query reading a record's snapshot and log rows.
        reader: the decoder, with the documents of records written recently
            (:class:`crdt_sync.server.record_fields.FieldReader`); the caller makes it
            forget these records if the transaction fails.
        states: filled with the whole state (as updates) of each record whose fields change.

    Returns:
        Per record, its indexed fields before (``None``: it did not exist) and after.
    """
    out: dict[tuple[str, str, str], tuple[IndexedFields | None, IndexedFields]] = {}
    for key, known, updates in reindex:
        tenant, collection, record_id = key

        def load(known: list[bytes] | None = known, key: tuple[str, str, str] = key) -> list[bytes]:
            if known is not None:
                return known
            _, c, r = key
            return [bytes(row[-1]) for row in conn.execute(states_query(1), [c, r, key[0], key[0]])]

        before_rows = conn.execute(
            "SELECT field, value FROM record_fields "
            "WHERE tenant = ? AND collection = ? AND record_id = ?",
            key,
        ).fetchall()
        existed, fields = reader.after(key, load, updates)
        before: IndexedFields | None = {str(f): v for f, v in before_rows} if existed else None
        # A deleted record keeps the fields it had (server/record_fields.py).
        after = fields if fields is not None else (before if before is not None else {})
        if before != after:
            if states is not None:
                states[key] = [*load(), *updates]
            conn.execute(
                "DELETE FROM record_fields WHERE tenant = ? AND collection = ? AND record_id = ?",
                key,
            )
            conn.executemany(
                "INSERT INTO record_fields (tenant, collection, record_id, field, value) "
                "VALUES (?,?,?,?,?)",
                [(tenant, collection, record_id, f, v) for f, v in after.items()],
            )
        out[key] = (before, after)
    return out


def backfill_fields_in_thread(conn: sqlite3.Connection, states_query: StatesQuery) -> int:
    """Fill the index from every stored record (opening a schema 1 storage); one
    transaction. Returns the number of records indexed."""
    from ..record_fields import indexed_fields

    keys = [
        (str(t), str(c), str(r))
        for t, c, r in conn.execute("SELECT DISTINCT tenant, collection, record_id FROM changes")
    ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        for key in keys:
            tenant, collection, record_id = key
            parts = [
                bytes(row[-1])
                for row in conn.execute(states_query(1), [collection, record_id, tenant, tenant])
            ]
            conn.executemany(
                "INSERT OR REPLACE INTO record_fields "
                "(tenant, collection, record_id, field, value) VALUES (?,?,?,?,?)",
                [(*key, f, v) for f, v in (indexed_fields(parts) or {}).items()],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(keys)
