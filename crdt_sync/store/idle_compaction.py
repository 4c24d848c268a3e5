"""Compaction of the local store's long update logs, when the store is idle.

Each edit and each remote batch adds a row to a record's update log; reading the record from
disk merges them all. :class:`IdleCompactor` counts the rows added per record and, once a
record has gained ``every`` rows, compacts it (``LocalStore.compact``: confirmed rows merged
into the snapshot, crash-safe) after the store has had no write for ``idle`` seconds
(:class:`~crdt_sync.store.idle_work.IdleWork`): a compaction holds the store's write lock for
its few statements, so it waits for a pause rather than delaying an edit that is being typed
or a batch that is streaming in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from ..errors import RecordNotFound
from .idle_work import DEFAULT_IDLE, IdleWork, Key

__all__ = ["DEFAULT_IDLE", "IdleCompactor"]


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
        self._added: dict[Key, int] = {}
        self._work = IdleWork(self._compact_batch, "compaction", idle=idle)

    @property
    def idle(self) -> float:
        """Seconds without a write before due records are compacted."""
        return self._work.idle

    @property
    def due(self) -> list[Key]:
        """The records waiting for a compaction."""
        return self._work.due

    def rows_added(self, keys: Iterable[Key]) -> None:
        """A committed write added one row to each of these records' logs."""
        due = []
        for key in keys:
            added = self._added.get(key, 0) + 1
            if added >= self.every:
                due.append(key)
                added = 0
            self._added[key] = added
        if due:
            self._work.add(due)

    def wrote(self) -> None:
        """A write committed: due compactions wait for another ``idle`` seconds of quiet."""
        self._work.wrote()

    async def _compact_batch(self, keys: list[Key]) -> int:
        done = 0
        for key in keys:
            try:
                await self._compact(*key)
            except RecordNotFound:
                continue
            done += 1
        return done

    async def run_due(self) -> int:
        """Compact every due record now. Returns how many were compacted."""
        return await self._work.run_due()

    async def close(self) -> None:
        """Cancel the timer and wait for a running compaction."""
        await self._work.close()
