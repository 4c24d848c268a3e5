"""Live queries: a query's result again whenever a change affects it.

:class:`LiveQuery` (made by :meth:`crdt_sync.store.sqlite.LocalStore.watch`) listens to the
store's :class:`~crdt_sync.store.record_changes.RecordChanged` events. A change affects the
query when the record matched before it or matches after it; the query then runs again and
the new result is yielded with the changes that caused it (several changes arriving together
give one result). A query with a rolling window also runs again when the window moves (at
midnight in the window's time zone).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from zoneinfo import ZoneInfo

from ..query import And, Filter, Or, Window, matches, resolve
from ..records.record import Record
from .record_changes import RecordChanged

__all__ = ["LiveQuery", "QueryResult"]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One result of a live query: the records, and the changes since the previous result
    (empty for the first one, and when only the window moved)."""

    records: list[Record]
    changes: tuple[RecordChanged, ...]

    @property
    def origins(self) -> frozenset[str]:
        """Where the changes came from: ``"local"``, ``"remote"``."""
        return frozenset(c.origin for c in self.changes)


class LiveQuery:
    """A query whose result is delivered again after every change that affects it.

    ``async for result in store.watch("jobs", {"status": "open"}): ...``; or ``async with
    store.watch(...) as live: result = await live.next()``. :meth:`close` (or leaving the
    ``async with``) stops it.
    """

    def __init__(
        self,
        collection: str,
        where: Filter | None,
        run: Callable[[], Awaitable[list[Record]]],
        subscribe: Callable[[Callable[[RecordChanged], None]], Callable[[], None]],
        clock: Callable[[], float],
    ) -> None:
        self.collection = collection
        self._where = where
        self._run = run
        self._clock = clock
        self._pending: list[RecordChanged] = []
        self._wake = asyncio.Event()
        self._first = True
        self._closed = False
        self._unsubscribe = subscribe(self._on_change)

    def _on_change(self, change: RecordChanged) -> None:
        if change.collection != self.collection or self._closed:
            return
        if self._where is not None:
            resolved = resolve(self._where, now=self._now())
            before, after = change.before, change.after
            if not (
                (before is not None and matches(resolved, before))
                or (after is not None and matches(resolved, after))
            ):
                return
        self._pending.append(change)
        self._wake.set()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    def _until_window_moves(self) -> float | None:
        """Seconds until the next midnight in the time zone of one of the filter's windows."""
        zones = {w.tz for w in _windows(self._where)}
        if not zones:
            return None
        now = self._now()
        waits = []
        for tz in zones:
            local = now.astimezone(ZoneInfo(tz))
            midnight = dt.datetime.combine(
                local.date() + dt.timedelta(days=1), dt.time(), ZoneInfo(tz)
            )
            waits.append((midnight - local).total_seconds())
        return max(0.0, min(waits)) + 0.001

    async def next(self) -> QueryResult:
        """The next result: at once the first time, then after the next change affecting it.

        Raises:
            StopAsyncIteration: the live query is closed.
        """
        if self._closed:
            raise StopAsyncIteration
        if self._first:
            self._first = False
            return QueryResult(await self._run(), ())
        while not self._pending:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._until_window_moves())
            except TimeoutError:
                break  # the window moved: run again with no change
            if self._closed:
                raise StopAsyncIteration
        await asyncio.sleep(0)  # changes committed together arrive together
        changes, self._pending = tuple(self._pending), []
        return QueryResult(await self._run(), changes)

    def __aiter__(self) -> AsyncIterator[QueryResult]:
        return self

    async def __anext__(self) -> QueryResult:
        return await self.next()

    async def __aenter__(self) -> LiveQuery:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening; a pending :meth:`next` ends with ``StopAsyncIteration``."""
        if not self._closed:
            self._closed = True
            self._unsubscribe()
            self._wake.set()


def _windows(where: Filter | None) -> list[Window]:
    if isinstance(where, Window):
        return [where]
    if isinstance(where, And | Or):
        return [w for part in where.parts for w in _windows(part)]
    return []
