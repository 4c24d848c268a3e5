"""Compaction of the local store's long update logs, when the store is idle.

Each edit and each remote batch adds a row to a record's update log; reading the record from
disk merges them all. :class:`IdleCompactor` counts the rows added per record and, once a
record has gained ``every`` rows, compacts it (``LocalStore.compact``: confirmed rows merged
into the snapshot, crash-safe) after the store has had no write for ``idle`` seconds: a
compaction holds the store's write lock for its few statements, so it waits for a pause
rather than delaying an edit that is being typed or a batch that is streaming in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from ..errors import InvalidState, RecordNotFound

__all__ = ["DEFAULT_IDLE", "IdleCompactor"]

log = logging.getLogger("crdt_sync.store")

#: Seconds without a write before due compactions run.
DEFAULT_IDLE = 1.0


class IdleCompactor:
    """Schedules compactions of records whose logs grew by ``every`` rows.

    Args:
        compact: compacts one record (``LocalStore.compact``).
        every: rows added to a record before it is due.
        idle: seconds without a write (:meth:`wrote`) before due records are compacted.
    """

    def __init__(
        self,
        compact: Callable[[str, str], Awaitable[None]],
        every: int,
        idle: float = DEFAULT_IDLE,
    ) -> None:
        self._compact = compact
        self.every = every
        self.idle = idle
        self._added: dict[tuple[str, str], int] = {}
        self._due: dict[tuple[str, str], None] = {}  # insertion-ordered set
        self._last_write = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[int] | None = None
        self._closed = False

    @property
    def due(self) -> list[tuple[str, str]]:
        """The records waiting for a compaction."""
        return list(self._due)

    def rows_added(self, keys: Iterable[tuple[str, str]]) -> None:
        """A committed write added one row to each of these records' logs."""
        for key in keys:
            added = self._added.get(key, 0) + 1
            if added >= self.every:
                self._due[key] = None
                added = 0
            self._added[key] = added
        if self._due:
            self._schedule(self.idle)

    def wrote(self) -> None:
        """A write committed: due compactions wait for another ``idle`` seconds of quiet."""
        self._last_write = asyncio.get_running_loop().time()

    def _schedule(self, delay: float) -> None:
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        quiet = asyncio.get_running_loop().time() - self._last_write
        if quiet < self.idle:
            self._schedule(self.idle - quiet)
        elif self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> int:
        try:
            return await self.run_due()
        except InvalidState:
            return 0  # the store closed meanwhile
        except Exception:
            log.exception("background compaction failed")
            return 0

    async def run_due(self) -> int:
        """Compact every due record now. Returns how many were compacted."""
        done = 0
        while self._due and not self._closed:
            key = next(iter(self._due))
            del self._due[key]
            try:
                await self._compact(*key)
            except RecordNotFound:
                continue
            done += 1
        return done

    async def close(self) -> None:
        """Cancel the timer and wait for a running compaction."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.wait([self._task])
