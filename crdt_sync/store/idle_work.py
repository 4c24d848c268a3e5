"""Background work on records that waits for the store to be idle.

Compacting a record's update log and scanning a record for conflicts both hold the store's
SQLite connection and the event loop for a while. An app whose user is typing, or a sync
streaming in thousands of updates, should not wait for them: :class:`IdleWork` keeps the
records that are due and works through them once the store has had no write for ``idle``
seconds, in batches, stopping as soon as a write comes in (the rest waits for the next pause).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from ..errors import InvalidState

__all__ = ["DEFAULT_IDLE", "IdleWork", "Key"]

log = logging.getLogger("crdt_sync.store")

Key = tuple[str, str]

#: Seconds without a write before due work runs.
DEFAULT_IDLE = 1.0


class IdleWork:
    """Due records, worked through in batches once the store is idle.

    Args:
        work: does the work for a batch of records; returns how many it did.
        what: what the work is, for the log ("compaction", "conflict scan").
        idle: seconds without a write (:meth:`wrote`) before due records are worked on.
        batch: records per call of ``work``.
    """

    def __init__(
        self,
        work: Callable[[list[Key]], Awaitable[int]],
        what: str,
        *,
        idle: float = DEFAULT_IDLE,
        batch: int = 1,
    ) -> None:
        self._work = work
        self._what = what
        self.idle = idle
        self.batch = batch
        self._due: dict[Key, None] = {}  # insertion-ordered set
        self._last_write = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[int] | None = None
        self._closed = False

    @property
    def due(self) -> list[Key]:
        """The records waiting."""
        return list(self._due)

    def is_due(self, key: Key) -> bool:
        """Whether ``key`` waits."""
        return key in self._due

    def add(self, keys: Iterable[Key]) -> None:
        """These records are due: work on them at the next pause."""
        self._due.update(dict.fromkeys(keys))
        if self._due:
            self._schedule(self.idle)

    def wrote(self) -> None:
        """A write committed: due work waits for another ``idle`` seconds of quiet."""
        self._last_write = asyncio.get_running_loop().time()

    def _quiet(self) -> float:
        return asyncio.get_running_loop().time() - self._last_write

    def _schedule(self, delay: float) -> None:
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        quiet = self._quiet()
        if quiet < self.idle:
            self._schedule(self.idle - quiet)
        elif self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> int:
        try:
            return await self.run_due(until_write=True)
        except InvalidState:
            return 0  # the store closed meanwhile
        except Exception:
            log.exception("background %s failed", self._what)
            return 0

    async def run_due(self, keys: Iterable[Key] | None = None, *, until_write: bool = False) -> int:
        """Work on the due records now (or on the due ones among ``keys``); with
        ``until_write``, stop at the first batch after a write (the rest is rescheduled).
        Returns how many were done."""
        wanted = list(self._due) if keys is None else [k for k in keys if k in self._due]
        done = 0
        while wanted and not self._closed:
            if until_write and self._quiet() < self.idle:
                self._schedule(self.idle)
                break
            batch, wanted = wanted[: self.batch], wanted[self.batch :]
            for key in batch:
                self._due.pop(key, None)
            try:
                done += await self._work(batch)
            except BaseException:
                self._due.update(dict.fromkeys(batch))  # not done: still due
                raise
        return done

    async def close(self) -> None:
        """Cancel the timer and wait for the work under way."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.wait([self._task])
