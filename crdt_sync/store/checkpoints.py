"""WAL checkpoints of the local store, off the commit path.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold: that commit
copies the WAL into the database file and fsyncs it, which makes one edit in a thousand take
tens of milliseconds. The store turns the automatic checkpoint off on its connection and
calls :meth:`Checkpointer.committed` after each group commit; every ``every`` commits a
PASSIVE checkpoint (it never blocks readers or writers) runs on a connection of its own, in
the background. The relay's storage does the same (``server/storage.py``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiosqlite

__all__ = ["DEFAULT_CHECKPOINT_EVERY", "Checkpointer"]

log = logging.getLogger("crdt_sync.store")

#: Group commits between background checkpoints.
DEFAULT_CHECKPOINT_EVERY = 128


class Checkpointer:
    """Runs a PASSIVE WAL checkpoint of ``path`` every ``every`` commits, in the background.

    Args:
        path: the store file (its ``-wal`` is checkpointed).
        every: commits between checkpoints.
    """

    def __init__(self, path: Path, every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        self.path = path
        self.every = every
        #: Checkpoints completed (for tests and benchmarks).
        self.runs = 0
        self._commits = 0
        self._conn: aiosqlite.Connection | None = None
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
                self._checkpoint(), name=f"checkpoint {self.path}"
            )

    async def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = await aiosqlite.connect(self.path, isolation_level=None)
                await self._conn.execute("PRAGMA busy_timeout = 5000")
            # Its result row read in full: no statement left running on the connection.
            await self._conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            self.runs += 1
        except aiosqlite.Error:
            log.exception("%s: WAL checkpoint failed (retried later)", self.path)

    async def close(self) -> None:
        """Wait for a running checkpoint and close the checkpoint connection."""
        self._closed = True
        if self._task is not None:
            await asyncio.wait([self._task])
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
