"""Deleted records and the projection (docs/records.md, "Deleting a record";
docs/working-set.md): a deleted record leaves local queries, counts, full-text search, live
queries and get() at once, whether the deletion is local or came from the relay, and stays out
while deleted; discarding a delete brings it back; cache eviction and subscription drops never
resurrect it. Real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from crdt_sync.cache_policy import CachePolicy
from crdt_sync.errors import RecordDeleted
from crdt_sync.store.schema import MIGRATIONS, SCHEMA_VERSION
from crdt_sync.store.sqlite import LocalStore, RemoteUpdate

TEXT = {"jobs": ["title"]}


async def _open(path: Path, **kwargs: object) -> LocalStore:
    return await LocalStore.open(path, text_fields=TEXT, indexes={"jobs": ["status"]}, **kwargs)  # type: ignore[arg-type]


async def _job(store: LocalStore, record_id: str, status: str = "open") -> None:
    async with store.edit("jobs", record_id) as job:
        job["status"] = status
        job["title"] = f"Boiler {record_id}"


async def _visible(store: LocalStore) -> tuple[list[str], int, list[str]]:
    """What queries, counts and full-text search see of ``jobs``."""
    return (
        [r.id for r in await store.query("jobs", {"status": "open"})],
        await store.count("jobs"),
        [h.record.id for h in await store.search_text("jobs", "boiler")],
    )


def _projection_rows(path: Path, record_id: str) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return (
            db.execute("SELECT COUNT(*) FROM projection WHERE id = ?", (record_id,)).fetchone()[0],
            db.execute("SELECT COUNT(*) FROM record_text WHERE id = ?", (record_id,)).fetchone()[0],
        )


@pytest.mark.asyncio
async def test_a_local_delete_leaves_queries_counts_search_get_and_live_queries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    async with await _open(path) as store:
        await _job(store, "j1")
        await _job(store, "j2")
        assert await _visible(store) == (["j1", "j2"], 2, ["j1", "j2"])
        async with store.watch("jobs", {"status": "open"}) as live:
            assert [r.id for r in (await live.next()).records] == ["j1", "j2"]
            await store.delete("jobs", "j1")
            result = await asyncio.wait_for(live.next(), 5)
            assert [r.id for r in result.records] == ["j2"]
            [change] = result.changes
            assert (change.record_id, change.origin, change.after) == ("j1", "local", None)
            assert change.before is not None and change.before["status"] == "open"
        assert await _visible(store) == (["j2"], 1, ["j2"])
        assert _projection_rows(path, "j1") == (0, 0)  # removed in the delete's transaction
        store._cache.clear()  # get() of a record not in memory reads the projection row
        with pytest.raises(RecordDeleted):
            await store.get("jobs", "j1")
    async with await _open(path) as store:  # and after a restart
        with pytest.raises(RecordDeleted):
            await store.get("jobs", "j1")
        assert await _visible(store) == (["j2"], 1, ["j2"])


@pytest.mark.asyncio
async def test_a_remote_deletion_leaves_them_too_and_late_writes_never_bring_it_back(
    tmp_path: Path,
) -> None:
    async with (
        await _open(tmp_path / "a.db") as store,
        await _open(tmp_path / "office.db", replica_id="office") as office,
        await _open(tmp_path / "tech.db", replica_id="tech") as tech,
    ):
        for source in (office, tech):
            await _job(source, "j1")
        base = await office.encode_state("jobs", "j1")
        for target in (store, tech):
            await target.apply_remote([RemoteUpdate("jobs", "j1", base)])
        await _job(store, "j2")
        await store.scan_conflicts()  # j1's projection row, before the watch starts
        store._conflict_scan.idle = 3600  # the watch scans at once, not at the next pause
        async with store.watch("jobs", {"status": "open"}) as live:
            assert [r.id for r in (await live.next()).records] == ["j1", "j2"]
            before = await office.state_vector("jobs", "j1")
            await office.delete("jobs", "j1")
            tombstone = await office.encode_state("jobs", "j1", before)
            await store.apply_remote([RemoteUpdate("jobs", "j1", tombstone)])
            # Out of queries at once: the projection row left with the tombstone's rows.
            assert await _visible(store) == (["j2"], 1, ["j2"])
            with pytest.raises(RecordDeleted, match="office"):
                await store.get("jobs", "j1")
            result = await asyncio.wait_for(live.next(), 5)
            assert [r.id for r in result.records] == ["j2"]
            assert [(c.record_id, c.origin, c.after) for c in result.changes] == [
                ("j1", "remote", None)
            ]
            # A write made without seeing the deletion arrives later: it loses, the record
            # stays out (the scan writes no projection row for a deleted record).
            tech_before = await tech.state_vector("jobs", "j1")
            async with tech.edit("jobs", "j1") as job:
                job["status"] = "open"
                job["title"] = "Boiler again"
            late = await tech.encode_state("jobs", "j1", tech_before)
            await store.apply_remote([RemoteUpdate("jobs", "j1", late)])
            await store.scan_conflicts()
            assert await _visible(store) == (["j2"], 1, ["j2"])
            assert any(c.won_deleted for c in await store.conflicts("jobs", "j1"))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(live.next(), 0.3)  # nothing changed for the query
        assert _projection_rows(store.path, "j1") == (0, 0)


@pytest.mark.asyncio
async def test_discarding_a_refused_delete_brings_the_record_back(tmp_path: Path) -> None:
    async with await _open(tmp_path / "a.db") as store:
        await _job(store, "j1")
        await store.outbox.acknowledge([e.seq for e in await store.outbox.entries()])
        await store.delete("jobs", "j1")
        [entry] = await store.outbox.entries()
        await store.outbox.mark_error(entry.seq, "rejected", "not allowed")
        assert await _visible(store) == ([], 0, [])
        await store.outbox.discard(entry.seq)
        assert await _visible(store) == (["j1"], 1, ["j1"])
        assert (await store.get("jobs", "j1"))["status"] == "open"


@pytest.mark.asyncio
async def test_eviction_and_drops_never_resurrect_a_deleted_record(tmp_path: Path) -> None:
    async with (
        await _open(tmp_path / "a.db", cache=CachePolicy(check_interval=1e6)) as store,
        await _open(tmp_path / "office.db", replica_id="office") as office,
    ):
        for rid in ("j1", "j2"):
            await _job(office, rid)
            await store.apply_remote(
                [RemoteUpdate("jobs", rid, await office.encode_state("jobs", rid))]
            )
        # A pending delete is kept by a subscription drop and by clear_cache, still deleted.
        await store.delete("jobs", "j1")
        assert await store.drop_records([("jobs", "j1")]) == [("jobs", "j1")]
        report = await store.clear_cache()
        assert report.unsynced_records == 1
        with pytest.raises(RecordDeleted):
            await store.get("jobs", "j1")
        assert await _visible(store) == ([], 0, [])
        # Once acknowledged, it may go like any synced record.
        await store.outbox.acknowledge([e.seq for e in await store.outbox.entries()])
        await store.clear_cache()
        assert await store.absent([("jobs", "j1")]) == [("jobs", "j1")]
        # A live update of it then makes the sync run fetch the whole record (sv with an
        # empty state vector, client/sync_run.py): that brings its tombstone back with it.
        await office.apply_remote(
            [RemoteUpdate("jobs", "j1", await store_state_of_deleted(tmp_path, office))]
        )
        await store.apply_remote(
            [RemoteUpdate("jobs", "j1", await office.encode_state("jobs", "j1"))]
        )
        with pytest.raises(RecordDeleted):
            await store.get("jobs", "j1")
        assert store.is_deleted("jobs", "j1")
        assert await _visible(store) == ([], 0, [])


async def store_state_of_deleted(tmp_path: Path, office: LocalStore) -> bytes:
    """The office's record j1 deleted by another replica: the tombstone as an update."""
    async with await _open(tmp_path / "c.db", replica_id="deleter") as deleter:
        await deleter.apply_remote(
            [RemoteUpdate("jobs", "j1", await office.encode_state("jobs", "j1"))]
        )
        before = await deleter.state_vector("jobs", "j1")
        await deleter.delete("jobs", "j1")
        return await deleter.encode_state("jobs", "j1", before)


def test_the_deleted_column_is_migration_3_after_the_projection() -> None:
    assert SCHEMA_VERSION == 4
    assert any("CREATE TABLE projection" in step for step in MIGRATIONS[2])
    assert MIGRATIONS[3] == ["ALTER TABLE records ADD COLUMN deleted TEXT"]


@pytest.mark.asyncio
async def test_a_schema_3_store_is_upgraded_keeping_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with await _open(path) as store:
        await _job(store, "j1")
    with sqlite3.connect(path) as db:  # as main's schema 3 left it: no deleted column
        db.execute("ALTER TABLE records DROP COLUMN deleted")
        db.execute("PRAGMA user_version = 3")
    async with await _open(path) as store:
        assert await _visible(store) == (["j1"], 1, ["j1"])
        await store.delete("jobs", "j1")
        assert await _visible(store) == ([], 0, [])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert db.execute("SELECT deleted FROM records").fetchone()[0] is not None
