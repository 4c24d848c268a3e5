"""The status value and its feed: callbacks and async iterators see every change, in order."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from crdt_sync.client.session import SessionState
from crdt_sync.client.status import Progress, Status, StatusFeed


def test_status_shows_public_state_and_progress() -> None:
    status = Status(session=SessionState.SYNCING, progress=Progress(4, 10, 100, 250), pending=3)
    assert status.state == "syncing"
    assert str(status) == "syncing 4/10, 3 pending"
    assert status.progress.fraction == 0.4
    assert Progress().fraction == 1.0
    assert Status(session=SessionState.BACKOFF).state == "offline"
    assert Status(session=SessionState.FORCED_OFFLINE).forced_offline


def test_callbacks_get_changes_only_in_order() -> None:
    feed = StatusFeed()
    seen: list[Status] = []
    unsubscribe = feed.subscribe(seen.append)
    feed.update(pending=1)
    feed.update(pending=1)  # unchanged: not published
    feed.update(session=SessionState.CONNECTING)
    assert [(s.pending, s.state) for s in seen] == [(1, "offline"), (1, "connecting")]
    unsubscribe()
    feed.update(pending=2)
    assert len(seen) == 2
    assert feed.current.pending == 2


def test_a_failing_callback_does_not_stop_the_others() -> None:
    feed = StatusFeed()
    seen: list[int] = []

    def broken(_status: Status) -> None:
        raise RuntimeError("app bug")

    feed.subscribe(broken)
    feed.subscribe(lambda s: seen.append(s.pending))
    feed.update(pending=5)
    assert seen == [5]


@pytest.mark.asyncio
async def test_async_iterator_starts_with_current_and_misses_nothing() -> None:
    feed = StatusFeed()
    received: list[int] = []
    ready = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(feed.changes()) as changes:
            async for status in changes:
                received.append(status.pending)
                ready.set()
                if status.pending == 3:
                    return

    task = asyncio.create_task(consume())
    await ready.wait()
    for pending in (1, 2, 3):  # published back to back, before the consumer runs
        feed.update(pending=pending)
    async with asyncio.timeout(5):
        await task
    assert received == [0, 1, 2, 3]
    assert not feed._queues  # the closed iterator unsubscribed


@pytest.mark.asyncio
async def test_wait_for_checks_now_then_each_change() -> None:
    feed = StatusFeed()
    assert (await feed.wait_for(lambda s: s.pending == 0)).pending == 0
    waiter = asyncio.create_task(feed.wait_for(lambda s: s.state == "online"))
    await asyncio.sleep(0)  # let the waiter subscribe (a scheduling point, not a wait for sync)
    feed.update(session=SessionState.CONNECTING)
    feed.update(session=SessionState.SYNCING)
    feed.update(session=SessionState.ONLINE)
    async with asyncio.timeout(5):
        assert (await waiter).state == "online"
