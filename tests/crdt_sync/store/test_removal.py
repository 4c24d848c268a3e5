"""Dropping records from a real local store: every per-record row goes, the outbox never;
a record with unsynced changes is kept, remembered, and dropped once acknowledged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from crdt_sync.client.sync_run import CURSOR_SETTING
from crdt_sync.client.working_set import DROP_AFTER_ACK_SETTING, WorkingSet

from crdt_sync.store.removal import PER_RECORD_TABLES
from crdt_sync.store.sqlite import LocalStore


async def _rows(path: Path, record: tuple[str, str]) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(
                f'SELECT COUNT(*) FROM "{table}" WHERE collection = ? AND id = ?', record
            ).fetchone()[0]
            for table in [*PER_RECORD_TABLES, "outbox"]
        }


@pytest.mark.asyncio
async def test_drop_records_removes_every_row_but_keeps_pending_ones(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with await LocalStore.open(path) as store:
        for rid in ("a", "b"):
            async with store.edit("jobs", rid) as job:
                job["status"] = "open"
        await store.outbox.acknowledge_upto(10**9)  # a's and b's edits reached the relay
        async with store.edit("jobs", "b") as job:  # b has an unsynced change
            job["status"] = "done"
        await store.compact("jobs", "a")
        assert await store.drop_records([("jobs", "a"), ("jobs", "b"), ("jobs", "zz")]) == [
            ("jobs", "b")
        ]
        assert not await store.exists("jobs", "a")
        assert (await store.get("jobs", "b"))["status"] == "done"
        assert await store.outbox.count() == 1
    assert set((await _rows(path, ("jobs", "a"))).values()) == {0}
    assert (await _rows(path, ("jobs", "b")))["outbox"] == 1


@pytest.mark.asyncio
async def test_a_dropped_record_with_pending_changes_goes_once_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    async with await LocalStore.open(path) as store:
        async with store.edit("jobs", "a") as job:
            job["status"] = "open"
        entry = (await store.outbox.entries())[0]
        working = WorkingSet(store, None, None, CURSOR_SETTING)
        assert await working.drop([("jobs", "a")]) == []  # kept: unsynced
        assert await store.exists("jobs", "a")
    async with await LocalStore.open(path) as store:  # remembered across a restart
        assert await store.get_setting(DROP_AFTER_ACK_SETTING) == '[["jobs", "a"]]'
        working = WorkingSet(store, None, None, CURSOR_SETTING)
        assert await working.acknowledged() == []  # still pending
        await store.outbox.acknowledge([entry.seq])
        assert await working.acknowledged() == [("jobs", "a")]
        assert not await store.exists("jobs", "a")
        assert await store.get_setting(DROP_AFTER_ACK_SETTING) == "[]"


@pytest.mark.asyncio
async def test_a_record_sent_again_is_not_dropped_after_its_ack(tmp_path: Path) -> None:
    async with await LocalStore.open(tmp_path / "r.db") as store:
        async with store.edit("jobs", "a") as job:
            job["status"] = "open"
        working = WorkingSet(store, None, None, CURSOR_SETTING)
        await working.drop([("jobs", "a")])
        working.kept_again([("jobs", "a")])
        await store.outbox.acknowledge_upto(10**9)
        assert await working.acknowledged() == []
        assert await store.exists("jobs", "a")
