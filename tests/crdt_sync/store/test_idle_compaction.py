"""Compaction of long update logs when the store is idle, against real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from crdt_sync.store.idle_compaction import IdleCompactor
from crdt_sync.store.sqlite import COMPACT_MIN_ROWS, LocalStore

pytestmark = pytest.mark.asyncio


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM updates").fetchone()[0])


async def _source_updates(tmp_path: Path, count: int) -> list[bytes]:
    """``count`` successive remote updates of record jobs/j (a growing note)."""
    updates = []
    async with await LocalStore.open(tmp_path / "source.db") as source:
        vector = b"\x00"
        for i in range(count):
            async with source.edit("jobs", "j") as job:
                job.text("notes").insert(i, "x")
            updates.append(await source.encode_state("jobs", "j", vector))
            vector = await source.state_vector("jobs", "j")
    return updates


async def test_a_record_whose_log_grew_is_compacted_and_reads_the_same(tmp_path: Path) -> None:
    updates = await _source_updates(tmp_path, COMPACT_MIN_ROWS + 3)
    path = tmp_path / "replica.db"
    async with await LocalStore.open(path) as store:
        for update in updates:  # one remote batch each: one row each
            await store.apply_remote([("jobs", "j", update)])
        async with store.edit("jobs", "other") as job:  # not due: one row
            job["n"] = 1
        assert store._compactor.due == [("jobs", "j")]
        assert _rows(path) == COMPACT_MIN_ROWS + 4
        before = await store.get("jobs", "j")
        assert await store.compact_due() == 1
        assert store._compactor.due == []
        assert _rows(path) == 1  # all of j's confirmed rows merged; "other" is pending
    async with await LocalStore.open(path) as reopened:
        after = await reopened.get("jobs", "j")
        assert after.fields == before.fields and after.state_vector == before.state_vector
        assert after["notes"] == "x" * (COMPACT_MIN_ROWS + 3)


async def test_due_compactions_wait_for_the_writes_to_pause(tmp_path: Path) -> None:
    compacted: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def compact(collection: str, record_id: str) -> None:
        compacted.append((collection, record_id))
        done.set()

    compactor = IdleCompactor(compact, every=3, idle=0.05)
    compactor.rows_added([("jobs", "a")] * 3)  # due now
    for _ in range(6):  # keep writing for ~3 idle periods
        compactor.wrote()
        await asyncio.sleep(0.025)
        assert compacted == []
    async with asyncio.timeout(5):
        await done.wait()  # quiet: it runs
    assert compacted == [("jobs", "a")]
    await compactor.close()
