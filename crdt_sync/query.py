"""Filters on a record's top-level fields: built in Python, sent on the wire, run as SQL.

One filter model serves the local store's queries, the relay's subscriptions and record-level
grants. A filter is a tree of :class:`Eq`, :class:`In`, :class:`Range`, :class:`And`,
:class:`Or`, and two placeholders resolved just before use:

- :class:`Window`: a rolling date window relative to now ("from today to today + 3 days" in
  a time zone), resolved by :func:`resolve` into a :class:`Range` at each evaluation;
- :class:`Claim`: a value taken from the caller's token (``assigned_to = <the token's user>``),
  bound by :func:`resolve` too.

Build filters with :func:`field`::

    open_soon = field("status").is_in(["open", "scheduled"]) & field("date").window(0, 3)

A filter evaluates in Python (:func:`matches`) and compiles to SQL (:func:`to_sql`) with the
same meaning, SQLite's: numbers compare with numbers (``True``/``False`` are 1 and 0),
strings with strings (by code point), a missing field or ``None`` matches no comparison, and
lists or maps match nothing. Dates are ISO-8601 strings (``"2026-12-02"`` or
``"2026-12-02T09:30"``, local to the window's time zone), which compare correctly as strings,
or Unix times in seconds or milliseconds.

Pure: no I/O. :func:`to_wire` / :func:`from_wire` give the plain-list form carried in msgpack
frames and tokens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidQuery

__all__ = [
    "And",
    "Claim",
    "Eq",
    "Filter",
    "In",
    "Or",
    "Query",
    "Range",
    "Scalar",
    "Window",
    "field",
    "from_wire",
    "json_column",
    "matches",
    "parse_where",
    "resolve",
    "to_sql",
    "to_wire",
]

Scalar: TypeAlias = "str | int | float | bool"
"""A value a filter compares with."""

WindowUnit = Literal["date", "datetime", "epoch_s", "epoch_ms"]

#: The most values an ``In`` filter may list (SQLite's bound-parameter limit is far above).
MAX_IN_VALUES = 1000
#: The deepest nesting of And/Or a filter may have.
MAX_DEPTH = 16


class _Combinable:
    """``a & b`` is :class:`And`, ``a | b`` is :class:`Or` (nested ones flattened)."""

    __slots__ = ()

    def __and__(self, other: Filter) -> And:
        return And((*_flatten(self, And), *_flatten(other, And)))  # type: ignore[arg-type]

    def __or__(self, other: Filter) -> Or:
        return Or((*_flatten(self, Or), *_flatten(other, Or)))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Claim:
    """A value taken from the token's claims when the filter is resolved (e.g. ``"sub"``)."""

    name: str


Operand: TypeAlias = "Scalar | Claim"


@dataclass(frozen=True, slots=True)
class Eq(_Combinable):
    """``field == value``."""

    field: str
    value: Operand


@dataclass(frozen=True, slots=True)
class In(_Combinable):
    """``field`` equals one of ``values``."""

    field: str
    values: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class Range(_Combinable):
    """``low <(=) field <(=) high``; a ``None`` bound is open."""

    field: str
    low: Operand | None = None
    high: Operand | None = None
    low_inclusive: bool = True
    high_inclusive: bool = False


@dataclass(frozen=True, slots=True)
class Window(_Combinable):
    """A rolling window of days relative to today in ``tz``: from the start of day
    ``today + start`` to the end of day ``today + end`` (both included).

    ``unit`` says how the field holds its time: ``"date"`` (``"2026-12-02"``), ``"datetime"``
    (``"2026-12-02T09:30[:00]"``, local time in ``tz``), ``"epoch_s"`` or ``"epoch_ms"``.
    """

    field: str
    start: int
    end: int
    tz: str = "UTC"
    unit: WindowUnit = "date"


@dataclass(frozen=True, slots=True)
class And(_Combinable):
    """Every part matches."""

    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or(_Combinable):
    """At least one part matches."""

    parts: tuple[Filter, ...]


Filter: TypeAlias = "Eq | In | Range | Window | And | Or"


def _flatten(f: Filter, kind: type[And] | type[Or]) -> tuple[Filter, ...]:
    return f.parts if isinstance(f, kind) else (f,)


class FieldRef:
    """A top-level field, to build filters on: ``field("date").between("2026-12-01", ...)``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = check_field(name)

    def eq(self, value: Operand) -> Eq:
        return Eq(self.name, _operand(value))

    def is_in(self, values: Iterable[Operand]) -> In:
        return In(self.name, tuple(_operand(v) for v in values))

    def gt(self, value: Operand) -> Range:
        return Range(self.name, low=_operand(value), low_inclusive=False)

    def ge(self, value: Operand) -> Range:
        return Range(self.name, low=_operand(value))

    def lt(self, value: Operand) -> Range:
        return Range(self.name, high=_operand(value))

    def le(self, value: Operand) -> Range:
        return Range(self.name, high=_operand(value), high_inclusive=True)

    def between(self, low: Operand, high: Operand) -> Range:
        """``low <= field <= high``."""
        return Range(self.name, _operand(low), _operand(high), high_inclusive=True)

    def window(self, start: int, end: int, *, tz: str = "UTC", unit: WindowUnit = "date") -> Window:
        """Days ``today + start`` to ``today + end`` in ``tz``, re-evaluated at each use."""
        return _check_window(Window(self.name, start, end, tz, unit))


def field(name: str) -> FieldRef:
    """A top-level field of a record, to build a filter on."""
    return FieldRef(name)


@dataclass(frozen=True, slots=True)
class Query:
    """A query on one collection: a filter, an order (``"-date"`` is descending), a page."""

    collection: str
    where: Filter | None = None
    order_by: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.where is not None:
            check_filter(self.where)
        for name in self.order_by:
            check_field(name.removeprefix("-"))
        if self.limit is not None and self.limit < 0:
            raise InvalidQuery(f"limit must be >= 0, got {self.limit}")
        if self.offset < 0:
            raise InvalidQuery(f"offset must be >= 0, got {self.offset}")

    @property
    def ordering(self) -> list[tuple[str, bool]]:
        """``(field, descending)`` pairs."""
        return [(name.removeprefix("-"), name.startswith("-")) for name in self.order_by]


def parse_where(where: Filter | Mapping[str, Any] | None) -> Filter | None:
    """A filter from a filter, or from ``{"field": value}`` (equality on each, all of them;
    a list or tuple value means "one of")."""
    if where is None or isinstance(where, Eq | In | Range | Window | And | Or):
        return check_filter(where) if where is not None else None
    if not isinstance(where, Mapping):
        raise InvalidQuery(f"where must be a filter or a mapping, got {type(where).__name__}")
    parts: list[Filter] = []
    for name, value in where.items():
        ref = field(name)
        parts.append(ref.is_in(value) if isinstance(value, list | tuple) else ref.eq(value))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


# ------------------------------------------------------------------------------ checks


def check_field(name: Any) -> str:
    """Return ``name`` if it can name a queryable field, else raise :class:`InvalidQuery`."""
    if not isinstance(name, str) or not name:
        raise InvalidQuery(f"a field name must be a non-empty string, got {name!r}")
    if '"' in name or "\\" in name or any(ord(c) < 0x20 for c in name):
        raise InvalidQuery(
            f"field {name!r}: quotes, backslashes and control characters cannot be queried"
        )
    return name


def _operand(value: Any) -> Operand:
    if isinstance(value, Claim):
        if not isinstance(value.name, str) or not value.name:
            raise InvalidQuery(f"a claim name must be a non-empty string, got {value.name!r}")
        return value
    if isinstance(value, bool | int | float | str):
        if isinstance(value, float) and value != value:
            raise InvalidQuery("NaN cannot be compared")
        return value
    raise InvalidQuery(f"cannot compare a field with a {type(value).__name__} ({value!r})")


def _check_window(w: Window) -> Window:
    check_field(w.field)
    if not isinstance(w.start, int) or not isinstance(w.end, int) or w.start > w.end:
        raise InvalidQuery(f"window on {w.field!r}: need integer days start <= end")
    if w.unit not in ("date", "datetime", "epoch_s", "epoch_ms"):
        raise InvalidQuery(f"window on {w.field!r}: unknown unit {w.unit!r}")
    _zone(w.tz)
    return w


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidQuery(f"unknown time zone {name!r}") from exc


def check_filter(f: Filter, depth: int = 0) -> Filter:
    """Return ``f`` if it is well formed, else raise :class:`InvalidQuery`."""
    if depth > MAX_DEPTH:
        raise InvalidQuery(f"a filter may nest And/Or at most {MAX_DEPTH} deep")
    if isinstance(f, Eq):
        check_field(f.field)
        _operand(f.value)
    elif isinstance(f, In):
        check_field(f.field)
        if len(f.values) > MAX_IN_VALUES:
            raise InvalidQuery(f"in on {f.field!r}: at most {MAX_IN_VALUES} values")
        for v in f.values:
            _operand(v)
    elif isinstance(f, Range):
        check_field(f.field)
        for bound in (f.low, f.high):
            if bound is not None:
                _operand(bound)
    elif isinstance(f, Window):
        _check_window(f)
    elif isinstance(f, And | Or):
        for part in f.parts:
            check_filter(part, depth + 1)
    else:
        raise InvalidQuery(f"not a filter: {f!r}")
    return f


# ------------------------------------------------------------------------------ resolving


def resolve(
    f: Filter, *, now: dt.datetime | None = None, claims: Mapping[str, Any] | None = None
) -> Filter:
    """``f`` with its windows turned into ranges at ``now`` (default: the current time) and
    its claims replaced by their values in ``claims``.

    Raises:
        InvalidQuery: a claim is missing from ``claims``, or its value cannot be compared.
    """
    moment = now or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        raise InvalidQuery("now must be timezone-aware")
    return _resolve(f, moment, claims or {})


def _resolve(f: Filter, now: dt.datetime, claims: Mapping[str, Any]) -> Filter:
    if isinstance(f, Eq):
        return Eq(f.field, _bind(f.value, claims))
    if isinstance(f, In):
        return In(f.field, tuple(_bind(v, claims) for v in f.values))
    if isinstance(f, Range):
        return Range(
            f.field,
            None if f.low is None else _bind(f.low, claims),
            None if f.high is None else _bind(f.high, claims),
            f.low_inclusive,
            f.high_inclusive,
        )
    if isinstance(f, Window):
        return window_range(f, now)
    return type(f)(tuple(_resolve(p, now, claims) for p in f.parts))


def _bind(value: Operand, claims: Mapping[str, Any]) -> Scalar:
    if not isinstance(value, Claim):
        return value
    if value.name not in claims:
        raise InvalidQuery(f"the token has no {value.name!r} claim, which the filter needs")
    bound = _operand(claims[value.name])
    assert not isinstance(bound, Claim)
    return bound


def window_range(w: Window, now: dt.datetime) -> Range:
    """The range ``w`` covers at ``now``: ``[start of day today+start, start of day
    today+end+1)`` in the window's time zone, in the field's unit."""
    zone = _zone(w.tz)
    today = now.astimezone(zone).date()
    first = today + dt.timedelta(days=w.start)
    after = today + dt.timedelta(days=w.end + 1)
    if w.unit in ("date", "datetime"):
        # "2026-12-05T23:59" < "2026-12-06": ISO strings order as the times they name.
        return Range(w.field, first.isoformat(), after.isoformat())
    lo = dt.datetime.combine(first, dt.time(), zone).timestamp()
    hi = dt.datetime.combine(after, dt.time(), zone).timestamp()
    scale = 1000 if w.unit == "epoch_ms" else 1
    return Range(w.field, int(lo * scale), int(hi * scale))


# ------------------------------------------------------------------------------ evaluating


def matches(f: Filter, fields: Mapping[str, Any]) -> bool:
    """Whether a record with these top-level ``fields`` matches the resolved filter ``f``.

    Same answers as :func:`to_sql` on SQLite (see the module docstring for the rules).

    Raises:
        InvalidQuery: ``f`` still holds a window or a claim (call :func:`resolve` first).
    """
    if isinstance(f, And):
        return all(matches(p, fields) for p in f.parts)
    if isinstance(f, Or):
        return any(matches(p, fields) for p in f.parts)
    if isinstance(f, Window):
        raise InvalidQuery("resolve() the filter before evaluating it: it holds a window")
    value = _comparable(fields.get(f.field))
    if value is None:
        return False
    if isinstance(f, Eq):
        return _compare(value, _resolved(f.value)) == 0
    if isinstance(f, In):
        return any(_compare(value, _resolved(v)) == 0 for v in f.values)
    if f.low is not None:
        c = _compare(value, _resolved(f.low))
        if c is None or c < 0 or (c == 0 and not f.low_inclusive):
            return False
    if f.high is not None:
        c = _compare(value, _resolved(f.high))
        if c is None or c > 0 or (c == 0 and not f.high_inclusive):
            return False
    return True


def _resolved(value: Operand) -> Scalar:
    if isinstance(value, Claim):
        raise InvalidQuery(f"resolve() the filter before evaluating it: claim {value.name!r}")
    return value


def _comparable(value: Any) -> int | float | str | None:
    """A field value as SQLite compares it (None: matches no comparison)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return None


def _compare(a: int | float | str, b: Scalar) -> int | None:
    """-1/0/1 as SQLite orders two values of one class; None across classes (never equal,
    and a range over numbers never holds a string, nor the other way)."""
    b2 = int(b) if isinstance(b, bool) else b
    if isinstance(a, str) != isinstance(b2, str):
        return None
    if isinstance(a, str):
        assert isinstance(b2, str)
        ab, bb = a.encode("utf-8"), b2.encode("utf-8")  # SQLite's BINARY collation
        return (ab > bb) - (ab < bb)
    assert not isinstance(b2, str)
    return (a > b2) - (a < b2)


def to_sql(f: Filter, column: Callable[[str], str]) -> tuple[str, list[Any]]:
    """``f`` (resolved) as an SQL boolean expression with ``?`` parameters.

    ``column(name)`` gives the SQL value of a field, which must be NULL unless the field holds
    a scalar (text, integer, real; booleans as 1/0), e.g. :func:`json_column`. Then SQLite's
    own ordering (NULL < numbers < text) keeps comparisons within one class, as
    :func:`matches` does, with no type check that would stop an index on ``column(name)``
    from serving the filter.
    """
    params: list[Any] = []
    sql = _sql(f, column, params)
    return sql, params


def json_column(document: str, *, scalars_only: bool = False) -> Callable[[str], str]:
    """The ``column`` argument of :func:`to_sql` for fields kept as one JSON object in the
    SQL expression ``document``. With ``scalars_only`` (the object never holds arrays or
    objects) the value is a bare ``json_extract``, which an index on the same expression
    serves; else a ``json_type`` guard turns arrays and objects into NULL."""

    def column(name: str) -> str:
        path = f"'$.\"{check_field(name)}\"'"
        value = f"json_extract({document}, {path})"
        if scalars_only:
            return value
        return (
            f"(CASE WHEN json_type({document}, {path}) IN"
            f" ('text', 'integer', 'real', 'true', 'false') THEN {value} END)"
        )

    return column


def _sql(f: Filter, column: Callable[[str], str], params: list[Any]) -> str:
    if isinstance(f, And | Or):
        if not f.parts:
            return "1" if isinstance(f, And) else "0"
        joiner = " AND " if isinstance(f, And) else " OR "
        return "(" + joiner.join(_sql(p, column, params) for p in f.parts) + ")"
    if isinstance(f, Window):
        raise InvalidQuery("resolve() the filter before compiling it: it holds a window")
    col = column(f.field)
    if isinstance(f, Eq):
        params.append(_sql_value(f.value))
        return f"{col} = ?"
    if isinstance(f, In):
        if not f.values:
            return "0"
        params.extend(_sql_value(v) for v in f.values)
        return f"{col} IN ({', '.join('?' * len(f.values))})"
    low = None if f.low is None else _sql_value(f.low)
    high = None if f.high is None else _sql_value(f.high)
    terms = []
    if low is not None:
        params.append(low)
        terms.append(f"{col} {'>=' if f.low_inclusive else '>'} ?")
    if high is not None:
        params.append(high)
        terms.append(f"{col} {'<=' if f.high_inclusive else '<'} ?")
    # Numbers sort before every text, and '' is the least text: a text lower bound already
    # excludes numbers, a numeric upper bound already excludes text; else say so.
    if (high is not None and isinstance(high, str)) and not isinstance(low, str):
        terms.append(f"{col} >= ''")
    if (low is not None and not isinstance(low, str)) and (high is None or isinstance(high, str)):
        terms.append(f"{col} < ''")
    if not terms:
        terms.append(f"{col} IS NOT NULL")
    return "(" + " AND ".join(terms) + ")"


def _sql_value(value: Operand) -> int | float | str:
    v = _resolved(value)
    return int(v) if isinstance(v, bool) else v


# ------------------------------------------------------------------------------ wire form


def to_wire(f: Filter) -> list[Any]:
    """The plain-list form of ``f`` (msgpack/JSON-able); :func:`from_wire` reads it back."""
    if isinstance(f, Eq):
        return ["eq", f.field, _wire_value(f.value)]
    if isinstance(f, In):
        return ["in", f.field, [_wire_value(v) for v in f.values]]
    if isinstance(f, Range):
        return [
            "range",
            f.field,
            None if f.low is None else _wire_value(f.low),
            None if f.high is None else _wire_value(f.high),
            f.low_inclusive,
            f.high_inclusive,
        ]
    if isinstance(f, Window):
        return ["window", f.field, f.start, f.end, f.tz, f.unit]
    return ["and" if isinstance(f, And) else "or", [to_wire(p) for p in f.parts]]


def _wire_value(value: Operand) -> Any:
    return {"claim": value.name} if isinstance(value, Claim) else value


def from_wire(data: Any, depth: int = 0) -> Filter:
    """Read a filter's plain-list form (from a frame or a token).

    Raises:
        InvalidQuery: ``data`` is not a well-formed filter (the message says where).
    """
    if depth > MAX_DEPTH:
        raise InvalidQuery(f"a filter may nest And/Or at most {MAX_DEPTH} deep")
    if not isinstance(data, list | tuple) or not data or not isinstance(data[0], str):
        raise InvalidQuery(f"a filter is a list starting with its operator, got {data!r:.80}")
    op, args = data[0], list(data[1:])
    try:
        if op == "eq" and len(args) == 2:
            return check_filter(Eq(args[0], _read_value(args[1])))
        if op == "in" and len(args) == 2 and isinstance(args[1], list | tuple):
            return check_filter(In(args[0], tuple(_read_value(v) for v in args[1])))
        if op == "range" and len(args) == 5:
            low = None if args[1] is None else _read_value(args[1])
            high = None if args[2] is None else _read_value(args[2])
            if not isinstance(args[3], bool) or not isinstance(args[4], bool):
                raise InvalidQuery("range: the inclusive flags must be booleans")
            return check_filter(Range(args[0], low, high, args[3], args[4]))
        if op == "window" and len(args) == 5:
            return _check_window(Window(*args))
        if op in ("and", "or") and len(args) == 1 and isinstance(args[0], list | tuple):
            parts = tuple(from_wire(p, depth + 1) for p in args[0])
            return And(parts) if op == "and" else Or(parts)
    except TypeError as exc:
        raise InvalidQuery(f"malformed {op!r} filter: {exc}") from exc
    raise InvalidQuery(f"unknown filter {op!r} with {len(args)} arguments")


def _read_value(value: Any) -> Operand:
    if isinstance(value, dict):
        if set(value) != {"claim"}:
            raise InvalidQuery(
                f"a filter value may be a scalar or {{'claim': name}}, got {value!r:.80}"
            )
        return _operand(Claim(value["claim"]))
    return _operand(value)


def fields_of(f: Filter) -> Sequence[str]:
    """The fields ``f`` reads, each once, in order of appearance."""
    seen: dict[str, None] = {}

    def walk(g: Filter) -> None:
        if isinstance(g, And | Or):
            for p in g.parts:
                walk(p)
        else:
            seen[g.field] = None

    walk(f)
    return list(seen)
