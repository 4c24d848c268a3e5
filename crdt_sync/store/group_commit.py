"""Group commit for the local store: writes queued by many coroutines share one transaction.

Every write of :class:`~crdt_sync.store.sqlite.LocalStore` is a small callable run on
aiosqlite's thread. Alone, each costs a thread round trip and a commit; queued here, all the
writes submitted while the previous group was committing go in the next group: ONE hop to the
SQLite thread and ONE commit for the lot, in submission (FIFO) order. Each write gets its own
outcome: it runs in a savepoint, so a write that raises is undone alone and fails alone, while
the rest of its group commits.

Writes name the records they touch (``keys``). A write that fails (or whose group fails to
commit) makes every later write of the same records fail too, in its group and in the queue:
those were built on the in-memory document that held the failed change, and storing them
would leave an update whose dependency is missing. ``on_failed`` tells the store which records'
in-memory documents to throw away.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from ..errors import StoreError
from .sqlite_thread import on_thread

__all__ = ["LAZY_DELAY", "GroupCommit", "Key", "WriteBody"]

#: Seconds a lazy write waits for company before it is committed on its own.
LAZY_DELAY = 0.01

Key = tuple[str, str]
"""A record: ``(collection, record_id)``."""

WriteBody = Callable[[sqlite3.Connection], Any]
"""A write: runs on the SQLite thread inside the group's transaction; returns its result."""


@dataclass(eq=False, slots=True)
class _Write:
    body: WriteBody
    keys: tuple[Key, ...]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Flight:
    """The writes of one record that are queued or committing."""

    count: int
    last: asyncio.Future[Any]


class _Skipped(Exception):
    """A write not run because an earlier write of the same record failed."""


@dataclass
class GroupCommit:
    """The store's single writer: FIFO groups of writes, one transaction per group.

    Args:
        conn: the store's aiosqlite connection.
        path: the store file (named in errors).
        before_group: called on the event loop just before a group starts; returns a write
            run first in the group's transaction (e.g. deferred ``accessed_at`` times), or None.
        on_failed: called with the records of writes that failed, before their callers hear.
        after_commit: called after each group that committed.
    """

    conn: aiosqlite.Connection
    path: Any
    before_group: Callable[[], WriteBody | None] = lambda: None
    on_failed: Callable[[set[Key]], None] = lambda keys: None
    #: Called after each group that committed (e.g. to schedule a WAL checkpoint).
    after_commit: Callable[[], None] = lambda: None
    #: Held while a group commits; multi-statement transactions of the store take it too.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Groups committed and writes run (for tests and benchmarks).
    groups: int = 0
    writes: int = 0
    _queue: list[_Write] = field(default_factory=list)
    _flights: dict[Key, _Flight] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _timer: asyncio.TimerHandle | None = None
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def submit(
        self, body: WriteBody, keys: Iterable[Key] = (), *, lazy: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``body`` for the next group; the future completes once it is committed.

        ``lazy``: no group is started for it; it goes with the next write, or after
        :data:`LAZY_DELAY` seconds (for writes whose loss to a crash is harmless, e.g. marking
        entries sent: a commit of their own would delay the edits queued behind it).

        The future fails with the body's exception, or with :class:`StoreError` if the group
        could not commit or an earlier write of one of ``keys`` failed.
        """
        loop = asyncio.get_running_loop()
        write = _Write(body, tuple(keys), loop.create_future())
        self._queue.append(write)
        for key in write.keys:
            flight = self._flights.get(key)
            if flight is None:
                self._flights[key] = _Flight(1, write.future)
            else:
                flight.count += 1
                flight.last = write.future
        if write.keys:
            keys = write.keys
            write.future.add_done_callback(lambda _done: self._landed(keys))
        if not lazy:
            self._start()
        elif self._task is None and self._timer is None:
            self._idle.clear()
            self._timer = loop.call_later(LAZY_DELAY, self._start)
        return write.future

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None:
            if not self._queue:
                self._idle.set()
                return
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"group commit {self.path}"
            )

    def in_flight(self, key: Key) -> bool:
        """Whether a write of this record is queued or committing."""
        return key in self._flights

    async def settled(self, key: Key) -> None:
        """Wait until no write of this record is queued or committing (outcomes ignored)."""
        while (flight := self._flights.get(key)) is not None:
            self._start()  # a lazy write of it is not left waiting for company
            await asyncio.wait([flight.last])

    async def drain(self) -> None:
        """Wait until every write submitted so far has its outcome."""
        self._start()
        while self._task is not None:
            await self._idle.wait()

    def _landed(self, keys: tuple[Key, ...]) -> None:
        for key in keys:
            flight = self._flights.get(key)
            if flight is not None:
                flight.count -= 1
                if flight.count <= 0:
                    del self._flights[key]

    async def _run(self) -> None:
        try:
            while self._queue:
                async with self.lock:
                    batch, self._queue = self._queue, []
                    first = self.before_group()
                    try:
                        outcomes = await on_thread(
                            self.conn, _run_group, first, [(w.body, w.keys) for w in batch]
                        )
                    except Exception as exc:
                        error = StoreError(self.path, f"commit failed: {exc}")
                        outcomes = [(False, error)] * len(batch)
                    else:
                        self.after_commit()
                self.groups += 1
                self.writes += len(batch)
                self._settle(batch, outcomes)
        finally:
            self._task = None
            if self._timer is None:  # else lazy writes wait for their timer
                self._idle.set()

    def _settle(self, batch: Sequence[_Write], outcomes: Sequence[tuple[bool, Any]]) -> None:
        failed: set[Key] = set()
        for write, (ok, _) in zip(batch, outcomes, strict=True):
            if not ok:
                failed.update(write.keys)
        if failed:
            # Queued writes of those records were built on the failed state: fail them too.
            keep = []
            for write in self._queue:
                if failed.intersection(write.keys):
                    failed.update(write.keys)
                    self._fail(write, _skipped(self.path, write.keys))
                else:
                    keep.append(write)
            self._queue = keep
            self.on_failed(failed)
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                if not write.future.done():
                    write.future.set_result(value)
            else:
                if isinstance(value, _Skipped):
                    value = _skipped(self.path, write.keys)
                self._fail(write, value)

    @staticmethod
    def _fail(write: _Write, error: BaseException) -> None:
        if not write.future.done():
            write.future.set_exception(error)
        if not write.future.cancelled():
            # Nobody may be waiting (fire-and-forget writes): do not log "never retrieved".
            write.future.exception()


def _skipped(path: Any, keys: Sequence[Key]) -> StoreError:
    names = ", ".join(f"{c}/{r}" for c, r in keys)
    return StoreError(path, f"not saved: an earlier write of {names} failed")


def _run_group(
    db: sqlite3.Connection,
    first: WriteBody | None,
    writes: Sequence[tuple[WriteBody, tuple[Key, ...]]],
) -> list[tuple[bool, Any]]:
    """One group on the SQLite thread: each write in a savepoint, one COMMIT at the end."""
    outcomes: list[tuple[bool, Any]] = []
    failed: set[Key] = set()
    single = len(writes) == 1
    db.execute("BEGIN IMMEDIATE")
    try:
        if first is not None:
            first(db)
        for body, keys in writes:
            if failed.intersection(keys):
                failed.update(keys)
                outcomes.append((False, _Skipped()))
                continue
            if single:  # no savepoint needed: a failure rolls the whole group back
                try:
                    result = body(db)
                except Exception as exc:
                    db.execute("ROLLBACK")
                    return [(False, exc)]
                outcomes.append((True, result))
                continue
            db.execute("SAVEPOINT write")
            try:
                result = body(db)
            except Exception as exc:
                db.execute("ROLLBACK TO write")
                db.execute("RELEASE write")
                failed.update(keys)
                outcomes.append((False, exc))
                continue
            db.execute("RELEASE write")
            outcomes.append((True, result))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes
