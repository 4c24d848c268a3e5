"""The WAL checkpointer both SQLite drivers share (store and relay storage)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from crdt_sync.store.checkpoints import Checkpointer

pytestmark = pytest.mark.asyncio


def _wal_database(path: Path, rows: int) -> sqlite3.Connection:
    """A WAL database with ``rows`` committed rows still in its WAL (auto-checkpoint off)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (n INTEGER)")
    for n in range(rows):
        db.execute("INSERT INTO t VALUES (?)", (n,))
    return db


def _rows_in_main_file(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        except sqlite3.OperationalError:  # the table itself is still only in the WAL
            return 0


async def test_a_checkpoint_starts_every_n_commits_and_copies_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    writer = _wal_database(path, 10)
    checkpointer = Checkpointer(path, every=4)
    try:
        for _ in range(3):
            checkpointer.committed()
        assert checkpointer._task is None  # not due yet
        checkpointer.committed()
        assert checkpointer._task is not None
        await asyncio.wait_for(checkpointer._task, 10)
        assert (checkpointer.runs, checkpointer.failures) == (1, 0)
        assert _rows_in_main_file(path) == 10
    finally:
        await checkpointer.close()
        writer.close()


async def test_a_failed_checkpoint_is_counted_and_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database " * 100)
    checkpointer = Checkpointer(path, every=1)
    with caplog.at_level(logging.ERROR, logger="crdt_sync.store"):
        await checkpointer.checkpoint()
        await checkpointer.checkpoint()
    await checkpointer.close()
    assert (checkpointer.runs, checkpointer.failures) == (0, 2)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: WAL checkpoint failed (retried later)"
    ] * 2


async def test_a_shared_connection_stays_open_and_usable_after_close(tmp_path: Path) -> None:
    # The relay storage checkpoints on the connection its compaction reads with: the
    # checkpointer must leave no statement running on it, and must not close it.
    path = tmp_path / "db.sqlite3"
    writer = _wal_database(path, 5)
    conn = await aiosqlite.connect(path, isolation_level=None)
    checkpointer = Checkpointer(path, every=1, connection=conn)
    try:
        await checkpointer.checkpoint()
        await conn.execute("BEGIN")
        rows = await conn.execute_fetchall("SELECT COUNT(*) FROM t")
        await conn.execute("COMMIT")  # fails if the checkpoint left its statement unfinished
        assert next(iter(rows))[0] == 5
        await checkpointer.close()
        rows = await conn.execute_fetchall("SELECT COUNT(*) FROM t")
        assert next(iter(rows))[0] == 5
        assert checkpointer.runs == 1
    finally:
        await conn.close()
        writer.close()


async def test_no_checkpoint_runs_after_close(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    writer = _wal_database(path, 3)
    conn = await aiosqlite.connect(path, isolation_level=None)
    checkpointer = Checkpointer(path, every=1, connection=conn)
    await checkpointer.close()
    await conn.close()  # its owner closes the shared connection after the checkpointer
    checkpointer.committed()
    assert checkpointer._task is None
    await checkpointer.checkpoint()  # neither raises on the closed connection nor runs
    assert (checkpointer.runs, checkpointer.failures) == (0, 0)
    assert _rows_in_main_file(path) == 0
    writer.close()


async def test_a_wal_past_its_limit_is_copied_back_and_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PASSIVE checkpoint leaves the WAL file as large as it grew (and under a steady stream
    of commits it never restarts: a 10 MB store grew a 370 MB WAL importing 10,000 records);
    past the limit the checkpointer waits for the writer's transaction and truncates it."""
    import crdt_sync.store.checkpoints as checkpoints

    path = tmp_path / "db.sqlite3"
    writer = _wal_database(path, 0)
    writer.execute("CREATE TABLE blob (b BLOB)")
    for _ in range(120):
        writer.execute("INSERT INTO blob VALUES (randomblob(20000))")
    wal = Path(f"{path}-wal")
    checkpointer = Checkpointer(path, every=1)
    try:
        size = wal.stat().st_size  # noqa: ASYNC240
        assert size >= 2 * 2**20
        monkeypatch.setattr(checkpoints, "WAL_RESTART_BYTES", 2**30)
        await checkpointer.checkpoint()  # PASSIVE only: copied back, the file keeps its size
        assert wal.stat().st_size == size  # noqa: ASYNC240
        monkeypatch.setattr(checkpoints, "WAL_RESTART_BYTES", 2**20)
        writer.execute("INSERT INTO blob VALUES (randomblob(20000))")
        await checkpointer.checkpoint()
        assert wal.stat().st_size == 0  # noqa: ASYNC240
        assert checkpointer.failures == 0
        assert writer.execute("SELECT COUNT(*) FROM blob").fetchone()[0] == 121
    finally:
        await checkpointer.close()
        writer.close()
