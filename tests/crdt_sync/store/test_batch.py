"""Edits durable together: LocalStore.batch() (crdt_sync/store/batch.py), on real files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from crdt_sync.errors import BatchError, RecordNotFound, StoreError
from crdt_sync.store import batch as batches
from crdt_sync.store.sqlite import LocalStore

pytestmark = pytest.mark.asyncio


def _on_disk(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def _create(store: LocalStore, count: int) -> None:
    for i in range(count):
        async with store.edit("jobs", f"j{i}") as job:
            job["n"] = -1


class _WriteLock:
    """Another connection holding the store's write lock until released."""

    def __init__(self, path: Path) -> None:
        self.db: sqlite3.Connection | None = sqlite3.connect(path, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            db.execute("ROLLBACK")
            db.close()


async def test_edits_in_a_batch_do_not_wait_for_their_commits_and_are_durable_at_its_exit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        await _create(store, 10)  # in memory: editing them needs no read on the store's thread
        lock = _WriteLock(path)
        try:
            async with store.batch():
                for i in range(100):  # outside a batch each would wait for the lock
                    async with store.edit("jobs", f"j{i % 10}") as job:
                        job["n"] = i
                assert _on_disk(path) == 10  # every edit returned, none could commit yet
                asyncio.get_running_loop().call_later(0.2, lock.release)
            assert _on_disk(path) == 110  # the exit waited for every commit
        finally:
            lock.release()
        assert (await store.get("jobs", "j9"))["n"] == 99
    async with await LocalStore.open(path) as reopened:
        assert [(await reopened.get("jobs", f"j{i}"))["n"] for i in range(10)] == list(
            range(90, 100)
        )


async def test_a_failed_commit_is_raised_at_the_exit_and_the_other_edits_are_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        async with store.edit("jobs", "seed") as job:
            job["n"] = -1
        await store.conn.execute("PRAGMA busy_timeout = 0")
        lock = _WriteLock(path)
        try:
            with pytest.raises(BatchError, match="locked") as raised:
                async with store.batch():
                    async with store.edit("jobs", "lost") as job:
                        job["n"] = 1
                    await store._writer.settled(("jobs", "lost"))  # its commit failed
                    lock.release()
                    async with store.edit("jobs", "kept") as job:
                        job["n"] = 2
        finally:
            lock.release()
        assert isinstance(raised.value, StoreError)
        assert (raised.value.failed, raised.value.edits) == ([("jobs", "lost")], 2)
        assert "jobs/lost" in str(raised.value)
        with pytest.raises(RecordNotFound):
            await store.get("jobs", "lost")  # not kept in memory either
        assert (await store.get("jobs", "kept"))["n"] == 2
    async with await LocalStore.open(path) as reopened:
        assert (await reopened.get("jobs", "kept"))["n"] == 2
        assert not await reopened.exists("jobs", "lost")


async def test_tasks_started_in_a_batch_join_it_and_an_inner_batch_is_part_of_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        await _create(store, 10)
        lock = _WriteLock(path)

        async def edit(record_id: str) -> None:
            async with store.edit("jobs", record_id) as job:
                job["n"] = 1

        try:
            async with store.batch():
                outer = batches.current(store)
                async with store.batch():
                    assert batches.current(store) is outer
                    await edit("j0")
                # the inner exit did not wait: nothing can commit while the lock is held
                await asyncio.gather(*(asyncio.create_task(edit(f"j{i}")) for i in range(10)))
                assert _on_disk(path) == 10
                asyncio.get_running_loop().call_later(0.1, lock.release)
            assert batches.current(store) is None
            assert _on_disk(path) == 21
        finally:
            lock.release()


async def test_the_edits_made_before_the_block_raised_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        with pytest.raises(ValueError, match="bad row"):
            async with store.batch():
                async with store.edit("jobs", "imported") as job:
                    job["n"] = 1
                raise ValueError("bad row")
        assert _on_disk(path) == 1  # each edit is its own transaction: it was committed
        async with store.edit("jobs", "after") as job:  # outside the batch: waits again
            job["n"] = 2
        assert _on_disk(path) == 2
