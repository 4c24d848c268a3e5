"""Local queries and full-text search read the projection, which always says what the
records' documents say: after local edits, remote updates, outbox reworks, and restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc

from crdt_sync.errors import InvalidQuery
from crdt_sync.query import Query, field, matches, parse_where, resolve
from crdt_sync.records.layout import read_fields
from crdt_sync.store.local_query import query_sql
from crdt_sync.store.sqlite import LocalStore, RemoteUpdate

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "v1"


async def _fill(
    store: LocalStore, rows: dict[str, dict[str, Any]], collection: str = "jobs"
) -> None:
    async with store.batch():
        for rid, fields in rows.items():
            async with store.edit(collection, rid) as rec:
                for k, v in fields.items():
                    rec[k] = v


JOBS = {
    "j1": {"status": "open", "date": "2026-12-02", "prio": 3, "title": "Boiler repair"},
    "j2": {"status": "done", "date": "2026-12-01", "prio": 1, "title": "Café machine"},
    "j3": {"status": "open", "date": "2026-12-05", "prio": 2, "title": "Roof leak"},
    "j4": {"status": "held", "date": "2026-12-09", "prio": 5, "title": "Boiler service"},
}


@pytest.mark.asyncio
async def test_filters_order_page_and_count(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "a.db", indexes={"jobs": ["date"]}) as store:
        await _fill(store, JOBS)
        ids = lambda records: [r.id for r in records]  # noqa: E731
        assert ids(await store.query("jobs", {"status": "open"})) == ["j1", "j3"]
        assert ids(await store.query("jobs", {"status": ["open", "held"]}, order_by="-date")) == [
            "j4",
            "j3",
            "j1",
        ]
        in_range = field("date").between("2026-12-02", "2026-12-05")
        assert ids(await store.query("jobs", in_range, order_by="date")) == ["j1", "j3"]
        either = field("prio").ge(5) | field("status").eq("done")
        assert ids(await store.query("jobs", either, order_by=["prio"])) == ["j2", "j4"]
        assert ids(await store.query("jobs", order_by="date", limit=2, offset=1)) == ["j1", "j3"]
        assert ids(await store.query("jobs", order_by="date", offset=3)) == ["j4"]
        assert await store.count("jobs") == 4
        assert await store.count("jobs", field("prio").gt(2)) == 2
        assert await store.count("other") == 0
        [j1] = await store.query("jobs", {"title": "Boiler repair"})
        assert dict(j1) == JOBS["j1"] and j1.pending and j1.state_vector == b""
        got = await store.get("jobs", "j1")
        assert dict(j1) == dict(got) and got.state_vector
        assert (j1.created_at, j1.updated_at) == (got.created_at, got.updated_at)
        with pytest.raises(InvalidQuery):
            await store.query("jobs", {"a": [[1]]})
        with pytest.raises(InvalidQuery):
            await store.query("jobs", order_by='x"')


@pytest.mark.asyncio
async def test_values_json_cannot_hold_read_back_exactly(tmp_path: Path) -> None:
    fields = {
        "blob": b"\x00\xff",
        "inf": math.inf,
        "nested": {"$bytes": "not bytes", "b": b"x", "list": [1, {"$k": None}]},
        "$top": "dollar field",
        "flag": True,
        "n": 2**53,
    }
    async with await LocalStore.open(tmp_path / "a.db") as store:
        await _fill(store, {"r": fields})
        [record] = await store.query("jobs")
        assert dict(record) == dict(await store.get("jobs", "r")) == fields
        assert [r.id for r in await store.query("jobs", {"flag": True})] == ["r"]
        assert [r.id for r in await store.query("jobs", {"$top": "dollar field"})] == ["r"]


@pytest.mark.asyncio
async def test_declared_indexes_serve_range_order_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with await LocalStore.open(path, indexes={"jobs": ["date", ("status", "date")]}):
        pass
    db = sqlite3.connect(path)
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {n for n in names if n.startswith("crdt_sync_ix:")} == {
        'crdt_sync_ix:["jobs", "date"]',
        'crdt_sync_ix:["jobs", "status", "date"]',
    }

    def plan(where: Any, order_by: tuple[str, ...]) -> str:
        q = Query("jobs", where, order_by, limit=50)
        sql, params = query_sql(q, resolve(where))
        return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params))

    # The statement the store runs for an indexed range with ORDER BY + LIMIT:
    shown = plan(field("date").ge("2026-12-02"), ("date",))
    assert 'USING INDEX crdt_sync_ix:["jobs", "date"]' in shown, shown
    assert "TEMP B-TREE" not in shown, shown  # the index gives the order: no sort
    shown = plan(field("status").eq("open") & field("date").lt("2027"), ("-date",))
    assert 'USING INDEX crdt_sync_ix:["jobs", "status", "date"]' in shown, shown
    assert "TEMP B-TREE" not in shown, shown
    db.close()
    # Declarations follow the app: an index no longer declared is dropped.
    async with await LocalStore.open(path, indexes={"jobs": ["prio"]}):
        pass
    db = sqlite3.connect(path)
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {n for n in names if n.startswith("crdt_sync_ix:")} == {'crdt_sync_ix:["jobs", "prio"]'}
    db.close()
    with pytest.raises(InvalidQuery, match="list of fields"):
        await LocalStore.open(path, indexes={"jobs": "date"})  # type: ignore[dict-item]


@pytest.mark.asyncio
async def test_full_text_search_folds_case_and_accents_and_ranks(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with await LocalStore.open(path, text_fields={"jobs": ["title", "notes"]}) as store:
        await _fill(store, JOBS)
        async with store.edit("jobs", "j3") as rec:
            rec.text("notes").insert(0, "Boiler boiler BOILER in the attic; water everywhere")
        hits = await store.search_text("jobs", "boiler")
        assert {h.record.id for h in hits} == {"j1", "j3", "j4"}
        assert [h.rank for h in hits] == sorted(h.rank for h in hits)  # best (lowest) first
        assert all("[Boiler]" in h.snippet for h in hits)
        await _fill(store, {"k1": {"title": "pump fan pump"}, "k2": {"title": "pump fan fan"}})
        assert [h.record.id for h in await store.search_text("jobs", "pump")] == ["k1", "k2"]
        assert [h.record.id for h in await store.search_text("jobs", "CAFE")] == ["j2"]
        assert [h.record.id for h in await store.search_text("jobs", "cafe mach")] == ["j2"]
        assert await store.search_text("jobs", "cafe mach", prefix=False) == []
        only_open = await store.search_text("jobs", "boiler", where={"status": "open"})
        assert {h.record.id for h in only_open} == {"j3", "j1"}
        # User text never reaches FTS5's syntax.
        for text in ['"', "AND OR NOT", "NEAR(a b)", "title:boiler", "*", "^x"]:
            await store.search_text("jobs", text)
        assert await store.search_text("jobs", "  ...  ") == []
        with pytest.raises(InvalidQuery, match="text_fields"):
            await store.search_text("contacts", "x")
        # An edit re-indexes the record in the same commit.
        async with store.edit("jobs", "j2") as rec:
            rec["title"] = "Espresso machine"
        assert await store.search_text("jobs", "cafe") == []
        assert [h.record.id for h in await store.search_text("jobs", "espresso")] == ["j2"]
    # Declaring other text fields rebuilds the index from the projection.
    async with await LocalStore.open(path, text_fields={"jobs": ["status"]}) as store:
        assert [h.record.id for h in await store.search_text("jobs", "held")] == ["j4"]
        assert await store.search_text("jobs", "boiler") == []
    async with await LocalStore.open(path) as store:
        with pytest.raises(InvalidQuery):
            await store.search_text("jobs", "held")


@pytest.mark.asyncio
async def test_rolling_window_follows_the_store_clock(tmp_path: Path) -> None:
    now = [dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.UTC).timestamp()]
    async with await LocalStore.open(tmp_path / "a.db", time_source=lambda: now[0]) as store:
        await _fill(store, JOBS)
        soon = field("date").window(0, 3, tz="Europe/Paris")  # Paris: Dec 2 .. Dec 5
        assert [r.id for r in await store.query("jobs", soon)] == ["j1", "j3"]
        now[0] += 5 * 86400  # Dec 7 .. Dec 10
        assert [r.id for r in await store.query("jobs", soon)] == ["j4"]


@pytest.mark.asyncio
async def test_remote_updates_are_queryable_at_once(tmp_path: Path) -> None:
    async with (
        await LocalStore.open(tmp_path / "a.db") as office,
        await LocalStore.open(tmp_path / "b.db", text_fields={"jobs": ["title"]}) as tech,
    ):
        await _fill(office, JOBS)
        updates = [
            RemoteUpdate("jobs", rid, await office.encode_state("jobs", rid)) for rid in JOBS
        ]
        await tech.apply_remote(updates)
        assert [r.id for r in await tech.query("jobs", {"status": "open"})] == ["j1", "j3"]
        assert not any(r.pending for r in await tech.query("jobs"))
        assert [h.record.id for h in await tech.search_text("jobs", "roof")] == ["j3"]
        # A record changed remotely while it is in memory and while it is not.
        async with office.edit("jobs", "j3") as rec:
            rec["status"] = "done"
        sv = await tech.state_vector("jobs", "j3")
        await tech.apply_remote(
            [RemoteUpdate("jobs", "j3", await office.encode_state("jobs", "j3", sv))]
        )
        assert await tech.count("jobs", {"status": "open"}) == 1


@pytest.mark.asyncio
async def test_projection_survives_a_restart_before_the_scan(tmp_path: Path) -> None:
    """Remote updates committed but not scanned yet (the process stops first): the next open
    brings their projection up to date before any query answers."""
    async with await LocalStore.open(tmp_path / "a.db") as office:
        await _fill(office, JOBS)
        updates = [
            RemoteUpdate("jobs", rid, await office.encode_state("jobs", rid)) for rid in JOBS
        ]
    tech = await LocalStore.open(tmp_path / "b.db")
    tech._conflict_scan.idle = 3600  # the background scan does not run in this test
    await tech.apply_remote(updates)
    await tech.close()
    db = sqlite3.connect(tmp_path / "b.db")
    assert db.execute("SELECT COUNT(*) FROM projection").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM conflict_scan").fetchone()[0] == 4
    db.close()
    async with await LocalStore.open(tmp_path / "b.db") as tech:
        assert await tech.count("jobs", {"status": "open"}) == 2


@pytest.mark.asyncio
async def test_discard_reworks_the_projection(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "a.db") as store:
        await _fill(store, {"j": {"status": "open"}})
        await store.outbox.acknowledge([1])
        async with store.edit("jobs", "j") as rec:
            rec["status"] = "bogus"
        [entry] = await store.outbox.pending()
        await store.outbox.mark_error(entry.seq, "invalid", "status")
        await store.outbox.discard(entry.seq)
        [record] = await store.query("jobs")
        assert record["status"] == "open" == (await store.get("jobs", "j"))["status"]


@pytest.mark.asyncio
async def test_an_older_store_gets_its_projection(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "tech.db", tmp_path / "tech.db")
    async with await LocalStore.open(tmp_path / "tech.db") as store:
        for collection in ("jobs", "contacts"):
            ids = await store.ids(collection)
            queried = {r.id: dict(r) for r in await store.query(collection)}
            assert queried == {rid: dict(await store.get(collection, rid)) for rid in ids}


# ---------------------------------------------------------------------------- property

values = st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.booleans(), st.none())
ops = st.lists(
    st.tuples(
        st.sampled_from(["local", "remote", "text"]),
        st.sampled_from(["r1", "r2", "r3"]),
        st.sampled_from(["x", "y"]),
        values,
    ),
    min_size=1,
    max_size=12,
)
filters = st.one_of(
    st.builds(
        lambda f, v: field(f).eq(v), st.sampled_from(["x", "y"]), st.sampled_from(["a", 1, True])
    ),
    st.builds(lambda f, v: field(f).ge(v), st.sampled_from(["x", "y"]), st.sampled_from(["b", 1])),
    st.builds(
        lambda v: field("x").is_in(v), st.lists(st.sampled_from(["a", "c", 0, 2]), max_size=3)
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops, where=filters)
def test_queries_always_agree_with_the_documents(
    tmp_path_factory: Any, steps: Any, where: Any
) -> None:
    """Whatever mix of local edits and remote updates a store took, a query returns exactly
    the records whose current fields (read from their documents) match."""
    root = tmp_path_factory.mktemp("prop")

    async def run() -> None:
        async with (
            await LocalStore.open(root / "a.db") as local,
            await LocalStore.open(root / "b.db") as other,
        ):
            for kind, rid, name, value in steps:
                if kind == "remote":
                    async with other.edit("jobs", rid) as rec:
                        rec[name] = value
                    sv = await local.state_vector("jobs", rid)
                    diff = await other.encode_state("jobs", rid, sv)
                    await local.apply_remote([RemoteUpdate("jobs", rid, diff)])
                elif kind == "text":
                    async with local.edit("jobs", rid) as rec:
                        rec.text("t").insert(0, str(value))
                else:
                    async with local.edit("jobs", rid) as rec:
                        rec[name] = value
            truth = {}  # from the documents themselves, not from the projection
            for rid in await local.ids("jobs"):
                doc: Doc[Any] = Doc()
                doc.apply_update(await local.encode_state("jobs", rid))
                truth[rid] = read_fields(doc)
            assert {rid: dict(await local.get("jobs", rid)) for rid in truth} == truth
            resolved = resolve(parse_where(where))  # type: ignore[arg-type]
            expected = sorted(rid for rid, f in truth.items() if matches(resolved, f))
            assert [r.id for r in await local.query("jobs", where)] == expected
            assert {r.id: dict(r) for r in await local.query("jobs")} == truth

    asyncio.run(run())


# ---------------------------------------------------------------------------- live queries


@pytest.mark.asyncio
async def test_watch_yields_after_changes_that_affect_it(tmp_path: Path) -> None:
    async with (
        await LocalStore.open(tmp_path / "a.db") as store,
        await LocalStore.open(tmp_path / "b.db") as office,
    ):
        await _fill(store, JOBS)
        async with store.watch("jobs", {"status": "open"}, order_by="date") as live:
            first = await live.next()
            assert [r.id for r in first.records] == ["j1", "j3"] and first.changes == ()
            # A record that neither matched nor matches: no result.
            async with store.edit("jobs", "j2") as rec:
                rec["prio"] = 9
            # A record that starts matching: a result, with what changed and where from.
            async with store.edit("jobs", "j4") as rec:
                rec["status"] = "open"
            result = await asyncio.wait_for(live.next(), 5)
            assert [r.id for r in result.records] == ["j1", "j3", "j4"]
            [change] = result.changes
            assert (change.record_id, change.origin, change.fields) == ("j4", "local", {"status"})
            assert change.before is not None and change.before["status"] == "held"
            # A remote update that makes a record stop matching: scanned at once (the
            # background scan would wait for a pause), reported as remote.
            store._conflict_scan.idle = 3600
            async with office.edit("jobs", "j1") as rec:
                rec["status"] = "done"
            await store.apply_remote(
                [RemoteUpdate("jobs", "j1", await office.encode_state("jobs", "j1"))]
            )
            result = await asyncio.wait_for(live.next(), 5)
            assert [r.id for r in result.records] == ["j3", "j4"]
            assert [(c.record_id, c.origin) for c in result.changes] == [("j1", "remote")]
            assert "status" in result.changes[0].fields
            # Several edits committed together come as one result.
            async with store.batch():
                for rid in ("j3", "j4"):
                    async with store.edit("jobs", rid) as rec:
                        rec["status"] = "done"
            result = await asyncio.wait_for(live.next(), 5)
            assert result.records == [] and {c.record_id for c in result.changes} == {"j3", "j4"}
            assert result.origins == {"local"}
        with pytest.raises(StopAsyncIteration):
            await live.next()
        assert store._watched["jobs"] == 0


@pytest.mark.asyncio
async def test_watch_runs_again_when_the_window_moves(tmp_path: Path) -> None:
    # 0.3 s before midnight in Paris; the store's clock advances with real time.
    start = time.monotonic()
    base = dt.datetime(2026, 12, 2, 22, 59, 59, 700000, tzinfo=dt.UTC).timestamp()
    clock = lambda: base + (time.monotonic() - start)  # noqa: E731
    async with await LocalStore.open(tmp_path / "a.db", time_source=clock) as store:
        await _fill(store, JOBS)
        today = field("date").window(0, 0, tz="Europe/Paris")
        async with store.watch("jobs", today) as live:
            assert [r.id for r in (await live.next()).records] == ["j1"]  # Dec 2
            result = await asyncio.wait_for(live.next(), 5)
            assert result.records == [] and result.changes == ()  # Dec 3: nothing that day


@pytest.mark.asyncio
async def test_async_for_over_a_watch(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "a.db") as store:
        live = store.watch("jobs")
        seen: list[int] = []

        async def consume() -> None:
            async for result in live:
                seen.append(len(result.records))
                if len(seen) == 3:
                    live.close()

        task = asyncio.create_task(consume())
        for rid in ("a", "b"):
            await asyncio.sleep(0.05)
            async with store.edit("jobs", rid) as rec:
                rec["x"] = 1
        await asyncio.wait_for(task, 5)
        assert seen == [0, 1, 2]


def test_a_projection_row_does_not_depend_on_field_order() -> None:
    from crdt_sync.store.projection import decode_fields, encode_fields

    a = encode_fields({"b": 1, "a": {"y": 2, "x": b"\x01"}, "c": [3]})
    b = encode_fields({"c": [3], "a": {"x": b"\x01", "y": 2}, "b": 1})
    assert a == b
    assert decode_fields(a) == {"a": {"x": b"\x01", "y": 2}, "b": 1, "c": [3]}
