"""Deleting records in the local store (docs/records.md, "Deleting a record"): reads, the
outbox, remote tombstones, discarding a delete, the purge of a deleted record, and
remove_records. Real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crdt_sync.errors import InvalidEdit, InvalidState, RecordDeleted, RecordNotFound
from crdt_sync.records.layout import layout_of, tombstones_in
from crdt_sync.store.removal import PER_RECORD_TABLES, remove_records
from crdt_sync.store.sqlite import LocalStore


async def _job(store: LocalStore, record_id: str = "job-1", **fields: object) -> None:
    async with store.edit("jobs", record_id) as job:
        for name, value in (fields or {"status": "open"}).items():
            job[name] = value


def _rows(path: Path, record_id: str) -> int:
    with sqlite3.connect(path) as db:
        return sum(
            db.execute(f"SELECT COUNT(*) FROM {table} WHERE id = ?", (record_id,)).fetchone()[0]
            for table in (*PER_RECORD_TABLES, "outbox")
        )


@pytest.mark.asyncio
async def test_a_deleted_record_is_gone_for_reads_and_pending_until_acknowledged(
    tmp_path: Path,
) -> None:
    async with await LocalStore.open(tmp_path / "a.db", replica_id="tech-a") as store:
        await _job(store, "job-1")
        await _job(store, "job-2", notes="gate code")
        await store.outbox.acknowledge([e.seq for e in await store.outbox.entries()])
        await store.delete("jobs", "job-2")
        with pytest.raises(RecordDeleted, match="'job-2' of collection 'jobs' was deleted by "):
            await store.get("jobs", "job-2")
        with pytest.raises(RecordNotFound):  # RecordDeleted is a RecordNotFound
            await store.get("jobs", "job-2")
        assert not await store.exists("jobs", "job-2")
        assert store.is_deleted("jobs", "job-2")
        assert await store.ids("jobs") == ["job-1"]
        assert [r.id for r in await store.records("jobs")] == ["job-1"]
        assert [r.id for r in await store.search("jobs", "gate")] == []
        (entry,) = await store.outbox.entries()  # one entry: the tombstone, pending
        assert entry.record_id == "job-2"
        assert tombstones_in(entry.update)  # it rides the normal update path
        with pytest.raises(RecordDeleted):
            async with store.edit("jobs", "job-2") as job:
                job["status"] = "again"
        await store.delete("jobs", "job-2")  # a second delete does nothing
        assert len(await store.outbox.entries()) == 1
        with pytest.raises(RecordNotFound):
            await store.delete("jobs", "nope")
        await store.outbox.acknowledge([entry.seq])
        assert await store.outbox.entries() == []
    # Durable: the deletion is known after a restart, without decoding documents.
    async with await LocalStore.open(tmp_path / "a.db") as store:
        assert store.is_deleted("jobs", "job-2")
        assert await store.ids("jobs") == ["job-1"]


@pytest.mark.asyncio
async def test_nothing_more_is_written_in_the_edit_that_deletes(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "a.db", replica_id="tech-a") as store:
        await _job(store)
        with pytest.raises(InvalidEdit, match="deleted in this edit"):
            async with store.edit("jobs", "job-1") as job:
                job.delete_record()
                job["status"] = "zombie"
        assert (await store.get("jobs", "job-1")).fields == {"status": "open"}  # nothing saved


@pytest.mark.asyncio
async def test_a_remote_tombstone_deletes_and_a_concurrent_edit_is_logged(
    tmp_path: Path,
) -> None:
    a = await LocalStore.open(tmp_path / "a.db", replica_id="tech-a")
    b = await LocalStore.open(tmp_path / "b.db", replica_id="tech-b")
    try:
        await _job(a, status="open", notes="x")
        await b.apply_remote([("jobs", "job-1", await a.encode_state("jobs", "job-1"))])
        async with b.edit("jobs", "job-1") as job:  # b has not seen the delete
            job["status"] = "done"
        await a.delete("jobs", "job-1")
        await b.apply_remote([("jobs", "job-1", await a.encode_state("jobs", "job-1"))])
        assert b.is_deleted("jobs", "job-1")
        assert await b.ids("jobs") == []
        await a.apply_remote([("jobs", "job-1", await b.encode_state("jobs", "job-1"))])
        for store in (a, b):
            with pytest.raises(RecordDeleted, match="by replica tech-a"):
                await store.get("jobs", "job-1")
            (lost,) = await store.conflicts("jobs", "job-1")
            assert (lost.field, lost.lost_value, lost.lost_replica) == ("status", "done", "tech-b")
            assert lost.won_deleted and lost.won_replica == "tech-a"
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_discarding_a_refused_delete_brings_the_record_back(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "a.db", replica_id="tech-a") as store:
        await _job(store)
        await store.outbox.acknowledge([e.seq for e in await store.outbox.entries()])
        await store.delete("jobs", "job-1")
        (entry,) = await store.outbox.entries()
        await store.outbox.mark_error(entry.seq, "rejected", "jobs are never deleted")
        await store.outbox.discard(entry.seq)
        assert not store.is_deleted("jobs", "job-1")
        assert (await store.get("jobs", "job-1")).fields == {"status": "open"}
        assert await store.ids("jobs") == ["job-1"]


@pytest.mark.asyncio
async def test_forget_purged_removes_rows_and_logs_pending_changes(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with await LocalStore.open(path, replica_id="tech-b") as store:
        await _job(store, "job-1")
        await _job(store, "job-2", status="open", phone="555")
        await store.outbox.acknowledge([e.seq for e in await store.outbox.entries()])
        async with store.edit("jobs", "job-2") as job:  # pending when the purge arrives
            job["status"] = "in_progress"
            job.text("notes").insert(0, "pump replaced")
        logged = []
        store.on_conflict(logged.append)
        removed = await store.forget_purged(
            [
                ("jobs", "job-1", "0000000003e8.000000.office"),
                ("jobs", "job-2", "0000000003e8.000001.office"),
                ("jobs", "never-here", None),
            ]
        )
        assert removed == [("jobs", "job-1"), ("jobs", "job-2")]
        assert _rows(path, "job-1") == _rows(path, "job-2") == 0
        assert await store.outbox.entries() == [] and store.outbox.tally() == (0, 0)
        lost = {(c.field, c.lost_value) for c in await store.conflicts("jobs", "job-2")}
        # What the pending edit wrote; not what the deleter had seen (phone was confirmed).
        assert lost == {("status", "in_progress"), ("notes", "pump replaced")}
        assert {(c.field, c.lost_value) for c in logged} == lost
        for entry in await store.conflicts("jobs", "job-2"):
            assert entry.won_deleted and entry.won_replica == "office"
        assert await store.forget_purged([("jobs", "job-2", None)]) == []  # once
        with pytest.raises(RecordNotFound):
            await store.get("jobs", "job-2")


@pytest.mark.asyncio
async def test_remove_records_refuses_pending_changes_unless_drop_pending(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    keys = [("jobs", "job-1"), ("jobs", "job-2"), ("jobs", "x")]
    async with await LocalStore.open(path, replica_id="tech-a") as store:
        await _job(store, "job-1")
        await _job(store, "job-2")
        await store.outbox.acknowledge([(await store.outbox.entries())[0].seq])

        def remove(db: sqlite3.Connection) -> None:
            remove_records(db, keys)

        with pytest.raises(InvalidState, match="job-2"):
            await store._write(remove)
        assert _rows(path, "job-1") > 0 and _rows(path, "job-2") > 0  # nothing removed

        def remove_pending(db: sqlite3.Connection) -> None:
            remove_records(db, keys, drop_pending=True)  # the purge's caller only

        await store._write(remove_pending)
        assert _rows(path, "job-1") == 0
        assert _rows(path, "job-2") == 0  # its outbox entry too


@pytest.mark.asyncio
async def test_delete_record_supersedes_what_it_saw(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "a.db", replica_id="tech-a") as store:
        await _job(store, status="open", address={"city": "Lyon"}, labels=["a"])
        await store.delete("jobs", "job-1")
        doc = await store._doc("jobs", "job-1")
        layout = layout_of(doc)
        assert layout.read() == {}  # everything it saw is gone
        assert layout.all_entries() == [] and layout.conflicts() == []
        assert layout.deletion() is not None and layout.deletion().replica == "tech-a"
