"""WAL checkpoints off the commit path, for the local store and the relay's SQLite storage.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold: that commit
copies the WAL into the database file and fsyncs it, which makes one edit in a thousand take
tens of milliseconds. Both SQLite drivers turn the automatic checkpoint off on their writer
connection and call :meth:`Checkpointer.committed` after each group commit; every ``every``
commits a PASSIVE checkpoint (it never blocks readers or writers) runs on a connection other
than the writer's, in the background.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path

import aiosqlite

from .sqlite_thread import on_thread

__all__ = ["DEFAULT_CHECKPOINT_EVERY", "WAL_RESTART_BYTES", "Checkpointer"]

log = logging.getLogger("crdt_sync.store")

#: Group commits between background checkpoints.
DEFAULT_CHECKPOINT_EVERY = 128

#: A WAL larger than this after a background checkpoint is copied back and truncated.
WAL_RESTART_BYTES = 64 * 2**20


class Checkpointer:
    """Runs a PASSIVE WAL checkpoint of ``path`` every ``every`` commits, in the background.

    Args:
        path: the database file (its ``-wal`` is checkpointed).
        every: commits between checkpoints.
        connection: the connection to checkpoint on; its owner closes it. Without one, the
            checkpointer opens its own on the first checkpoint and closes it in :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        every: int = DEFAULT_CHECKPOINT_EVERY,
        *,
        connection: aiosqlite.Connection | None = None,
    ) -> None:
        self.path = path
        self.every = every
        #: Checkpoints completed, and checkpoints that failed (each one is logged; the WAL is
        #: checkpointed again ``every`` commits later).
        self.runs = 0
        self.failures = 0
        self._commits = 0
        self._conn = connection
        self._owns_conn = connection is None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def committed(self) -> None:
        """A group commit landed; start a checkpoint if one is due and none is running."""
        self._commits += 1
        if self._commits < self.every or self._closed:
            return
        if self._task is None or self._task.done():
            self._commits = 0
            self._task = asyncio.get_running_loop().create_task(
                self.checkpoint(), name=f"checkpoint {self.path}"
            )

    async def checkpoint(self) -> None:
        """Checkpoint now (the background task's step; tests and maintenance call it too).

        Does nothing once :meth:`close` ran: a shared connection may be closed by then."""
        if self._closed and self._task is not asyncio.current_task():
            return
        try:
            if self._conn is None:
                self._conn = await aiosqlite.connect(self.path, isolation_level=None)
                await self._conn.execute("PRAGMA busy_timeout = 5000")
            await on_thread(self._conn, _checkpoint_in_thread, self.path)
            self.runs += 1
        except aiosqlite.Error:
            self.failures += 1
            log.exception("%s: WAL checkpoint failed (retried later)", self.path)

    async def close(self) -> None:
        """Wait for a running checkpoint; close the connection if the checkpointer opened it."""
        self._closed = True
        if self._task is not None:
            await asyncio.wait([self._task])
        if self._conn is not None and self._owns_conn:
            conn, self._conn = self._conn, None
            await conn.close()


def _checkpoint_in_thread(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA wal_checkpoint(PASSIVE)`` with its result row read: a statement left unfinished
    keeps a read snapshot open on the connection, and a connection shared with other work (the
    relay's compaction reads) then fails its next COMMIT."""
    busy = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][0]
    try:
        size = os.path.getsize(f"{path}-wal")
    except OSError:
        return
    if busy == 0 and size > WAL_RESTART_BYTES:
        # A PASSIVE checkpoint never waits, so under a steady stream of commits the WAL is
        # never entirely copied back, never restarts, and grows without bound (a 10 MB store
        # grew a 370 MB WAL importing 10,000 records), and a restarted WAL keeps its size.
        # Past the limit, this one waits (busy timeout) for the transaction under way, copies
        # everything and truncates the file: the writer waits for that copy once per
        # WAL_RESTART_BYTES written.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
