"""Subscriptions: wire form, selections, the relay's field index agrees with ``matches``, and
the catch-up plan leaves a replica holding exactly what it keeps."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import InvalidQuery
from crdt_sync.query import And, Claim, Eq, In, Or, Range, field, matches, resolve
from crdt_sync.subscriptions import (
    MAX_INDEXED_TEXT,
    Selection,
    Subscription,
    fingerprint,
    index_sql,
    indexed_values,
    normalize,
    plan_catch_up,
    subscriptions_from_wire,
    subscriptions_to_wire,
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
leaves = st.one_of(
    st.builds(Eq, st.sampled_from(FIELDS), scalars),
    st.builds(In, st.sampled_from(FIELDS), st.lists(scalars, max_size=4).map(tuple)),
    st.builds(
        Range,
        st.sampled_from(FIELDS),
        st.one_of(st.none(), scalars),
        st.one_of(st.none(), scalars),
        st.booleans(),
        st.booleans(),
    ),
)
filters = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda p: And(tuple(p))),
        st.lists(inner, max_size=3).map(lambda p: Or(tuple(p))),
    ),
    max_leaves=8,
)

NOW = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)


def test_wire_round_trip() -> None:
    subs = normalize(
        [
            "contacts",
            Subscription("jobs", ids=["job-1", "job-2"]),
            Subscription("appointments", where=field("date").window(0, 3, tz="Europe/Paris")),
            Subscription("tasks", where={"assigned_to": "amy", "status": ["open", "held"]}),
        ]
    )
    assert subscriptions_from_wire(subscriptions_to_wire(subs)) == subs
    assert subs[0] == Subscription("contacts") and subs[0].whole


@pytest.mark.parametrize(
    "bad",
    [
        "jobs",
        [["jobs"]],
        [["", None, None]],
        [["jobs", None, "job-1"]],
        [["jobs", None, [1]]],
        [["jobs", ["nope", 1], None]],
        [["jobs", ["window", "date", 3, 0, "UTC", "date"], None]],
    ],
)
def test_malformed_subscriptions_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidQuery):
        subscriptions_from_wire(bad)


def test_ids_must_be_a_list() -> None:
    with pytest.raises(InvalidQuery, match="list of record ids"):
        Subscription("jobs", ids="job-1")


def test_fingerprint_changes_with_what_is_kept() -> None:
    a = normalize(["jobs", Subscription("appointments", where=field("date").window(0, 3))])
    b = normalize([Subscription("appointments", where=field("date").window(0, 3)), "jobs"])
    c = normalize(["jobs", Subscription("appointments", where=field("date").window(0, 4))])
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert fingerprint(a) != fingerprint(a, {"jobs": Eq("owner", Claim("sub"))})


def test_selection_union_scope_and_window() -> None:
    subs = [
        Subscription("jobs", ids=["j1"]),
        Subscription("jobs", where=field("date").window(0, 1, tz="UTC")),
        Subscription("other"),
    ]
    sel = Selection.of("jobs", subs, scope=Eq("owner", Claim("sub")))
    assert sel.filtered and sel.timed
    now = sel.resolve(NOW, {"sub": "amy"})
    assert now.keeps("j1", {"owner": "amy"})
    assert not now.keeps("j1", {"owner": "bob"})  # the grant wins over ids
    assert now.keeps("j2", {"owner": "amy", "date": "2026-12-03"})
    assert not now.keeps("j2", {"owner": "amy", "date": "2026-12-04"})
    everything = Selection.of("other", subs)
    assert everything.everything and not everything.filtered
    with pytest.raises(InvalidQuery, match="claim"):
        sel.resolve(NOW, {})


def test_indexed_values() -> None:
    rows = indexed_values(
        {
            "a": True,
            "b": 2,
            "c": 1.5,
            "d": "x",
            "e": None,
            "f": [1],
            "g": {"x": 1},
            "h": "y" * (MAX_INDEXED_TEXT + 1),
            "i": 2**70,
        }
    )
    assert rows == [("a", 1), ("b", 2), ("c", 1.5), ("d", "x")]


def _index_db(docs: list[dict[str, Any]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE idx (coll TEXT, field TEXT, value, record_id TEXT)")
    db.execute("CREATE INDEX idx_v ON idx (coll, field, value)")
    db.execute("CREATE TABLE recs (coll TEXT, record_id TEXT)")
    for n, doc in enumerate(docs):
        db.execute("INSERT INTO recs VALUES ('c', ?)", (f"r{n}",))
        db.executemany(
            "INSERT INTO idx VALUES ('c', ?, ?, ?)",
            [(name, value, f"r{n}") for name, value in indexed_values(doc)],
        )
    return db


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=8), filters)
def test_index_sql_agrees_with_matches(docs: list[dict[str, Any]], f: Any) -> None:
    db = _index_db(docs)
    sql, params = index_sql(
        f,
        table="idx",
        scope=[("coll", "c")],
        all_records="SELECT record_id FROM recs WHERE coll = ?",
    )
    got = {r for (r,) in db.execute(sql, params) if r is not None}
    want = {f"r{n}" for n, doc in enumerate(docs) if matches(f, doc)}
    assert got == want


def test_index_sql_uses_the_index() -> None:
    db = _index_db([{"date": "2026-12-02", "status": "open"}])
    f = resolve(field("date").window(0, 3) & field("status").eq("open"), now=NOW)
    sql, params = index_sql(
        f, table="idx", scope=[("coll", "c")], all_records="SELECT record_id FROM recs"
    )
    plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX idx_v" in plan or "USING COVERING INDEX idx_v" in plan
    assert "SCAN idx" not in plan.replace("SCAN idx_v", "")


keys = st.sets(st.sampled_from([f"r{i}" for i in range(12)]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=12, max_size=12),
    st.lists(st.sampled_from(["none", "others", "self"]), min_size=12, max_size=12),
    st.integers(0, 5),
)
def test_plan_leaves_the_replica_holding_exactly_the_selection(
    days: list[tuple[int, int]], who: list[str], elapsed: int
) -> None:
    """Record i has a date (day offsets) before and after the cursor; changed by nobody, by
    others, or by this replica. The replica held what the window kept at its last sync, plus
    what it edited itself. After the plan it holds exactly what the window keeps now."""
    window = Selection.of("c", [Subscription("c", where=field("d").window(0, 2))])
    t0, t1 = NOW, NOW + dt.timedelta(days=elapsed)
    before_sel, now_sel = window.resolve(t0, {}), window.resolve(t1, {})
    day = lambda n: (NOW.date() + dt.timedelta(days=n)).isoformat()  # noqa: E731
    old, new, changed_others, changed_any, held = {}, {}, set(), set(), set()
    for i, ((d_old, d_new), w) in enumerate(zip(days, who, strict=True)):
        key = f"r{i}"
        old[key] = {"d": day(d_old)}
        new[key] = {"d": day(d_new)} if w != "none" else old[key]
        if w != "none":
            changed_any.add(key)
        if w == "others":
            changed_others.add(key)
        if before_sel.keeps(key, old[key]) or w == "self":
            held.add(key)
    now_members = {k for k in new if now_sel.keeps(k, new[k])}
    before_members = {k for k in new if before_sel.keeps(k, new[k])}
    plan = plan_catch_up(
        now_members=now_members,
        before_members=before_members,
        changed_by_others=changed_others,
        changed_by_anyone=changed_any,
    )
    assert (held - plan.drop) | plan.send == now_members
    assert changed_others & now_members <= plan.send  # fresh values for what others changed
    assert not plan.send & plan.drop


def test_plan_from_scratch_lists_every_member() -> None:
    plan = plan_catch_up(
        now_members={"a", "b"},
        before_members=None,
        changed_by_others=set(),
        changed_by_anyone={"c"},
    )
    assert plan.send == {"a", "b"} and not plan.drop


def test_range_on_text_bounds_excludes_numbers() -> None:
    db = _index_db([{"d": 5}, {"d": "2026"}])
    sql, params = index_sql(
        Range("d", None, "3"), table="idx", scope=[("coll", "c")], all_records="SELECT 1"
    )
    assert {r for (r,) in db.execute(sql, params)} == {"r1"}
