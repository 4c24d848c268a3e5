"""The replica's sync status as a value, and the feed that publishes its changes.

:class:`Status` is what an app shows in a banner: ``state`` (``offline``, ``connecting``,
``syncing``, ``online``), progress while syncing (records and bytes done/total), the number of
outbox entries waiting, the time of the last successful sync, and the last connection error.
It is immutable; every change publishes a new one.

:class:`StatusFeed` holds the current status (``feed.current``) and delivers each new one to
callbacks (``feed.subscribe(callback)``, called synchronously, in order) and to async
iterators (``async for status in feed.changes(): ...``). A feed never publishes a status equal
to the current one, so consumers see changes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from .session import SessionState, public_state

__all__ = ["Progress", "Status", "StatusFeed"]

log = logging.getLogger("crdt_sync.client")


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the current sync is: records (outbox entries and downloaded records) and bytes.

    Totals grow as the relay announces more work (``changed`` frames), so ``done <= total``
    always holds but ``total`` is not final until the sync completes.
    """

    records_done: int = 0
    records_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0

    @property
    def fraction(self) -> float:
        """Records done / total (1.0 when there is nothing to do)."""
        return 1.0 if self.records_total == 0 else self.records_done / self.records_total


@dataclass(frozen=True, slots=True)
class Status:
    """The replica's sync status at one moment.

    Attributes:
        session: the detailed connection state (:class:`SessionState`).
        progress: the current sync's progress (meaningful while ``state == "syncing"``).
        pending: outbox entries not yet acknowledged by the relay (queued, uploading or error).
        errors: outbox entries the relay refused, waiting for resolve/discard.
        held: outbox entries (not in error) that wait behind an earlier entry of their record
            in error: they go up once it is resolved or discarded.
        last_synced_at: Unix time of the last completed sync (upload + download), or None.
        last_error: the code of the last connection error (``token_expired``,
            ``connection_lost``...), or None.
    """

    session: SessionState = SessionState.OFFLINE
    progress: Progress = Progress()
    pending: int = 0
    errors: int = 0
    last_synced_at: float | None = None
    last_error: str | None = None
    held: int = 0

    @property
    def state(self) -> str:
        """``offline``, ``connecting``, ``syncing`` or ``online``."""
        return public_state(self.session)

    @property
    def forced_offline(self) -> bool:
        """True while the user switched sync off."""
        return self.session is SessionState.FORCED_OFFLINE

    def replace(self, **changes: Any) -> Status:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        text = self.state
        if self.session is SessionState.SYNCING:
            text += f" {self.progress.records_done}/{self.progress.records_total}"
        if self.pending:
            text += f", {self.pending} pending"
        return text


StatusCallback = Callable[[Status], None]


class StatusFeed:
    """The current :class:`Status` and its changes, as callbacks and async iterators."""

    def __init__(self, initial: Status | None = None) -> None:
        self._current = initial if initial is not None else Status()
        self._callbacks: list[StatusCallback] = []
        self._queues: list[asyncio.Queue[Status]] = []

    @property
    def current(self) -> Status:
        """The status now."""
        return self._current

    def update(self, **changes: Any) -> Status:
        """Publish the current status with ``changes`` (nothing happens if it is unchanged)."""
        return self.publish(self._current.replace(**changes))

    def publish(self, status: Status) -> Status:
        """Make ``status`` current and deliver it to every subscriber, unless unchanged.

        Callbacks run synchronously, in subscription order; an exception in one is logged
        and does not stop the others.
        """
        if status == self._current:
            return status
        self._current = status
        for queue in self._queues:
            queue.put_nowait(status)
        for callback in list(self._callbacks):
            try:
                callback(status)
            except Exception:
                log.exception("status callback %r failed", callback)
        return status

    def subscribe(self, callback: StatusCallback) -> Callable[[], None]:
        """Call ``callback(status)`` on every change; returns a function that unsubscribes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    async def changes(self, *, current: bool = True) -> AsyncGenerator[Status, None]:
        """Yield the status (first the current one, if ``current``), then every change.

        Runs until the consumer stops iterating, never ends by itself; no change is skipped
        (each subscriber has its own unbounded queue). The subscription ends when the
        generator is closed: wrap it in ``contextlib.aclosing()`` to end it promptly.
        """
        queue: asyncio.Queue[Status] = asyncio.Queue()
        self._queues.append(queue)
        try:
            if current:
                yield self._current
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)

    async def wait_for(self, predicate: Callable[[Status], bool]) -> Status:
        """Wait until the status satisfies ``predicate`` (checked now, then on each change).

        Use with ``asyncio.timeout()``; it never times out by itself.
        """
        async with contextlib.aclosing(self.changes()) as changes:
            async for status in changes:
                if predicate(status):
                    return status
        raise AssertionError("unreachable")  # pragma: no cover
