"""Group commit of the local store, against real SQLite files.

The writer alone (:class:`GroupCommit`): grouping, per-write outcomes, failures that spread to
later writes of the same record, a group that cannot commit. Then the store on top of it:
concurrent edits share commits and stay in order, a failed commit loses nothing committed and
keeps nothing uncommitted, readers see what was written, the in-memory outbox counts match
the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
import pytest_asyncio

from crdt_sync.errors import StoreError
from crdt_sync.outbox import OutboxEntry
from crdt_sync.store.group_commit import GroupCommit, Key
from crdt_sync.store.sqlite import LocalStore

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    db = await aiosqlite.connect(tmp_path / "w.db", isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("CREATE TABLE t (k TEXT, v INTEGER)")
    yield db
    await db.close()


def _insert(key: str, value: int) -> object:
    def body(db: sqlite3.Connection) -> int:
        return db.execute("INSERT INTO t VALUES (?, ?)", (key, value)).lastrowid or 0

    return body


def _boom(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO t VALUES ('boom', -1)")
    raise ValueError("boom")


async def _rows(conn: aiosqlite.Connection) -> list[tuple[str, int]]:
    return [(r[0], r[1]) for r in await conn.execute_fetchall("SELECT k, v FROM t ORDER BY rowid")]


async def test_writes_submitted_together_share_one_commit_in_order(
    conn: aiosqlite.Connection,
) -> None:
    writer = GroupCommit(conn, "w.db")
    futures = [writer.submit(_insert("a", i), [("c", "a")]) for i in range(50)]  # type: ignore[arg-type]
    results = await asyncio.gather(*futures)
    assert results == list(range(1, 51))  # rowids: run in submission order
    assert writer.groups == 1 and writer.writes == 50
    assert await _rows(conn) == [("a", i) for i in range(50)]
    assert not writer.in_flight(("c", "a"))


async def test_a_failing_write_fails_alone_and_takes_later_writes_of_its_records(
    conn: aiosqlite.Connection,
) -> None:
    failed: list[set[Key]] = []
    writer = GroupCommit(conn, "w.db", on_failed=failed.append)
    first = writer.submit(_insert("x", 1), [("c", "x")])  # type: ignore[arg-type]
    bad = writer.submit(_boom, [("c", "x")])
    after_bad = writer.submit(_insert("x", 2), [("c", "x")])  # type: ignore[arg-type]
    other = writer.submit(_insert("y", 3), [("c", "y")])  # type: ignore[arg-type]
    done = await asyncio.gather(first, bad, after_bad, other, return_exceptions=True)
    assert done[0] == 1 and done[3] == 2
    assert isinstance(done[1], ValueError)
    assert isinstance(done[2], StoreError) and "c/x" in str(done[2])
    assert failed == [{("c", "x")}]
    # The failing write's own statement was undone with its savepoint.
    assert await _rows(conn) == [("x", 1), ("y", 3)]


async def test_a_failure_fails_writes_of_the_record_queued_for_the_next_group(
    conn: aiosqlite.Connection,
) -> None:
    writer = GroupCommit(conn, "w.db")
    bad = writer.submit(_boom, [("c", "x")])
    await asyncio.sleep(0)  # the group with `bad` starts; the next writes queue behind it
    queued = writer.submit(_insert("x", 2), [("c", "x")])  # type: ignore[arg-type]
    other = writer.submit(_insert("y", 3), [("c", "y")])  # type: ignore[arg-type]
    done = await asyncio.gather(bad, queued, other, return_exceptions=True)
    assert isinstance(done[0], ValueError)
    assert isinstance(done[1], StoreError)
    assert done[2] == 1
    assert writer.groups == 2
    assert await _rows(conn) == [("y", 3)]


async def test_a_group_that_cannot_commit_fails_every_write_then_the_writer_recovers(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    await conn.execute("PRAGMA busy_timeout = 0")
    writer = GroupCommit(conn, "w.db")
    blocker = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        futures = [writer.submit(_insert("a", i)) for i in range(3)]  # type: ignore[arg-type]
        done = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(d, StoreError) and "locked" in str(d) for d in done), done
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await writer.submit(_insert("b", 1)) == 1  # type: ignore[arg-type]
    assert await _rows(conn) == [("b", 1)]


async def test_a_lazy_write_goes_with_the_next_write_or_on_its_own_soon(
    conn: aiosqlite.Connection,
) -> None:
    writer = GroupCommit(conn, "w.db")
    lazy = writer.submit(_insert("lazy", 1), lazy=True)  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    assert not lazy.done() and writer.groups == 0  # waiting for company
    urgent = writer.submit(_insert("urgent", 2))  # type: ignore[arg-type]
    assert await asyncio.gather(lazy, urgent) == [1, 2]
    assert writer.groups == 1  # one commit for both, in submission order
    alone = writer.submit(_insert("alone", 3), lazy=True)  # type: ignore[arg-type]
    assert await asyncio.wait_for(alone, 5) == 3  # on its own after LAZY_DELAY
    assert writer.groups == 2
    waiting = writer.submit(_insert("drained", 4), lazy=True)  # type: ignore[arg-type]
    await writer.drain()  # does not wait for the delay
    assert waiting.done()
    assert await _rows(conn) == [("lazy", 1), ("urgent", 2), ("alone", 3), ("drained", 4)]


async def test_concurrent_edits_share_commits_and_keep_their_order(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        async with store.edit("jobs", "j") as job:
            job.text("notes")
        groups = store._writer.groups

        async def append(i: int) -> None:
            async with store.edit("jobs", "j") as job:
                job.text("notes").insert(i, str(i % 10))

        await asyncio.gather(*(append(i) for i in range(200)))
        assert store._writer.groups - groups < 20  # 200 edits, a handful of commits
        seqs = [e.seq for e in await store.outbox.entries()]
        assert seqs == sorted(seqs) and len(seqs) == 201
    expected = "".join(str(i % 10) for i in range(200))
    async with await LocalStore.open(path) as reopened:  # every edit is on disk
        assert (await reopened.get("jobs", "j"))["notes"] == expected
        assert await reopened.outbox.counts() == (201, 0)


async def test_an_edit_whose_commit_fails_is_not_kept_and_later_edits_work(
    tmp_path: Path,
) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        async with store.edit("jobs", "j") as job:
            job["status"] = "open"
        await store.conn.execute("PRAGMA busy_timeout = 0")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                async with store.edit("jobs", "j") as job:
                    job["status"] = "lost"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await store.get("jobs", "j"))["status"] == "open"  # reloaded from disk
        assert await store.outbox.counts() == (1, 0)
        async with store.edit("jobs", "j") as job:
            job["status"] = "done"
        assert (await store.get("jobs", "j"))["status"] == "done"
    async with await LocalStore.open(path) as reopened:
        assert (await reopened.get("jobs", "j"))["status"] == "done"
        assert await reopened.outbox.counts() == (2, 0)


async def test_readers_between_writes_never_go_back_in_time(tmp_path: Path) -> None:
    # A one-document cache: records are evicted and reloaded from disk while their writes
    # are in flight. A reader must never cache (or return) a state older than one it saw.
    async with await LocalStore.open(tmp_path / "replica.db", cache_size=1) as store:
        for record_id in ("a", "b"):
            async with store.edit("jobs", record_id) as job:
                job["n"] = 0
        seen: dict[str, list[int]] = {"a": [], "b": []}

        async def bump(record_id: str, n: int) -> None:
            async with store.edit("jobs", record_id) as job:
                job["n"] = n

        async def read(record_id: str) -> None:
            seen[record_id].append((await store.get("jobs", record_id))["n"])

        work = []
        for n in range(1, 60):
            record_id = "ab"[n % 2]
            work.append(bump(record_id, n))
            work.append(read("ab"[(n + 1) % 2]))
            work.append(read(record_id))
        await asyncio.gather(*work)
        for record_id, values in seen.items():
            assert values == sorted(values), (record_id, values)
        assert (await store.get("jobs", "a"))["n"] == 58
        assert (await store.get("jobs", "b"))["n"] == 59


async def test_outbox_counts_in_memory_match_the_file(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        for i in range(12):
            async with store.edit("jobs", f"j{i % 4}") as job:
                job["n"] = i
        entries = await store.outbox.entries()
        await store.outbox.mark_uploading([e.seq for e in entries[:6]])
        await store.outbox.acknowledge([entries[0].seq, entries[1].seq, 999])
        await store.outbox.mark_error(entries[2].seq, "rejected", "closed")
        await store.outbox.mark_error(entries[2].seq, "rejected", "still closed")  # again
        await store.outbox.mark_error(entries[3].seq, "rejected", "closed")
        await store.outbox.discard(entries[3].seq)
        await store.outbox.acknowledge([entries[2].seq])  # an errored entry acked anyway
        await store.outbox.acknowledge_upto(entries[7].seq)
        tally = store.outbox.tally()
    with sqlite3.connect(path) as db:
        total, errors = db.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'error') FROM outbox"
        ).fetchone()
    assert tally == (total, errors) == (4, 0)


async def test_new_entries_are_announced_after_their_commit_in_seq_order(
    tmp_path: Path,
) -> None:
    async with await LocalStore.open(tmp_path / "replica.db") as store:
        seen: list[OutboxEntry] = []
        on_disk: list[bool] = []

        def queued(entry: OutboxEntry) -> None:
            seen.append(entry)
            with sqlite3.connect(store.path) as db:  # committed before it is announced
                found = db.execute("SELECT 1 FROM outbox WHERE seq = ?", (entry.seq,)).fetchone()
            on_disk.append(found is not None)

        unsubscribe = store.outbox.on_queued(queued)

        async def edit(i: int) -> None:
            async with store.edit("jobs", f"j{i}") as job:
                job["n"] = i

        await asyncio.gather(*(edit(i) for i in range(30)))
        unsubscribe()
        async with store.edit("jobs", "after") as job:
            job["n"] = -1
        assert [e.record_id for e in seen] == [f"j{i}" for i in range(30)]
        assert [e.seq for e in seen] == sorted(e.seq for e in seen)
        assert all(on_disk)
        assert [e.update for e in seen] == [e.update for e in (await store.outbox.entries())[:30]]


async def test_remote_updates_and_their_cursor_commit_together(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as source:
        async with source.edit("jobs", "j") as job:
            job["status"] = "open"
        update = await source.encode_state("jobs", "j")
    async with await LocalStore.open(tmp_path / "other.db") as store:
        keys = await store.apply_remote([("jobs", "j", update)], {"sync.cursor": "42"})
        assert keys == [("jobs", "j")]
        assert await store.get_setting("sync.cursor") == "42"
        assert (await store.get("jobs", "j"))["status"] == "open"
        await store.conn.execute("PRAGMA busy_timeout = 0")
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError):
                await store.apply_remote([("jobs", "k", update)], {"sync.cursor": "43"})
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await store.get_setting("sync.cursor") == "42"  # neither was written
        assert not await store.exists("jobs", "k")


async def test_wal_is_checkpointed_in_the_background_not_in_commits(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        rows = await store.conn.execute_fetchall("PRAGMA wal_autocheckpoint")
        assert next(iter(rows))[0] == 0  # never inside a commit
        every = store._checkpointer.every
        for i in range(every + 5):  # one group commit each
            async with store.edit("jobs", f"j{i}") as job:
                job["n"] = i
        running = store._checkpointer._task  # started after the `every`-th commit
        assert running is not None
        await asyncio.wait_for(running, 10)
        assert store._checkpointer.runs >= 1
        # The database file itself (the WAL ignored) holds what was checkpointed.
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as db:
            copied = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        assert copied >= every


async def _remote_records(
    tmp_path: Path, count: int
) -> tuple[list[tuple[str, str, bytes]], list[bytes]]:
    """``count`` records made on another store: their states (as remote updates) and state
    vectors."""
    async with await LocalStore.open(tmp_path / "source.db") as source:
        for i in range(count):
            async with source.edit("jobs", f"j{i}") as job:
                job["n"] = i
        keys = [("jobs", f"j{i}") for i in range(count)]
        updates = [(c, r, await source.encode_state(c, r)) for c, r in keys]
        return updates, await source.state_vectors(keys)


async def test_state_vectors_left_unknown_by_remote_updates_are_recomputed_when_quiet(
    tmp_path: Path,
) -> None:
    updates, expected = await _remote_records(tmp_path, 5)
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path, cache_size=0) as store:
        await store.apply_remote(updates)  # nothing in memory: the column is left NULL
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(state_vector) FROM records").fetchone()[0] == 0
        assert store._refresher is not None  # in the background once updates stop coming
        assert await store.refresh_state_vectors() == 5  # or now
        assert await store.refresh_state_vectors() == 0
        await store._writer.drain()
        with sqlite3.connect(path) as db:
            stored = dict(db.execute("SELECT id, state_vector FROM records").fetchall())
    assert [stored[f"j{i}"] for i in range(5)] == expected


async def test_unknown_state_vectors_of_records_in_memory_are_stored_when_read(
    tmp_path: Path,
) -> None:
    # Records read into memory after remote updates left their column NULL: the background
    # refresh (or a catch-up) answers from the documents and stores what it answered, so the
    # next catch-up reads the column instead of merging every row again.
    updates, expected = await _remote_records(tmp_path, 6)
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        await store.apply_remote(updates)  # not in memory: the column is left NULL
        for i in range(3):
            await store.get("jobs", f"j{i}")  # now in memory
        keys = [("jobs", f"j{i}") for i in range(6)]
        assert await store.state_vectors(keys) == expected
        await store._writer.drain()
        with sqlite3.connect(path) as db:
            stored = dict(db.execute("SELECT id, state_vector FROM records").fetchall())
        assert [stored[f"j{i}"] for i in range(6)] == expected
        assert await store.state_vectors(keys[:0]) == []


async def test_remote_updates_can_be_raised_before_their_commit(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "source.db") as source:
        async with source.edit("jobs", "j") as job:
            job["status"] = "open"
        first = await source.encode_state("jobs", "j")
        async with source.edit("jobs", "j") as job:
            job["status"] = "done"
        second = await source.encode_state("jobs", "j")
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        outcomes: list[BaseException | None] = []
        await store.apply_remote([("jobs", "j", first)], on_committed=outcomes.append)
        assert (await store.get("jobs", "j"))["status"] == "open"  # waited for the commit
        assert outcomes == [None]
        await store.conn.execute("PRAGMA busy_timeout = 0")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            keys = await store.apply_remote(
                [("jobs", "j", second)], {"sync.cursor": "2"}, on_committed=outcomes.append
            )
            assert keys == [("jobs", "j")] and len(outcomes) == 1  # not committed yet
            # A cursor queued behind the failing write would claim its updates: it fails too.
            later = store.set_setting_lazily("sync.cursor", "3")
            done = await asyncio.gather(later, return_exceptions=True)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert isinstance(outcomes[1], StoreError) and isinstance(done[0], StoreError)
        assert (await store.get("jobs", "j"))["status"] == "open"  # not kept in memory either
        assert await store.get_setting("sync.cursor") is None


async def test_a_caller_that_stops_waiting_does_not_stop_the_writer(
    conn: aiosqlite.Connection,
) -> None:
    writer = GroupCommit(conn, "w.db")
    abandoned = writer.submit(_boom, [("c", "x")])
    abandoned.cancel()  # e.g. an awaiting task was cancelled
    later = writer.submit(_insert("y", 1), [("c", "y")])  # type: ignore[arg-type]
    assert await asyncio.wait_for(later, 5) == 1
    assert await writer.submit(_insert("z", 2)) == 2  # type: ignore[arg-type]
