"""LocalStore against real SQLite files: records, outbox, remote apply, compaction, LWW."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import pytest_asyncio

from crdt_sync.errors import (
    CorruptStoreError,
    InvalidEdit,
    InvalidState,
    OutboxError,
    RecordNotFound,
    SchemaVersionError,
    UnsyncedChangesError,
)
from crdt_sync.outbox import OutboxStatus
from crdt_sync.records.record import read_fields
from crdt_sync.store.schema import APPLICATION_ID, SCHEMA_VERSION
from crdt_sync.store.sqlite import COMPACT_MIN_ROWS, LocalStore
from crdt_sync.yjs.updates import decode_state_vector, read_update_clocks

NOTE = "Kundin: Zoë Müller, Straße 5 — café ☕, 東京 🚐👩‍🔧"


class Clock:
    """A settable wall clock (seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalStore]:
    s = await LocalStore.open(tmp_path / "replica.db", lww={"jobs": ["status", "priority"]})
    yield s
    await s.close()


async def _exchange(src: LocalStore, dst: LocalStore, collection: str, record_id: str) -> None:
    await dst.apply_remote([(collection, record_id, await src.encode_state(collection, record_id))])


class TestRecords:
    @pytest.mark.asyncio
    async def test_create_read_edit_list_offline(self, store: LocalStore) -> None:
        async with store.edit("jobs", "job-1") as job:
            job["title"] = "Boiler service"
            job["visits"] = 2
            job["address"] = {"city": "Köln", "zip": "50667"}
            job["parts"] = ["valve", "seal"]
            job.text("notes").insert(0, NOTE)
        async with store.edit("jobs", "job-2") as job:
            job["title"] = "Leak"
        record = await store.get("jobs", "job-1")
        assert dict(record) == {
            "title": "Boiler service",
            "visits": 2,
            "address": {"city": "Köln", "zip": "50667"},
            "parts": ["valve", "seal"],
            "notes": NOTE,
        }
        assert record.pending
        assert [r.id for r in await store.records("jobs")] == ["job-1", "job-2"]
        assert await store.records("contacts") == []

    @pytest.mark.asyncio
    async def test_text_positions_are_characters(self, store: LocalStore) -> None:
        async with store.edit("jobs", "j") as job:
            job.text("notes").insert(0, "héllo😀x")
        async with store.edit("jobs", "j") as job:
            notes = job.text("notes")
            notes.insert(2, "Z")  # between é and l, not at the end
            notes.insert(6, "→")  # before the emoji
            notes.delete(8, 1)  # the x
            job["notes"] += " ✔"
        assert (await store.get("jobs", "j"))["notes"] == "héZllo→😀 ✔"

    @pytest.mark.asyncio
    async def test_each_edit_is_one_update_and_one_outbox_entry(self, store: LocalStore) -> None:
        async with store.edit("jobs", "j") as job:
            job["a"] = 1
            job["b"] = 2
            job.text("notes").insert(0, "x")
        async with store.edit("jobs", "j") as job:
            job["a"] = 3
        entries = await store.outbox.entries()
        assert [(e.seq, e.record_id, e.status) for e in entries] == [
            (1, "j", OutboxStatus.QUEUED),
            (2, "j", OutboxStatus.QUEUED),
        ]
        # The entries' updates rebuild the record exactly.
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        for e in entries:
            doc.apply_update(e.update)
        assert read_fields(doc) == {"a": 3, "b": 2, "notes": "x"}

    @pytest.mark.asyncio
    async def test_an_edit_that_raises_saves_nothing(self, store: LocalStore) -> None:
        async with store.edit("jobs", "j") as job:
            job["a"] = 1
        with pytest.raises(RuntimeError):
            async with store.edit("jobs", "j") as job:
                job["a"] = 2
                raise RuntimeError("app bug")
        assert (await store.get("jobs", "j"))["a"] == 1
        assert await store.outbox.count() == 1

    @pytest.mark.asyncio
    async def test_an_empty_edit_writes_no_entry(self, store: LocalStore) -> None:
        async with store.edit("jobs", "j") as job:
            job["a"] = 1
        async with store.edit("jobs", "j"):
            pass
        assert await store.outbox.count() == 1

    @pytest.mark.asyncio
    async def test_missing_record(self, store: LocalStore) -> None:
        with pytest.raises(RecordNotFound, match="nope"):
            await store.get("jobs", "nope")
        with pytest.raises(RecordNotFound):
            async with store.edit("jobs", "nope", create=False):
                pass
        assert await store.state_vector("jobs", "nope") == b""

    @pytest.mark.asyncio
    async def test_nested_edit_is_refused(self, store: LocalStore) -> None:
        async with store.edit("jobs", "a") as job:
            job["x"] = 1
            with pytest.raises(InvalidState):
                async with store.edit("jobs", "b"):
                    pass

    @pytest.mark.asyncio
    async def test_bad_values_are_refused(self, store: LocalStore) -> None:
        with pytest.raises(InvalidEdit):
            async with store.edit("jobs", "j") as job:
                job["when"] = object()
        with pytest.raises(InvalidEdit):
            async with store.edit("jobs", "j") as job:
                job.text("notes").insert(5, "x")

    @pytest.mark.asyncio
    async def test_search_cached_records(self, store: LocalStore) -> None:
        for rid, city, status in [
            ("1", "Köln", "open"),
            ("2", "Bonn", "open"),
            ("3", "KÖLN", "done"),
        ]:
            async with store.edit("jobs", rid) as job:
                job["address"] = {"city": city}
                job["status"] = status
        assert [r.id for r in await store.search("jobs", "köln")] == ["1", "3"]
        assert [r.id for r in await store.search("jobs", "köln", where={"status": "open"})] == ["1"]

    @pytest.mark.asyncio
    async def test_timestamps(self, tmp_path: Path) -> None:
        clock = Clock()
        async with await LocalStore.open(tmp_path / "t.db", time_source=clock) as s:
            async with s.edit("jobs", "j") as job:
                job["a"] = 1
            clock.now += 10
            async with s.edit("jobs", "j") as job:
                job["a"] = 2
            clock.now += 10
            record = await s.get("jobs", "j")
            assert (record.created_at, record.updated_at, record.accessed_at) == (
                1_700_000_000.0,
                1_700_000_010.0,
                1_700_000_020.0,
            )


class TestFile:
    @pytest.mark.asyncio
    async def test_reopen_keeps_everything_and_uses_wal(self, tmp_path: Path) -> None:
        path = tmp_path / "r.db"
        async with await LocalStore.open(path) as s:
            replica = s.replica_id
            async with s.edit("jobs", "j") as job:
                job.text("notes").insert(0, NOTE)
        async with await LocalStore.open(path) as s:
            assert s.replica_id == replica
            assert (await s.get("jobs", "j"))["notes"] == NOTE
            assert await s.outbox.count() == 1
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()

    @pytest.mark.asyncio
    async def test_garbage_file_is_refused_with_its_name(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(CorruptStoreError, match=r"garbage\.db"):
            await LocalStore.open(path)

    @pytest.mark.asyncio
    async def test_another_applications_database_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "other.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE customers (id INTEGER)")
        conn.commit()
        conn.close()
        with pytest.raises(CorruptStoreError, match="not a crdt-sync store"):
            await LocalStore.open(path)

    @pytest.mark.asyncio
    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "new.db"
        await (await LocalStore.open(path)).close()
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()
        with pytest.raises(SchemaVersionError, match=r"new\.db") as info:
            await LocalStore.open(path)
        assert info.value.found == SCHEMA_VERSION + 1

    @pytest.mark.asyncio
    async def test_damaged_pages_are_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "damaged.db"
        async with await LocalStore.open(path) as s:
            for i in range(200):
                async with s.edit("jobs", f"j{i}") as job:
                    job["notes"] = "x" * 200
            await s.disk_usage()  # checkpoint the WAL into the main file
        data = bytearray(path.read_bytes())
        for offset in range(4096 * 2, len(data) - 4096, 4096):
            data[offset : offset + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptStoreError, match=r"damaged\.db"):
            await LocalStore.open(path)

    @pytest.mark.asyncio
    async def test_the_application_id_marks_our_files(self, tmp_path: Path) -> None:
        await (await LocalStore.open(tmp_path / "a.db")).close()
        conn = sqlite3.connect(tmp_path / "a.db")
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        conn.close()

    @pytest.mark.asyncio
    async def test_wipe_removes_the_files(self, tmp_path: Path) -> None:
        s = await LocalStore.open(tmp_path / "w.db")
        async with s.edit("jobs", "j") as job:
            job["a"] = 1
        with pytest.raises(UnsyncedChangesError, match="1 unsynced change"):
            await s.wipe()  # the edit is not synced: refused, nothing removed
        assert (await s.get("jobs", "j"))["a"] == 1
        await s.wipe(force=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # noqa: ASYNC240
        with pytest.raises(InvalidState):
            await s.get("jobs", "j")

    @pytest.mark.asyncio
    async def test_replica_id_mismatch(self, tmp_path: Path) -> None:
        await (await LocalStore.open(tmp_path / "a.db", replica_id="tech-1")).close()
        with pytest.raises(InvalidState, match="tech-1"):
            await LocalStore.open(tmp_path / "a.db", replica_id="tech-2")


class TestRemoteApply:
    @pytest.mark.asyncio
    async def test_batch_across_records_in_any_order(self, tmp_path: Path) -> None:
        async with await LocalStore.open(tmp_path / "a.db") as a:
            for i in range(5):
                for step in range(4):
                    async with a.edit("jobs", f"j{i}") as job:
                        job[f"f{step}"] = step
                        job.text("notes").insert(0, f"{step}é")
            updates = [(e.collection, e.record_id, e.update) for e in await a.outbox.entries()]
            async with await LocalStore.open(tmp_path / "b.db") as b:
                changed = await b.apply_remote(list(reversed(updates)) + updates[:3])
                assert sorted(changed) == [("jobs", f"j{i}") for i in range(5)]
                for i in range(5):
                    assert dict(await b.get("jobs", f"j{i}")) == dict(await a.get("jobs", f"j{i}"))
                assert await b.outbox.count() == 0
                assert (await b.get("jobs", "j0")).pending is False

    @pytest.mark.asyncio
    async def test_confirmed_state_excludes_pending_edits(self, store: LocalStore) -> None:
        async with store.edit("jobs", "j") as job:
            job["a"] = 1
        async with store.edit("jobs", "j") as job:
            job["b"] = 2
        await store.outbox.acknowledge([1])
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(await store.confirmed_state("jobs", "j"))
        assert read_fields(doc) == {"a": 1}

    @pytest.mark.asyncio
    async def test_remote_updates_merge_with_local_pending(self, tmp_path: Path) -> None:
        async with (
            await LocalStore.open(tmp_path / "a.db") as a,
            await LocalStore.open(tmp_path / "b.db") as b,
        ):
            async with a.edit("jobs", "j") as job:
                job.text("notes").insert(0, "Arrived. ")
            await _exchange(a, b, "jobs", "j")
            async with a.edit("jobs", "j") as job:
                job["notes"] += "Fixed valve."
            async with b.edit("jobs", "j") as job:
                job.text("notes").insert(0, "Büro: ")
            await _exchange(a, b, "jobs", "j")
            await _exchange(b, a, "jobs", "j")
            assert (await a.get("jobs", "j"))["notes"] == "Büro: Arrived. Fixed valve."
            assert dict(await a.get("jobs", "j")) == dict(await b.get("jobs", "j"))


class TestCompaction:
    @pytest.mark.asyncio
    async def test_compaction_keeps_content_and_shrinks_the_log(self, tmp_path: Path) -> None:
        path = tmp_path / "c.db"
        async with await LocalStore.open(path) as s:
            for i in range(100):
                async with s.edit("jobs", "j") as job:
                    job.text("notes").append(f"line {i} ✓\n")
            await s.outbox.acknowledge_upto(90)
            before = dict(await s.get("jobs", "j"))
            assert await s.compact_all() == 1
            assert dict(await s.get("jobs", "j")) == before
            assert await s.outbox.count() == 10
        conn = sqlite3.connect(path)
        rows = conn.execute("SELECT COUNT(*), COUNT(outbox_seq) FROM updates").fetchone()
        conn.close()
        assert rows == (10, 10)  # only the pending updates remain beside the snapshot
        async with await LocalStore.open(path) as s:
            assert dict(await s.get("jobs", "j")) == before

    @pytest.mark.asyncio
    async def test_compaction_keeps_updates_waiting_for_dependencies(self, tmp_path: Path) -> None:
        async with await LocalStore.open(tmp_path / "a.db") as a:
            async with a.edit("jobs", "j") as job:
                job.text("notes").append("hello wörld")
            async with a.edit("jobs", "j") as job:
                job.text("notes").insert(5, ",")  # needs the first update
            async with a.edit("jobs", "j") as job:
                job.text("notes").delete(0, 2)  # a delete-set-only update
            first, *later = [e.update for e in await a.outbox.entries()]
            async with await LocalStore.open(tmp_path / "b.db") as b:
                for update in later:
                    await b.apply_remote([("jobs", "j", update)])
                for _ in range(COMPACT_MIN_ROWS):
                    await b.apply_remote([("jobs", "k", first)])  # a long log elsewhere
                await b.compact_all()
                await b.compact("jobs", "j")
                await b.apply_remote([("jobs", "j", first)])
                assert (await b.get("jobs", "j"))["notes"] == "llo, wörld"


class TestOutbox:
    @pytest.mark.asyncio
    async def test_statuses_and_acknowledgements(self, store: LocalStore) -> None:
        for rid in ["a", "b", "a", "c"]:
            async with store.edit("jobs", rid) as job:
                job["n"] = job.get("n", 0) + 1
        assert await store.outbox.count() == 4
        assert await store.outbox.has_pending("jobs", "b")
        await store.outbox.mark_uploading([1, 2])
        assert [e.status for e in await store.outbox.entries()] == [
            OutboxStatus.UPLOADING,
            OutboxStatus.UPLOADING,
            OutboxStatus.QUEUED,
            OutboxStatus.QUEUED,
        ]
        await store.outbox.mark_error(2, "rejected", "job closed by the office")
        assert await store.outbox.acknowledge_upto(3) == 2  # 1 and 3; 2 is in error
        assert await store.outbox.acknowledge([1, 3]) == 0  # a repeated ack is harmless
        entries = await store.outbox.entries()
        assert [(e.seq, e.status, e.error_code) for e in entries] == [
            (2, OutboxStatus.ERROR, "rejected"),
            (4, OutboxStatus.QUEUED, None),
        ]
        assert entries[0].error_reason == "job closed by the office"
        assert not await store.outbox.has_pending("jobs", "a")
        assert await store.outbox.count(OutboxStatus.ERROR) == 1
        with pytest.raises(OutboxError):
            await store.outbox.mark_error(99, "x", "y")
        with pytest.raises(OutboxError):
            await store.outbox.discard(4)  # not in error

    @pytest.mark.asyncio
    async def test_uploading_entries_are_requeued_after_a_crash(self, tmp_path: Path) -> None:
        path = tmp_path / "r.db"
        s = await LocalStore.open(path)
        async with s.edit("jobs", "j") as job:
            job["a"] = 1
        await s.outbox.mark_uploading([1])
        await s.close()  # the process "dies" before the ack
        async with await LocalStore.open(path) as s:
            assert [(e.status, e.attempts) for e in await s.outbox.entries()] == [
                (OutboxStatus.QUEUED, 1)
            ]

    @pytest.mark.asyncio
    async def test_discard_rolls_back_one_entry_and_keeps_the_others(
        self, store: LocalStore
    ) -> None:
        async with store.edit("jobs", "j") as job:
            job["status"] = "open"
            job["priority"] = 2
            job["address"] = {"city": "Köln"}
            job.text("notes").insert(0, "Zoë: café ☕ first visit.")
        await store.outbox.acknowledge([1])
        async with store.edit("jobs", "j") as job:  # seq 2: will be refused
            job["status"] = "closed"
            job["address"]["city"] = "Bonn"  # type: ignore[index]
            job.text("notes").delete(0, 5)
            job.text("notes").insert(0, "XX")
            job["invoice"] = 99
        async with store.edit("jobs", "j") as job:  # seq 3: unrelated, must stay
            job["priority"] = 5
            job["notes"] += " Second visit 🚐."
        async with store.edit("jobs", "other") as job:  # seq 4: another record
            job["a"] = 1
        await store.outbox.mark_error(2, "rejected", "job closed by the office")
        await store.outbox.discard(2)
        record = await store.get("jobs", "j")
        assert dict(record) == {
            "status": "open",
            "priority": 5,
            "address": {"city": "Köln"},
            "notes": "Zoë: café ☕ first visit. Second visit 🚐.",
        }
        entries = await store.outbox.entries()
        assert [(e.seq, e.status) for e in entries] == [
            (2, OutboxStatus.QUEUED),
            (3, OutboxStatus.QUEUED),
            (4, OutboxStatus.QUEUED),
        ]
        # A peer that receives the confirmed state plus the re-queued entries agrees.
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(await store.confirmed_state("jobs", "j"))
        for e in entries:
            if e.record_id == "j":
                doc.apply_update(e.update)
        assert dict(record) == _fields(doc, store)

    @pytest.mark.asyncio
    async def test_discard_restores_deleted_list_items_and_text_spans(
        self, store: LocalStore
    ) -> None:
        async with store.edit("jobs", "j") as job:
            job["parts"] = ["filter", "belt", "valve", "fuse"]
            job.text("notes").insert(0, "Zoë: check the café's boiler ☕, then the pump.")
        await store.outbox.acknowledge([1])
        async with store.edit("jobs", "j") as job:  # seq 2: will be refused
            del job.array("parts")[2]
            del job.array("parts")[0]
            notes = job.text("notes")
            notes.delete(len("Zoë: check the café's boiler ☕"), len(", then the pump"))
            notes.delete(0, len("Zoë: "))
        async with store.edit("jobs", "j") as job:  # seq 3: later, must stay
            job.array("parts").append("gasket")
            job["notes"] += " Done 🚐."
        await store.outbox.mark_error(2, "rejected", "parts list locked by the office")
        await store.outbox.discard(2)
        record = await store.get("jobs", "j")
        assert record["parts"] == ["filter", "belt", "valve", "fuse", "gasket"]
        assert record["notes"] == "Zoë: check the café's boiler ☕, then the pump. Done 🚐."
        doc: pycrdt.Doc[Any] = pycrdt.Doc()  # a peer with the confirmed state and the entries
        doc.apply_update(await store.confirmed_state("jobs", "j"))
        for entry in await store.outbox.entries():
            doc.apply_update(entry.update)
        assert dict(record) == _fields(doc, store)

    @pytest.mark.asyncio
    async def test_resolve_applies_a_fix_and_requeues(self, store: LocalStore) -> None:
        async with store.edit("jobs", "j") as job:
            job["status"] = "closed"
            job["hours"] = -3
        await store.outbox.mark_error(1, "rejected", "hours must be positive")
        await store.outbox.resolve(1, lambda job: job.__setitem__("hours", 3))
        assert dict(await store.get("jobs", "j")) == {"status": "closed", "hours": 3}
        entry = (await store.outbox.entries())[0]
        assert (entry.seq, entry.status, entry.error_code) == (1, OutboxStatus.QUEUED, None)
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(entry.update)
        assert _fields(doc, store) == {"status": "closed", "hours": 3}

    @pytest.mark.asyncio
    async def test_entries_after_one_in_error_are_held_behind_it(self, tmp_path: Path) -> None:
        path = tmp_path / "r.db"
        store = await LocalStore.open(path)
        for rid in ["j", "j", "other", "j"]:  # seqs 1..4
            async with store.edit("jobs", rid) as job:
                job["n"] = job.get("n", 0) + 1
        await store.outbox.mark_error(2, "rejected", "job closed by the office")
        assert (store.outbox.first_error("jobs", "j"), store.outbox.held()) == (2, 1)
        assert store.outbox.first_error("jobs", "other") is None
        async with store.edit("jobs", "j") as job:  # seq 5: held too
            job["n"] = 9
        await store.outbox.mark_blocked([(4, "an earlier update is missing")])
        await store.outbox.acknowledge([1, 3])  # not held: the count does not move
        entries = {e.seq: e for e in await store.outbox.entries()}
        assert [(s, e.status, e.held_by) for s, e in entries.items()] == [
            (2, OutboxStatus.ERROR, None),
            (4, OutboxStatus.QUEUED, 2),
            (5, OutboxStatus.QUEUED, 2),
        ]
        assert (entries[4].error_code, entries[4].error_reason) == (
            "blocked",
            "an earlier update is missing",
        )
        assert store.outbox.held() == 2
        await store.outbox.mark_uploading([4])  # a new attempt clears the old reason
        assert (await store.outbox.get(4)).error_code is None
        await store.close()
        store = await LocalStore.open(path)  # counted again from the file
        assert (store.outbox.first_error("jobs", "j"), store.outbox.held()) == (2, 2)
        await store.outbox.discard(2)
        assert (store.outbox.first_error("jobs", "j"), store.outbox.held()) == (None, 0)
        assert [e.held_by for e in await store.outbox.entries()] == [None, None, None]
        await store.close()

    @pytest.mark.asyncio
    @pytest.mark.parametrize("settle", ["discard", "resolve"])
    async def test_a_reworked_entry_carries_the_later_entries_of_its_record(
        self, store: LocalStore, settle: str
    ) -> None:
        async with store.edit("jobs", "j") as job:
            job["status"] = "open"
        await store.outbox.acknowledge([1])
        async with store.edit("jobs", "j") as job:  # seq 2: refused
            job["status"] = "closed"
        for text in ["Arrived. ", "Leak fixed."]:  # seqs 3, 4: build on seq 2
            async with store.edit("jobs", "j") as job:
                job.text("notes").insert(len(job.get("notes", "")), text)
        await store.outbox.mark_error(2, "rejected", "job closed by the office")
        if settle == "discard":
            await store.outbox.discard(2)
        else:
            await store.outbox.resolve(2, lambda job: job.__setitem__("status", "on_hold"))
        # The reworked entry alone integrates on the confirmed state (the fix comes after
        # seqs 3 and 4 in the record's clock sequence, so it carries them) and gives the record.
        confirmed = await store.confirmed_state("jobs", "j")
        entry = await store.outbox.get(2)
        vector = decode_state_vector(pycrdt.get_state(confirmed))
        assert read_update_clocks(entry.update).missing(vector) is None
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(confirmed)
        doc.apply_update(entry.update)
        assert _fields(doc, store) == dict(await store.get("jobs", "j"))
        assert _fields(doc, store) == {
            "status": "open" if settle == "discard" else "on_hold",
            "notes": "Arrived. Leak fixed.",
        }
        assert [e.seq for e in await store.outbox.entries()] == [2, 3, 4]  # still their own


class TestLastWriteWins:
    @pytest.mark.asyncio
    async def test_latest_write_wins_whatever_the_order(self, tmp_path: Path) -> None:
        ca, cb = Clock(1000.0), Clock(1000.0)
        async with (
            await LocalStore.open(tmp_path / "a.db", lww={"jobs": "*"}, time_source=ca) as a,
            await LocalStore.open(tmp_path / "b.db", lww={"jobs": "*"}, time_source=cb) as b,
        ):
            async with a.edit("jobs", "j") as job:
                job["status"] = "open"
            await _exchange(a, b, "jobs", "j")
            cb.now += 5
            async with b.edit("jobs", "j") as job:
                job["status"] = "closed"  # later
            ca.now += 1
            async with a.edit("jobs", "j") as job:
                job["status"] = "on_hold"  # concurrent, earlier
            await _exchange(a, b, "jobs", "j")
            await _exchange(b, a, "jobs", "j")
            assert (await a.get("jobs", "j"))["status"] == "closed"
            assert (await b.get("jobs", "j"))["status"] == "closed"
            # A knows its write lost, to whom, and when.
            [conflict] = await a.conflicts("jobs", "j")
            assert (conflict.field, conflict.lost_value, conflict.won_value) == (
                "status",
                "on_hold",
                "closed",
            )
            assert conflict.won_ts.replica == b.replica_id
            assert "overwritten by 'closed'" in conflict.describe()

    @pytest.mark.asyncio
    async def test_the_clock_survives_restarts_and_never_goes_back(self, tmp_path: Path) -> None:
        clock = Clock(2000.0)
        path = tmp_path / "a.db"
        async with (
            await LocalStore.open(path, lww={"jobs": "*"}, time_source=clock) as s,
            s.edit("jobs", "j") as job,
        ):
            job["status"] = "first"
        clock.now = 1000.0  # the device clock was set back
        async with await LocalStore.open(path, lww={"jobs": "*"}, time_source=clock) as s:
            async with s.edit("jobs", "j") as job:
                job["status"] = "second"
            assert (await s.get("jobs", "j"))["status"] == "second"

    @pytest.mark.asyncio
    async def test_a_clock_far_ahead_cannot_win_forever(self, tmp_path: Path) -> None:
        good, bad = Clock(1000.0), Clock(1000.0 + 86400 * 365)
        async with (
            await LocalStore.open(tmp_path / "g.db", lww={"jobs": "*"}, time_source=good) as g,
            await LocalStore.open(tmp_path / "b.db", lww={"jobs": "*"}, time_source=bad) as b,
        ):
            async with b.edit("jobs", "j") as job:
                job["status"] = "from the future"
            await _exchange(b, g, "jobs", "j")
            await g.scan_conflicts()  # remote timestamps move the clock in the background
            assert g.skewed_timestamps == 1  # not adopted by the good clock
            good.now += 1
            async with g.edit("jobs", "j") as job:
                job["status"] = "fixed"  # made after seeing the skewed write: wins
            await _exchange(g, b, "jobs", "j")
            assert (await b.get("jobs", "j"))["status"] == "fixed"
            assert (await g.get("jobs", "j"))["status"] == "fixed"

    @pytest.mark.asyncio
    async def test_the_conflict_log_is_bounded(self, tmp_path: Path) -> None:
        ca, cb = Clock(1000.0), Clock(1000.0)
        async with (
            await LocalStore.open(
                tmp_path / "a.db", lww={"jobs": "*"}, time_source=ca, conflict_log_limit=5
            ) as a,
            await LocalStore.open(tmp_path / "b.db", lww={"jobs": "*"}, time_source=cb) as b,
        ):
            for i in range(12):
                ca.now += 1
                async with a.edit("jobs", "j") as job:
                    job["status"] = f"a{i}"
                cb.now += 2
                async with b.edit("jobs", "j") as job:
                    job["status"] = f"b{i}"
                await _exchange(b, a, "jobs", "j")
                await _exchange(a, b, "jobs", "j")
            log = await a.conflicts("jobs", "j")
            assert len(log) == 5
            assert log[-1].lost_value == "a11"


def _fields(doc: pycrdt.Doc[Any], store: LocalStore) -> dict[str, Any]:
    return read_fields(doc)


@pytest.mark.asyncio
async def test_cached_records_heal_updates_applied_out_of_order(tmp_path: Path) -> None:
    """pycrdt can drop an update applied before its dependency; the store must not."""
    async with await LocalStore.open(tmp_path / "a.db") as a:
        for step in range(4):
            async with a.edit("jobs", "j") as job:
                job[f"f{step}"] = step
                job.text("notes").insert(0, f"{step}é")
        updates = [e.update for e in await a.outbox.entries()]
        async with await LocalStore.open(tmp_path / "b.db") as b:
            await b.apply_remote([("jobs", "j", updates[0])])
            await b.get("jobs", "j")  # now cached
            for i in (2, 3, 1):
                await b.apply_remote([("jobs", "j", updates[i])])
            assert dict(await b.get("jobs", "j")) == dict(await a.get("jobs", "j"))


@pytest.mark.asyncio
async def test_state_vectors_in_one_batch_match_one_by_one(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "a.db") as a:
        for i in range(450):
            async with a.edit("jobs", f"j{i}") as job:
                job["n"] = i
        updates = [(e.collection, e.record_id, e.update) for e in await a.outbox.entries()]
        async with await LocalStore.open(tmp_path / "b.db") as b:
            await b.apply_remote(updates)  # stored vectors are now stale (NULL)
            await b.get("jobs", "j3")  # one of them cached
            keys = [("jobs", f"j{i}") for i in range(450)] + [("jobs", "missing")]
            batched = await b.state_vectors(keys)
            assert batched[-1] == b""
            assert batched[:-1] == [await a.state_vector(c, r) for c, r in keys[:-1]]
            assert batched[:-1] == [await b.state_vector(c, r) for c, r in keys[:-1]]


@pytest.mark.asyncio
async def test_state_vectors_never_claim_updates_that_wait_for_dependencies(
    tmp_path: Path,
) -> None:
    async with await LocalStore.open(tmp_path / "a.db") as a:
        for step in range(4):
            async with a.edit("jobs", "j") as job:
                job.text("notes").insert(0, f"{step}é")
        updates = [e.update for e in await a.outbox.entries()]
        async with await LocalStore.open(tmp_path / "b.db") as b:
            await b.apply_remote([("jobs", "j", updates[0]), ("jobs", "j", updates[2])])
            [batched] = await b.state_vectors([("jobs", "j")])
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.apply_update(updates[0])
            assert batched == doc.get_state()  # update 2 waits for update 1: not claimed
            await b.apply_remote([("jobs", "j", updates[1]), ("jobs", "j", updates[3])])
            [batched] = await b.state_vectors([("jobs", "j")])
            assert batched == await a.state_vector("jobs", "j")
