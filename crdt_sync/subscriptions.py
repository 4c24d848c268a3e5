"""What a replica keeps: :class:`Subscription` (whole collections, record ids, queries) and the
:class:`Selection` the relay evaluates for one collection, with the record's access grant.

A replica declares its working set as subscriptions, each on one collection::

    Subscription("contacts")                                           # every record
    Subscription("jobs", ids=["job-1", "job-7"])                       # these records
    Subscription("appointments", where=field("date").window(0, 3, tz="Europe/Paris"))

A record of a collection is kept if any subscription of that collection keeps it: a whole
collection keeps every record; ``ids`` keeps the records named; ``where`` keeps the records
whose top-level fields match the filter (:mod:`crdt_sync.query`); with both ``ids`` and
``where``, a record kept by either is kept. The relay evaluates subscriptions at each catch-up,
resolving rolling windows at its own clock in the window's time zone, and intersects them with
the grant of the replica's token (:class:`Selection`).

Pure: no I/O. The relay keeps each record's indexable values (:func:`indexed_values`) in a
table ``(field, value, record_id)`` and runs a selection as the SQL of :func:`index_sql`, an
indexed lookup per leaf of the filter, never a decode of documents.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidQuery
from .query import (
    And,
    Eq,
    Filter,
    In,
    Or,
    Range,
    Window,
    check_filter,
    from_wire,
    matches,
    parse_where,
    resolve,
    to_wire,
)

__all__ = [
    "MAX_INDEXED_TEXT",
    "CatchUpPlan",
    "Selection",
    "Subscription",
    "fingerprint",
    "index_sql",
    "indexed_values",
    "normalize",
    "plan_catch_up",
    "subscriptions_from_wire",
    "subscriptions_to_wire",
]

#: Strings longer than this (in characters) are not indexed on the relay: a filter never
#: matches them there (keep queried fields short: statuses, dates, ids).
MAX_INDEXED_TEXT = 256
#: The most record ids one subscription may name.
MAX_IDS = 10_000
_INT_RANGE = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class Subscription:
    """Records of ``collection`` a replica keeps: all of them (no ``ids``, no ``where``), the
    ones named in ``ids``, the ones matching ``where``, or with both, the ones either keeps.

    ``where`` is a filter (:func:`crdt_sync.query.field`) or a ``{"field": value}`` mapping.
    Rolling windows (``field("date").window(0, 3, tz=...)``) are resolved by the relay at each
    catch-up, in the window's time zone.

    Raises:
        InvalidQuery: an empty collection name, ill-typed ids, or a malformed filter.
    """

    collection: str
    where: Filter | None = None
    ids: tuple[str, ...] | None = None

    def __init__(
        self,
        collection: str,
        where: Filter | Mapping[str, Any] | None = None,
        ids: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(collection, str) or not collection:
            raise InvalidQuery(f"a subscription needs a collection name, got {collection!r}")
        names: tuple[str, ...] | None = None
        if ids is not None:
            if isinstance(ids, str):
                raise InvalidQuery("ids must be a list of record ids, not one string")
            names = tuple(dict.fromkeys(ids))
            if not all(isinstance(i, str) and i for i in names):
                raise InvalidQuery(f"record ids must be non-empty strings: {names!r:.80}")
            if len(names) > MAX_IDS:
                raise InvalidQuery(f"a subscription names at most {MAX_IDS} record ids")
        object.__setattr__(self, "collection", collection)
        object.__setattr__(self, "where", parse_where(where))
        object.__setattr__(self, "ids", names)

    @property
    def whole(self) -> bool:
        """Whether it keeps every record of its collection."""
        return self.where is None and self.ids is None

    def to_wire(self) -> list[Any]:
        """``[collection, filter or nil, ids or nil]`` (plain lists, for a ``sub`` frame)."""
        return [
            self.collection,
            None if self.where is None else to_wire(self.where),
            None if self.ids is None else list(self.ids),
        ]

    @classmethod
    def from_wire(cls, data: Any) -> Subscription:
        """Read :meth:`to_wire`'s form.

        Raises:
            InvalidQuery: not a well-formed subscription.
        """
        if not isinstance(data, list | tuple) or len(data) != 3:
            raise InvalidQuery(f"a subscription is [collection, filter, ids], got {data!r:.80}")
        collection, where, ids = data
        if ids is not None and not isinstance(ids, list | tuple):
            raise InvalidQuery(f"subscription ids must be a list, got {ids!r:.80}")
        return cls(collection, None if where is None else from_wire(where), ids)


def normalize(subscriptions: Iterable[Subscription | str]) -> tuple[Subscription, ...]:
    """Subscriptions from subscriptions or collection names (a name is the whole
    collection), in order, duplicates removed."""
    out: dict[Subscription, None] = {}
    for item in subscriptions:
        sub = Subscription(item) if isinstance(item, str) else item
        if not isinstance(sub, Subscription):
            raise InvalidQuery(f"not a subscription: {item!r}")
        out[sub] = None
    return tuple(out)


def subscriptions_to_wire(subscriptions: Iterable[Subscription]) -> list[list[Any]]:
    """The plain-list form of several subscriptions."""
    return [s.to_wire() for s in subscriptions]


def subscriptions_from_wire(data: Any) -> tuple[Subscription, ...]:
    """Read :func:`subscriptions_to_wire`'s form.

    Raises:
        InvalidQuery: not a list of well-formed subscriptions.
    """
    if not isinstance(data, list | tuple):
        raise InvalidQuery(f"subscriptions must be a list, got {data!r:.80}")
    return tuple(Subscription.from_wire(item) for item in data)


def fingerprint(
    subscriptions: Iterable[Subscription], scopes: Mapping[str, Filter] | None = None
) -> str:
    """A short stable digest of what a replica keeps (its subscriptions and the grant's
    per-collection filters). A replica keeps its sync cursor per fingerprint: when what it
    keeps changes, it catches up from scratch (and drops what it no longer keeps)."""
    body = {
        "subs": sorted(json.dumps(s.to_wire(), sort_keys=True) for s in subscriptions),
        "scopes": {c: to_wire(f) for c, f in sorted((scopes or {}).items())},
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return digest[:16]


# ------------------------------------------------------------------------------ selections


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records of one collection a replica receives, as the relay evaluates it: the
    union of its subscriptions there (``everything``, or ``ids`` plus ``filters``), within the
    grant's filter ``scope`` (None: the grant does not restrict records).

    Filters hold windows and claims until :meth:`resolve` binds them.
    """

    collection: str
    everything: bool = False
    ids: frozenset[str] = frozenset()
    filters: tuple[Filter, ...] = ()
    scope: Filter | None = None

    @classmethod
    def of(
        cls,
        collection: str,
        subscriptions: Iterable[Subscription],
        scope: Filter | None = None,
    ) -> Selection:
        """The selection of ``collection`` by ``subscriptions`` (those of other collections
        are ignored) within ``scope``."""
        everything = False
        ids: set[str] = set()
        filters: dict[Filter, None] = {}
        for sub in subscriptions:
            if sub.collection != collection:
                continue
            if sub.whole:
                everything = True
            if sub.ids is not None:
                ids.update(sub.ids)
            if sub.where is not None:
                filters[sub.where] = None
        if everything:
            ids, filters = set(), {}
        return cls(collection, everything, frozenset(ids), tuple(filters), scope)

    @property
    def filtered(self) -> bool:
        """Whether the selection may leave out records of the collection (then the relay
        tells the replica which records to drop)."""
        return not self.everything or self.scope is not None

    @property
    def timed(self) -> bool:
        """Whether it holds a rolling window (its records change with time alone)."""
        return any(_has_window(f) for f in (*self.filters, *_opt(self.scope)))

    def resolve(self, now: dt.datetime, claims: Mapping[str, Any]) -> Selection:
        """The selection with its windows resolved at ``now`` and its claims bound.

        Raises:
            InvalidQuery: a claim the scope needs is missing from ``claims``.
        """
        return Selection(
            self.collection,
            self.everything,
            self.ids,
            tuple(resolve(f, now=now, claims=claims) for f in self.filters),
            None if self.scope is None else resolve(self.scope, now=now, claims=claims),
        )

    def keeps(self, record_id: str, fields: Mapping[str, Any] | None) -> bool:
        """Whether the (resolved) selection holds a record with these top-level ``fields``
        (``None``: the record has no fields the relay knows: only ``ids`` can keep it)."""
        values = fields or {}
        if self.scope is not None and not matches(self.scope, values):
            return False
        if self.everything or record_id in self.ids:
            return True
        return any(matches(f, values) for f in self.filters)

    def as_filter(self) -> Filter | None:
        """The subscriptions' part as one filter, ``None`` for everything (``ids`` apart)."""
        if self.everything:
            return None
        return Or(self.filters) if len(self.filters) != 1 else self.filters[0]


def _opt(f: Filter | None) -> tuple[Filter, ...]:
    return () if f is None else (f,)


def _has_window(f: Filter) -> bool:
    if isinstance(f, Window):
        return True
    if isinstance(f, And | Or):
        return any(_has_window(p) for p in f.parts)
    return False


# ------------------------------------------------------------------------------ the index


def indexed_values(fields: Mapping[str, Any]) -> list[tuple[str, int | float | str]]:
    """The ``(field, value)`` rows the relay indexes for a record with these top-level fields:
    each scalar as SQLite compares it (``True``/``False`` as 1/0), strings up to
    :data:`MAX_INDEXED_TEXT` characters, integers within 64 bits. Lists, maps, ``None`` and
    longer strings are not indexed (a filter matches none of them, as in :func:`matches`)."""
    rows: list[tuple[str, int | float | str]] = []
    for name, value in fields.items():
        if not isinstance(name, str) or not name:
            continue
        if isinstance(value, bool):
            rows.append((name, int(value)))
        elif isinstance(value, int):
            if _INT_RANGE[0] <= value <= _INT_RANGE[1]:
                rows.append((name, value))
        elif isinstance(value, float):
            if value == value:
                rows.append((name, value))
        elif isinstance(value, str) and len(value) <= MAX_INDEXED_TEXT:
            rows.append((name, value))
    return rows


def index_sql(
    f: Filter, *, table: str, scope: Sequence[tuple[str, Any]], all_records: str
) -> tuple[str, list[Any]]:
    """A ``SELECT record_id`` of the records whose indexed values match the resolved filter
    ``f``: one indexed lookup per leaf of ``f`` on ``table`` (columns ``field``, ``value``,
    ``record_id`` plus the ``scope`` columns), combined with ``INTERSECT`` / ``UNION``.

    Args:
        f: a resolved filter (no windows, no claims).
        table: the index table, indexed on ``(*scope columns, field, value)``.
        scope: ``(column, value)`` pairs every lookup is restricted to (tenant, collection).
        all_records: a ``SELECT record_id ...`` of every record in scope, with ``?`` for
            the scope values in order (the answer to an empty ``And``).

    Same answers as :func:`crdt_sync.query.matches` on the record's fields
    (hypothesis-checked), except for values :func:`indexed_values` leaves out.
    """
    check_filter(f)
    params: list[Any] = []
    sql = _index_sql(f, table, scope, all_records, params)
    return sql, params


_NUMBER = "typeof(value) IN ('integer', 'real')"
_TEXT = "typeof(value) = 'text'"


def _index_sql(
    f: Filter,
    table: str,
    scope: Sequence[tuple[str, Any]],
    all_records: str,
    params: list[Any],
) -> str:
    if isinstance(f, And | Or):
        if not f.parts:
            if isinstance(f, And):
                params.extend(v for _, v in scope)
                return all_records
            return "SELECT NULL AS record_id WHERE 0"
        joiner = " INTERSECT " if isinstance(f, And) else " UNION "
        return joiner.join(
            f"SELECT record_id FROM ({_index_sql(p, table, scope, all_records, params)})"
            for p in f.parts
        )
    if isinstance(f, Window):
        raise InvalidQuery("resolve() the filter before compiling it: it holds a window")
    where = [f"{column} = ?" for column, _ in scope] + ["field = ?"]
    lookup = [*(v for _, v in scope), f.field]
    base = f"SELECT record_id FROM {table} WHERE " + " AND ".join(where)
    if isinstance(f, Eq):
        value = _value(f.value)
        params.extend([*lookup, value])
        return f"{base} AND value = ? AND {_kind(value)}"
    if isinstance(f, In):
        values = [_value(v) for v in f.values]
        groups = [
            g
            for g in (
                [v for v in values if isinstance(v, str)],
                [v for v in values if not isinstance(v, str)],
            )
            if g
        ]
        if not groups:
            return "SELECT NULL AS record_id WHERE 0"
        parts = []
        for group in groups:
            params.extend([*lookup, *group])
            marks = ", ".join("?" * len(group))
            parts.append(f"{base} AND value IN ({marks}) AND {_kind(group[0])}")
        return " UNION ".join(parts)
    assert isinstance(f, Range)
    terms: list[str] = []
    kinds: dict[str, None] = {}
    bounds = (
        (f.low, ">=" if f.low_inclusive else ">"),
        (f.high, "<=" if f.high_inclusive else "<"),
    )
    extra: list[Any] = []
    for bound, op in bounds:
        if bound is None:
            continue
        value = _value(bound)
        extra.append(value)
        terms.append(f"value {op} ?")
        kinds[_kind(value)] = None
    if not terms:
        params.extend(lookup)
        return f"{base} AND typeof(value) IN ('integer', 'real', 'text')"
    params.extend([*lookup, *extra])
    return f"{base} AND " + " AND ".join([*terms, *kinds])


def _value(v: Any) -> int | float | str:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float | str):
        return v
    raise InvalidQuery("resolve() the filter before compiling it: it holds a claim")


def _kind(value: int | float | str) -> str:
    return _TEXT if isinstance(value, str) else _NUMBER


@dataclass(slots=True)
class CatchUpPlan:
    """What a catch-up sends for one filtered collection (see :func:`plan_catch_up`)."""

    send: set[str] = field(default_factory=set)
    drop: set[str] = field(default_factory=set)


def plan_catch_up(
    *,
    now_members: set[str],
    before_members: set[str] | None,
    changed_by_others: set[str],
    changed_by_anyone: set[str],
) -> CatchUpPlan:
    """The records to list and to drop in a catch-up of one filtered collection.

    Args:
        now_members: records the selection holds now (resolved at the relay's clock now).
        before_members: records the selection resolved at the previous catch-up's time holds
            on today's values, or None if the replica never synced with this selection (then
            it drops what is not listed by itself).
        changed_by_others: records changed since the cursor by other replicas.
        changed_by_anyone: records changed since the cursor by anyone (the replica too).

    A record unchanged since the cursor has the values it had then, so ``before_members``
    is exactly what the replica was given among those; a changed one may have left.
    """
    plan = CatchUpPlan()
    if before_members is None:
        plan.send = set(now_members)
        return plan
    plan.send = (changed_by_others & now_members) | (now_members - before_members)
    plan.drop = (changed_by_anyone | before_members) - now_members
    return plan
