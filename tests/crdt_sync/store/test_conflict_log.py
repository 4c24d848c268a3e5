"""The store's conflict log (layout v2): every slot, every collection; filled by a background
scan of what remote updates brought, durable across restarts; listed per record and across
records, with events. Real SQLite files."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from crdt_sync.records.layout import layout_of
from crdt_sync.records.lww import Kind
from crdt_sync.store.sqlite import ConflictLogEntry, LocalStore

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "v1"


class Clock:
    """A settable wall clock (seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _exchange(src: LocalStore, dst: LocalStore, record_id: str = "job-1") -> None:
    await dst.apply_remote([("jobs", record_id, await src.encode_state("jobs", record_id))])


async def _two_stores(tmp_path: Path) -> tuple[LocalStore, LocalStore]:
    a = await LocalStore.open(tmp_path / "a.db", replica_id="tech-a", time_source=Clock(1000.0))
    b = await LocalStore.open(tmp_path / "b.db", replica_id="tech-b", time_source=Clock(1005.0))
    return a, b


@pytest.mark.asyncio
async def test_concurrent_offline_edits_merge_and_the_loser_is_logged_on_both(
    tmp_path: Path,
) -> None:
    """Issue 10's opening case, store to store: the first note, address line, label and
    phone on two replicas at once."""
    a, b = await _two_stores(tmp_path)
    async with a, b:
        async with a.edit("jobs", "job-1") as job:
            job["status"] = "open"
        await _exchange(a, b)
        logged: list[ConflictLogEntry] = []
        a.on_conflict(logged.append)
        for store, who in ((a, "A"), (b, "B")):
            async with store.edit("jobs", "job-1") as j:
                j.text("notes").append(f"Note from {who}. ")
                j.map("address")["street" if who == "A" else "floor"] = who
                j.array("labels").insert(0, f"label-{who}")
                j["phone"] = f"111-{who}"
        await _exchange(a, b)
        await _exchange(b, a)
        for store in (a, b):
            record = dict(await store.get("jobs", "job-1"))
            assert record["notes"] in ("Note from A. Note from B. ", "Note from B. Note from A. ")
            assert record["address"] == {"street": "A", "floor": "B"}
            assert sorted(record["labels"]) == ["label-A", "label-B"]
            assert record["phone"] == "111-B"  # b's clock is 5 s ahead: the most recent
            [conflict] = await store.conflicts("jobs", "job-1")  # scans first: it is due
            assert conflict.path == ("phone",) and conflict.field == "phone"
            assert (conflict.lost_kind, conflict.lost_value) == (Kind.VALUE, "111-A")
            assert conflict.lost_replica == "tech-a" and conflict.won_replica == "tech-b"
            assert conflict.describe() == (
                "phone: '111-A' from replica tech-a was overwritten by '111-B' from replica "
                "tech-b at 1970-01-01T00:16:45.000Z"
            )
        assert [e.key for e in logged] == [conflict.key]  # the event, once


@pytest.mark.asyncio
async def test_the_scan_runs_by_itself_and_recent_conflicts_span_records(
    tmp_path: Path,
) -> None:
    a, b = await _two_stores(tmp_path)
    async with a, b:
        for record_id in ("job-1", "job-2", "job-3"):
            async with a.edit("jobs", record_id) as job:
                job["status"] = f"a-{record_id}"
            async with b.edit("jobs", record_id) as job:
                job["status"] = f"b-{record_id}"
        events: asyncio.Queue[ConflictLogEntry] = asyncio.Queue()
        a.on_conflict(events.put_nowait)
        for record_id in ("job-1", "job-2", "job-3"):
            await _exchange(b, a, record_id)
        got = [await asyncio.wait_for(events.get(), 10) for _ in range(3)]  # no call made
        assert sorted(e.record_id for e in got) == ["job-1", "job-2", "job-3"]
        recent = await a.recent_conflicts()
        assert [e.seq for e in recent] == sorted((e.seq for e in recent), reverse=True)
        assert len(recent) == 3
        newest = recent[0].seq
        assert await a.recent_conflicts(after=newest) == []
        assert [e.seq for e in await a.recent_conflicts(limit=2)] == [e.seq for e in recent[:2]]


@pytest.mark.asyncio
async def test_a_scan_interrupted_by_a_restart_resumes_when_the_store_opens(
    tmp_path: Path,
) -> None:
    a, b = await _two_stores(tmp_path)
    async with b:
        async with a, a.edit("jobs", "job-1") as job:
            job["phone"] = "from a"
        async with b.edit("jobs", "job-1") as job:
            job["phone"] = "from b"
        a = await LocalStore.open(tmp_path / "a.db")
        await _exchange(b, a)
        await a.close()  # before the background scan ran
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT COUNT(*) FROM conflict_scan").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM conflict_log").fetchone() == (0,)
    async with await LocalStore.open(tmp_path / "a.db") as a:
        events: asyncio.Queue[ConflictLogEntry] = asyncio.Queue()
        a.on_conflict(events.put_nowait)
        entry = await asyncio.wait_for(events.get(), 10)  # the scan resumed by itself
        assert (entry.lost_value, entry.won_value) == ("from a", "from b")
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT COUNT(*) FROM conflict_scan").fetchone() == (0,)


@pytest.mark.asyncio
async def test_the_log_equals_the_documents_conflicts(tmp_path: Path) -> None:
    """Kinds other than values: a text that lost to a value, a deletion that lost."""
    a, b = await _two_stores(tmp_path)
    async with a, b:
        async with a.edit("jobs", "job-1") as job:
            job["phone"] = "1"
            job.text("memo").append("seen")
        await _exchange(a, b)
        async with a.edit("jobs", "job-1") as job:
            del job["phone"]
            job["memo"] += " + unseen"
        async with b.edit("jobs", "job-1") as job:
            job["phone"] = "2"
            del job["memo"]
            job["memo"] = 42
        await _exchange(a, b)
        await _exchange(b, a)
        doc = await a._doc("jobs", "job-1")
        expected = {(c.path, c.lost.kind, c.lost.value) for c in layout_of(doc).conflicts()}
        assert expected == {("phone", Kind.DELETED, None), ("memo", Kind.TEXT, " + unseen")}
        for store in (a, b):
            log = await store.conflicts("jobs", "job-1")
            assert {(".".join(e.path), e.lost_kind, e.lost_value) for e in log} == expected


@pytest.mark.asyncio
async def test_a_v1_store_keeps_its_conflict_log(tmp_path: Path) -> None:
    """Schema 1 -> 2 moves the v1 LWW conflicts into the new log."""
    shutil.copy(FIXTURES / "tech.db", tmp_path / "tech.db")
    async with await LocalStore.open(tmp_path / "tech.db", lww={"jobs": ["status"]}) as store:
        [entry] = await store.conflicts("jobs", "job-1")
        assert (entry.path, entry.lost_kind, entry.lost_value) == (
            ("status",),
            Kind.VALUE,
            "in_progress",
        )
        assert (entry.won_kind, entry.won_value, entry.won_replica) == (
            Kind.VALUE,
            "on_hold",
            "office",
        )
        assert "overwritten by 'on_hold' from replica office" in entry.describe()
