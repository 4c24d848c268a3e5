"""The projection: each record's top-level fields as one JSON row, indexed and searchable.

Queries and full-text search read the ``projection`` table, never a record's document. A row
is written in the same transaction as the edit that changed the record (local edits), or as
the scan that follows remote updates (:meth:`LocalStore.scan_conflicts`, due in the same
transaction as the updates: a crash only delays it, and a query first brings the rows of its
collection up to date). So a query never reads a projection older than what it can see.

- :class:`ProjectionSpec`: the indexes and full-text fields the app declares per collection,
  and the DDL that makes the file match them (:meth:`ProjectionSpec.apply`, at open).
- :func:`encode_fields` / :func:`decode_fields`: plain field values <-> the row: a JSON object
  of the scalar fields (what queries compare and indexes hold: a bare ``json_extract`` is a
  field's value, with no type check) and one of the others (maps, lists; bytes and non-finite
  floats, which JSON cannot hold, tagged).
- :func:`write_row` / :func:`remove_rows`: run on the store's SQLite thread inside a write.

Full-text search uses one FTS5 table over the declared text fields of each record (joined by
newlines), tokenized with ``unicode61 remove_diacritics 2``: case and accents are folded.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import InvalidQuery
from ..query import check_field, json_column

__all__ = [
    "ProjectionSpec",
    "decode_fields",
    "encode_fields",
    "fts_query",
    "remove_rows",
    "write_row",
]

#: Name prefix of the indexes the spec manages (others are left alone).
INDEX_PREFIX = "crdt_sync_ix:"

_META_TEXT = "projection:text_fields"


#: The SQL value of a top-level scalar field of a projection row (what the indexes are on).
field_sql = json_column("fields", scalars_only=True)

Row = tuple[str, str | None]
"""A projection row's ``(fields, nested)`` JSON texts (see the module docstring)."""


@dataclass(frozen=True)
class ProjectionSpec:
    """What the app declares: ``indexes`` per collection (each a field or a tuple of fields,
    in order) and the ``text_fields`` searched by full-text search per collection."""

    indexes: Mapping[str, Sequence[tuple[str, ...]]] = field(default_factory=dict)
    text_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        indexes: Mapping[str, Iterable[str | Sequence[str]]] | None,
        text_fields: Mapping[str, Iterable[str]] | None,
    ) -> ProjectionSpec:
        """Check and normalize the declarations given to :meth:`LocalStore.open`.

        Raises:
            InvalidQuery: a collection or field name that cannot be indexed.
        """
        norm: dict[str, list[tuple[str, ...]]] = {}
        for collection, declared in (indexes or {}).items():
            _check_collection(collection)
            if isinstance(declared, str):
                raise InvalidQuery(
                    f"indexes[{collection!r}] must be a list of fields or field tuples,"
                    f" not the string {declared!r}"
                )
            for item in declared:
                fields = (item,) if isinstance(item, str) else tuple(item)
                if not fields:
                    raise InvalidQuery(f"indexes[{collection!r}]: an index needs a field")
                norm.setdefault(collection, []).append(tuple(check_field(f) for f in fields))
        texts: dict[str, tuple[str, ...]] = {}
        for collection, names in (text_fields or {}).items():
            _check_collection(collection)
            if isinstance(names, str):
                raise InvalidQuery(f"text_fields[{collection!r}] must be a list of fields")
            fields = tuple(check_field(n) for n in names)
            if fields:
                texts[collection] = fields
        return cls({c: tuple(v) for c, v in norm.items()}, texts)

    def index_ddl(self) -> dict[str, str]:
        """``{index name: CREATE INDEX statement}`` for every declared index."""
        out = {}
        for collection, declared in self.indexes.items():
            for fields in declared:
                name = INDEX_PREFIX + json.dumps([collection, *fields], ensure_ascii=False)
                columns = ", ".join(field_sql(f) for f in fields)
                out[name] = f"CREATE INDEX {_ident(name)} ON projection (collection, {columns}, id)"
        return out

    def text_body_sql(self, collection: str) -> str | None:
        """The SQL of a row's searchable text in ``collection`` (None: not searchable)."""
        fields = self.text_fields.get(collection)
        if not fields:
            return None
        return " || char(10) || ".join(
            f"coalesce({field_sql(f)}, json_extract(nested, '$.\"{f}\"'), '')" for f in fields
        )

    def apply(self, db: sqlite3.Connection) -> None:
        """Make the file's indexes and full-text rows match this spec (inside a transaction).

        Indexes are created and dropped by name; a collection whose text fields changed has
        its full-text rows rebuilt from the projection (no document is read).
        """
        wanted = self.index_ddl()
        existing = {
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE ?",
                (INDEX_PREFIX + "%",),
            )
        }
        for name in existing - wanted.keys():
            db.execute(f"DROP INDEX {_ident(name)}")
        for name in wanted.keys() - existing:
            db.execute(wanted[name])
        row = db.execute("SELECT value FROM meta WHERE key = ?", (_META_TEXT,)).fetchone()
        before: dict[str, list[str]] = json.loads(row[0]) if row else {}
        now = {c: list(f) for c, f in self.text_fields.items()}
        if before == now:
            return
        for collection in before.keys() | now.keys():
            if before.get(collection) != now.get(collection):
                db.execute("DELETE FROM record_text WHERE collection = ?", (collection,))
                body = self.text_body_sql(collection)
                if body is not None:
                    db.execute(
                        "INSERT INTO record_text (rowid, collection, id, body)"
                        f" SELECT rowid, collection, id, {body} FROM projection"
                        " WHERE collection = ?",
                        (collection,),
                    )
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_META_TEXT, json.dumps(now, ensure_ascii=False)),
        )


def _check_collection(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidQuery(f"a collection name must be a non-empty string, got {name!r}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------------ encoding

# Tags for what JSON cannot hold; map keys starting with "$" below the top level are escaped
# with one more "$" so that a tag is never confused with a user's key.
_BYTES = "$bytes"
_FLOAT = "$float"


def encode_fields(fields: Mapping[str, Any]) -> Row:
    """The projection row of a record's plain top-level fields: the scalars (what queries
    compare) apart from the rest."""
    scalars: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in fields.items():
        if (
            value is None
            or isinstance(value, str | int)
            or (isinstance(value, float) and math.isfinite(value))
        ):
            scalars[key] = value
        else:
            nested[key] = _tag(value)
    return _dumps(scalars), _dumps(nested) if nested else None


def _dumps(value: Any) -> str:
    # Keys sorted: one record's row is the same text however its document orders its fields
    # (Yrs maps iterate in hash order), so an unchanged record is seen as unchanged.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def _tag(value: Any) -> Any:
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT: repr(value)}
    if isinstance(value, dict):
        return {("$" + k if k.startswith("$") else k): _tag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    return value


def decode_fields(row: Row) -> dict[str, Any]:
    """The plain top-level fields of a projection row (see :func:`encode_fields`)."""
    fields: dict[str, Any] = orjson.loads(row[0])
    if row[1] is not None:
        for key, value in orjson.loads(row[1]).items():
            fields[key] = _untag(value)
    return fields


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            if _BYTES in value:
                return base64.b64decode(value[_BYTES])
            if _FLOAT in value:
                return float(value[_FLOAT])
        return {(k[1:] if k.startswith("$") else k): _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


# ------------------------------------------------------------------------------ writing


def write_row(
    db: sqlite3.Connection, spec: ProjectionSpec, collection: str, record_id: str, row: Row
) -> Row | None:
    """Upsert a record's projection row (and its full-text row), its times copied from its
    ``records`` row. On the SQLite thread, inside a write, after the ``records`` row is
    written. Returns the row it replaced (None: new), or ``row`` itself if unchanged."""
    found = db.execute(
        "SELECT rowid, fields, nested FROM projection WHERE collection = ? AND id = ?",
        (collection, record_id),
    ).fetchone()
    if found is None:
        rowid = db.execute(
            "INSERT INTO projection (collection, id, fields, nested, created_at, updated_at,"
            " accessed_at) SELECT collection, id, ?, ?, created_at, updated_at, accessed_at"
            " FROM records WHERE collection = ? AND id = ?",
            (*row, collection, record_id),
        ).lastrowid
        replaced = None
    else:
        rowid, replaced = found[0], (str(found[1]), found[2])
        db.execute(
            "UPDATE projection SET fields = ?, nested = ?, (updated_at, accessed_at) ="
            " (SELECT updated_at, accessed_at FROM records WHERE collection = ? AND id = ?)"
            " WHERE rowid = ?",
            (*row, collection, record_id, rowid),
        )
        if replaced == row:
            return row
    body = spec.text_body_sql(collection)
    if body is not None:
        if replaced is not None:
            db.execute("DELETE FROM record_text WHERE rowid = ?", (rowid,))
        db.execute(
            f"INSERT INTO record_text (rowid, collection, id, body) SELECT rowid, collection,"
            f" id, {body} FROM projection WHERE rowid = ?",
            (rowid,),
        )
    return replaced


def write_or_remove_row(
    db: sqlite3.Connection, spec: ProjectionSpec, collection: str, record_id: str, row: Row | None
) -> Row | None:
    """:func:`write_row`, or with ``row`` None (the record is deleted: docs/records.md,
    "Deleting a record") remove its projection and full-text rows, so that queries, counts,
    search and ``get()`` no longer find it. Returns the row replaced or removed (None: there
    was none), or ``row`` itself if unchanged."""
    if row is not None:
        return write_row(db, spec, collection, record_id, row)
    found = db.execute(
        "SELECT fields, nested FROM projection WHERE collection = ? AND id = ?",
        (collection, record_id),
    ).fetchone()
    if found is None:
        return None
    remove_rows(db, [(collection, record_id)])
    return (str(found[0]), found[1])


def remove_rows(db: sqlite3.Connection, keys: Iterable[tuple[str, str]]) -> None:
    """Delete these records' projection and full-text rows. On the SQLite thread."""
    for collection, record_id in keys:
        found = db.execute(
            "DELETE FROM projection WHERE collection = ? AND id = ? RETURNING rowid",
            (collection, record_id),
        ).fetchone()
        if found is not None:
            db.execute("DELETE FROM record_text WHERE rowid = ?", (found[0],))


# ------------------------------------------------------------------------------ search

_TERM = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str, *, prefix: bool = True) -> str | None:
    """An FTS5 query matching records that hold every word of ``text`` (the last one as a
    prefix when ``prefix``: search as you type). None when ``text`` has no word.

    User text never reaches FTS5's query syntax: each word is quoted.
    """
    words = _TERM.findall(text)
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    if prefix:
        quoted[-1] += "*"
    return " ".join(quoted)
