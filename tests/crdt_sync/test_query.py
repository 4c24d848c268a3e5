"""The filter model: Python evaluation agrees with SQLite, wire form round-trips, windows and
claims resolve, bad filters are refused with a clear error."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import InvalidQuery
from crdt_sync.query import (
    And,
    Claim,
    Eq,
    Filter,
    In,
    Or,
    Query,
    Range,
    Window,
    field,
    from_wire,
    json_column,
    matches,
    parse_where,
    resolve,
    to_sql,
    to_wire,
)

FIELDS = ["a", "b", "c"]
scalars = st.one_of(
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 1)),
    st.sampled_from(["", "a", "b", "B", "é", "ab", "2026-12-02", "2026-12-02T10:00"]),
)
values = st.one_of(scalars, st.none(), st.just([1, 2]), st.just({"x": 1}))
records = st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, values))


def leaf() -> st.SearchStrategy[Filter]:
    names = st.sampled_from(FIELDS)
    return st.one_of(
        st.builds(Eq, names, scalars),
        st.builds(In, names, st.lists(scalars, max_size=4).map(tuple)),
        st.builds(
            Range,
            names,
            st.one_of(st.none(), scalars),
            st.one_of(st.none(), scalars),
            st.booleans(),
            st.booleans(),
        ),
    )


filters = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda p: And(tuple(p))),
        st.lists(inner, max_size=3).map(lambda p: Or(tuple(p))),
    ),
    max_leaves=8,
)


column = json_column("fields")
bare_column = json_column("fields", scalars_only=True)


@pytest.fixture(scope="module")
def db() -> sqlite3.Connection:
    return sqlite3.connect(":memory:")


@settings(max_examples=400, deadline=None)
@given(f=filters, rows=st.lists(records, max_size=6))
def test_python_and_sqlite_agree(
    db: sqlite3.Connection, f: Filter, rows: list[dict[str, Any]]
) -> None:
    sql, params = to_sql(f, column)
    bare_sql, bare_params = to_sql(f, bare_column)
    for row in rows:
        # Where the JSON holds only scalars (as the store's projection does), the bare
        # json_extract the indexes are on gives the same answers.
        scalars = {k: v for k, v in row.items() if not isinstance(v, list | dict)}
        (found,) = db.execute(
            f"SELECT ({bare_sql}) FROM (SELECT ? AS fields)", [*bare_params, json.dumps(scalars)]
        ).fetchone()
        assert bool(found) == matches(f, scalars), (bare_sql, bare_params, scalars)
        (found,) = db.execute(
            f"SELECT ({sql}) FROM (SELECT ? AS fields)", [*params, json.dumps(row)]
        ).fetchone()
        assert bool(found) == matches(f, row), (sql, params, row)


@settings(max_examples=200, deadline=None)
@given(f=filters)
def test_wire_form_round_trips(f: Filter) -> None:
    assert from_wire(json.loads(json.dumps(to_wire(f)))) == f


def test_builders_and_operators() -> None:
    f = field("status").is_in(["open", "held"]) & field("n").gt(2) & field("n").le(5)
    assert isinstance(f, And) and len(f.parts) == 3  # flattened
    assert matches(f, {"status": "open", "n": 5})
    assert not matches(f, {"status": "open", "n": 2})
    g = field("a").eq(1) | field("b").eq(2) | field("c").lt(0)
    assert isinstance(g, Or) and len(g.parts) == 3
    assert matches(g, {"c": -1}) and not matches(g, {"a": 2})
    assert matches(field("d").between("2026-12-01", "2026-12-02"), {"d": "2026-12-02"})
    assert matches(field("x").ge(1), {"x": True})  # booleans compare as 0/1, as in SQLite
    assert not matches(field("x").eq("1"), {"x": 1})  # no cross-class equality
    assert not matches(field("x").eq(None if False else 0), {})  # a missing field matches nothing


def test_parse_where_mapping() -> None:
    assert parse_where({"status": "open"}) == Eq("status", "open")
    assert parse_where({"s": ["a", "b"], "n": 1}) == And((In("s", ("a", "b")), Eq("n", 1)))
    assert parse_where({}) is None and parse_where(None) is None
    with pytest.raises(InvalidQuery, match="mapping"):
        parse_where(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["nope", "a", 1], "unknown filter"),
        ("eq", "list starting"),
        (["eq", "", 1], "non-empty"),
        (["eq", 'a"b', 1], "quotes"),
        (["eq", "a", [1]], "cannot compare"),
        (["eq", "a", {"x": 1}], "claim"),
        (["range", "a", 1, 2, "yes", True], "booleans"),
        (["window", "d", 3, 0, "UTC", "date"], "start <= end"),
        (["window", "d", 0, 3, "Mars/Olympus", "date"], "time zone"),
        (["window", "d", 0, 3, "UTC", "weeks"], "unit"),
        (["in", "a", list(range(2000))], "at most"),
        (["and", [["and", [["and", [["eq", "a", 1]]]]]]] * 1, None),
    ],
)
def test_malformed_filters_are_refused(bad: Any, message: str | None) -> None:
    if message is None:
        from_wire(bad)  # well formed
        return
    with pytest.raises(InvalidQuery, match=message):
        from_wire(bad)


def test_nesting_is_bounded() -> None:
    deep: Any = ["eq", "a", 1]
    for _ in range(40):
        deep = ["and", [deep]]
    with pytest.raises(InvalidQuery, match="deep"):
        from_wire(deep)


def test_window_resolves_in_its_time_zone() -> None:
    w = field("date").window(0, 3, tz="Europe/Paris")
    # 23:30 UTC on Dec 1 is already Dec 2 in Paris.
    now = dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.UTC)
    assert resolve(w, now=now) == Range("date", "2026-12-02", "2026-12-06")
    assert matches(resolve(w, now=now), {"date": "2026-12-05T23:59"})
    assert not matches(resolve(w, now=now), {"date": "2026-12-06"})
    assert not matches(resolve(w, now=now), {"date": "2026-12-01"})
    # The next day the window moves on.
    later = resolve(w, now=now + dt.timedelta(days=1))
    assert matches(later, {"date": "2026-12-06"}) and not matches(later, {"date": "2026-12-02"})


def test_window_in_epoch_units_spans_local_days_across_dst() -> None:
    w = Window("at", 0, 0, tz="Europe/Paris", unit="epoch_s")
    # 2026-03-29 is the spring-forward day in Paris: 23 hours long.
    now = dt.datetime(2026, 3, 29, 12, 0, tzinfo=dt.UTC)
    r = resolve(w, now=now)
    assert isinstance(r, Range) and isinstance(r.low, int) and isinstance(r.high, int)
    assert r.high - r.low == 23 * 3600
    ms = resolve(Window("at", -1, 1, tz="UTC", unit="epoch_ms"), now=now)
    assert isinstance(ms, Range) and ms.high - ms.low == 3 * 86_400_000  # type: ignore[operator]


def test_claims_bind_from_the_token() -> None:
    grant = field("assigned_to").eq(Claim("sub"))
    assert resolve(grant, claims={"sub": "tech-7"}) == Eq("assigned_to", "tech-7")
    assert from_wire(to_wire(grant)) == grant
    with pytest.raises(InvalidQuery, match="no 'sub' claim"):
        resolve(grant, claims={})
    with pytest.raises(InvalidQuery, match="resolve"):
        matches(grant, {"assigned_to": "tech-7"})
    with pytest.raises(InvalidQuery, match="cannot compare"):
        resolve(grant, claims={"sub": ["a"]})


def test_naive_now_is_refused() -> None:
    with pytest.raises(InvalidQuery, match="timezone-aware"):
        resolve(Eq("a", 1), now=dt.datetime(2026, 1, 1))


def test_query_checks_its_page_and_order() -> None:
    q = Query("jobs", where=Eq("a", 1), order_by=("-date", "id"), limit=5)
    assert q.ordering == [("date", True), ("id", False)]
    with pytest.raises(InvalidQuery):
        Query("jobs", limit=-1)
    with pytest.raises(InvalidQuery):
        Query("jobs", offset=-1)
    with pytest.raises(InvalidQuery):
        Query("jobs", order_by=('a"',))
