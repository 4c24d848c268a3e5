"""SyncRun in-process: a real run against an in-memory store, the relay played by a sans-I/O
ServerProtocol (``helpers.pair_link.PairLink`` over ``helpers.protocol_pair.ProtocolPair``).

No socket, no SQLite, no sleeps: each test runs in milliseconds. The end-to-end tests in
``tests/e2e`` run the same code over real websockets against a real relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from crdt_sync.client.status import Progress
from crdt_sync.client.sync_run import CURSOR_SETTING, DEFAULT_WINDOW, SyncPhase, SyncRun
from helpers.memory_store import MemoryStore
from helpers.pair_link import WAIT, PairLink

from crdt_sync.messages import Message, Push, StateVectorItem, StateVectors, Subscribe
from crdt_sync.outbox import OutboxStatus
from crdt_sync.protocol import Welcomed
from crdt_sync.subscriptions import Subscription

QUEUED, UPLOADING, ERROR = OutboxStatus.QUEUED, OutboxStatus.UPLOADING, OutboxStatus.ERROR
GRANTED = ("jobs", "contacts")


@dataclass
class RecordingOwner:
    """A SyncOwner that keeps what the run reports."""

    welcomed: list[Welcomed] = field(default_factory=list)
    completed: int = 0
    progress: list[Progress] = field(default_factory=list)
    counted: int = 0
    changed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def sync_welcomed(self, event: Welcomed) -> None:
        self.welcomed.append(event)

    def sync_completed(self) -> None:
        self.completed += 1

    def sync_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    def outbox_counted(self) -> None:
        self.counted += 1

    def records_changed(self, keys: Sequence[tuple[str, str]]) -> None:
        self.changed.extend(keys)

    def records_removed(self, keys: Sequence[tuple[str, str]]) -> None:
        self.removed.extend(keys)

    def sync_error(self, code: str, reason: str) -> None:
        self.errors.append((code, reason))


@dataclass
class Running:
    """A SyncRun running as a task over ``link``."""

    link: PairLink
    run: SyncRun
    owner: RecordingOwner
    task: asyncio.Task[str]

    async def end(self) -> str:
        """Wait for the run to end (the link closed); return its close code."""
        async with asyncio.timeout(WAIT):
            return await self.task


@contextlib.asynccontextmanager
async def running(
    store: MemoryStore,
    *,
    collections: Sequence[str] | None = None,
    window: int = DEFAULT_WINDOW,
    subscriptions: Sequence[Subscription] | None = None,
    **server_options: Any,
) -> AsyncIterator[Running]:
    """Start a SyncRun on a fresh link (``hello`` on the server); drop the link at the end."""
    link = PairLink.open(**server_options)
    owner = RecordingOwner()
    run = SyncRun(link, store, owner, collections, window=window, subscriptions=subscriptions)
    started = Running(link, run, owner, asyncio.create_task(run.run()))
    try:
        yield started
    finally:
        link.drop()
        await started.end()
    assert store.outbox.listeners == 0  # the run no longer hears of new entries


def pushed(sent: Sequence[Message | str]) -> list[int]:
    """The seqs of every entry pushed, in order."""
    return [item.seq for msg in sent if isinstance(msg, Push) for item in msg.items]


def remote_update(**fields: Any) -> bytes:
    """An update made by another replica: it sets ``fields`` in a new record."""
    return MemoryStore().edit("any", "any", **fields).update


# -- upload ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_uploads_in_seq_order_within_the_window_then_subscribes() -> None:
    store = MemoryStore()
    entries = [store.edit("jobs", f"job-{i % 2}", n=i) for i in range(6)]
    async with running(store, window=2) as r:
        assert r.run.phase is SyncPhase.HANDSHAKE
        sent = await r.link.welcome()
        assert r.run.phase is SyncPhase.UPLOAD
        assert [e.tenant for e in r.owner.welcomed] == ["acme"]
        assert pushed(sent) == [1, 2]  # the window is full: nothing else, no sub yet
        assert store.outbox.status(1, 2, 3) == [UPLOADING, UPLOADING, QUEUED]
        r.link.server.ack([1])
        assert pushed(await r.link.exchange()) == [3]  # one ack, one more in flight
        r.link.server.ack([2, 3])
        assert pushed(await r.link.exchange()) == [4, 5]
        assert store.outbox.status(1, 2, 3, 4, 5, 6) == [None] * 3 + [UPLOADING] * 2 + [QUEUED]
        r.link.server.ack([4, 5])
        assert pushed(await r.link.exchange()) == [6]
        r.link.server.ack([6])
        assert await r.link.exchange() == [Subscribe(GRANTED, None)]  # then download
        assert r.run.phase is SyncPhase.DOWNLOAD
        assert store.outbox.by_seq == {}
        size = sum(len(e.update) for e in entries)
        assert r.owner.progress[-1] == Progress(6, 6, size, size)


@pytest.mark.asyncio
async def test_acks_drop_entries_and_rejects_put_them_in_error() -> None:
    store = MemoryStore()
    store.edit("jobs", "job-1", status="done")
    store.edit("jobs", "job-2", status="done")
    store.edit("contacts", "c-1", name="Ada")
    async with running(store) as r:
        assert pushed(await r.link.welcome()) == [1, 2, 3]
        r.link.server.ack([1, 3])
        r.link.server.reject([(2, "rejected", "job closed by the office")])
        # The entry in error stays for the app; it does not hold the download back.
        assert await r.link.exchange() == [Subscribe(GRANTED, None)]
        [entry] = store.outbox.by_seq.values()
        assert (entry.seq, entry.status, entry.error_code, entry.error_reason) == (
            2,
            ERROR,
            "rejected",
            "job closed by the office",
        )
        assert r.owner.counted > 0


@pytest.mark.asyncio
async def test_entries_behind_an_entry_in_error_are_held_until_it_is_released() -> None:
    store = MemoryStore()
    for record in ("job-a", "job-a", "job-b", "job-a", "job-b"):  # seqs 1 to 5
        store.edit("jobs", record, n=1)
    async with running(store, window=2) as r:
        assert pushed(await r.link.welcome()) == [1, 2]
        # The relay refuses 1; 2 builds on it, so the relay cannot take it either.
        r.link.server.reject([(1, "rejected", "job closed"), (2, "blocked", "needs entry 1")])
        # Head of line per record: 4 (job-a) waits behind 1; job-b's entries go on.
        assert pushed(await r.link.exchange()) == [3, 5]
        assert [
            (e.seq, e.status, e.error_code, e.held_by) for e in await store.outbox.entries()
        ] == [
            (1, ERROR, "rejected", None),
            (2, QUEUED, "blocked", 1),
            (3, UPLOADING, None, None),
            (4, QUEUED, None, 1),
            (5, UPLOADING, None, None),
        ]
        r.link.server.ack([3, 5])
        assert await r.link.exchange() == [Subscribe(GRANTED, None)]  # only held entries left

        store.outbox.requeue(1)  # the app resolved it, then retry(): the outbox is listed
        r.run.relist()
        assert pushed(await r.link.settled()) == [1, 2]  # in seq order, within the window
        r.link.server.ack([1, 2])
        assert pushed(await r.link.exchange()) == [4]
        r.link.server.ack([4])
        assert await r.link.exchange() == []
        assert store.outbox.by_seq == {}


@pytest.mark.asyncio
async def test_a_blocked_entry_goes_again_only_after_the_next_listing() -> None:
    store = MemoryStore()
    store.edit("jobs", "job-1", n=1)
    async with running(store) as r:
        assert pushed(await r.link.welcome()) == [1]
        r.link.server.reject([(1, "blocked", "an earlier update is missing")])
        assert await r.link.exchange() == [Subscribe(GRANTED, None)]
        [entry] = store.outbox.by_seq.values()
        assert (entry.status, entry.error_code) == (QUEUED, "blocked")  # not an error

        store.edit("jobs", "job-2", n=2)  # a new entry goes up alone
        assert pushed(await r.link.settled()) == [2]
        r.run.relist()
        assert pushed(await r.link.settled()) == [1]
        assert store.outbox.by_seq[1].status is UPLOADING
        assert store.outbox.by_seq[1].error_code is None


@pytest.mark.asyncio
async def test_an_entry_too_big_for_the_relay_is_put_in_error_and_the_others_go() -> None:
    store = MemoryStore()
    store.edit("jobs", "job-1", n=1)
    store.edit("jobs", "job-2", notes="x" * 2000)
    store.edit("jobs", "job-3", n=3)
    async with running(store, max_frame=1024) as r:
        assert pushed(await r.link.welcome()) == [1, 3]
        assert store.outbox.by_seq[2].status is ERROR
        assert store.outbox.by_seq[2].error_code == "too_big"


@pytest.mark.asyncio
async def test_a_batch_of_only_too_big_entries_does_not_stall_the_upload() -> None:
    """Every entry of a push batch too big (window 1: one entry per batch), nothing in
    flight: the next entries still go, and then the download."""
    store = MemoryStore()
    store.edit("jobs", "job-1", notes="x" * 2000)
    store.edit("jobs", "job-2", n=2)
    async with running(store, window=1, max_frame=1024) as r:
        assert pushed(await r.link.welcome()) == [2]
        assert store.outbox.by_seq[1].error_code == "too_big"
        r.link.server.ack([2])
        assert await r.link.exchange() == [Subscribe(GRANTED, None)]


@pytest.mark.asyncio
async def test_a_lost_connection_queues_what_was_in_flight_again() -> None:
    store = MemoryStore()
    for i in range(4):
        store.edit("jobs", f"job-{i}", n=i)
    async with running(store) as r:
        assert pushed(await r.link.welcome()) == [1, 2, 3, 4]
        r.link.server.ack([1, 2])
        await r.link.exchange()
        r.link.drop()  # before 3 and 4 were acknowledged
        assert await r.end() == "connection_lost"
    assert store.outbox.status(1, 2, 3, 4) == [None, None, UPLOADING, UPLOADING]

    async with running(store) as r:  # the next connection sends them again, first
        assert pushed(await r.link.welcome()) == [3, 4]
        assert [e.attempts for e in store.outbox.by_seq.values()] == [2, 2]
        r.link.server.ack([3, 4])
        assert await r.link.exchange() == [Subscribe(GRANTED, None)]


# -- download and live -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_downloads_what_changed_then_goes_live() -> None:
    store = MemoryStore()
    store.edit("jobs", "job-1", status="new")
    async with running(store) as r:
        assert pushed(await r.link.welcome()) == [1]
        r.link.server.ack([1])
        assert await r.link.exchange() == [Subscribe(GRANTED, None)]

        r.link.server.send_changed([("jobs", "job-1"), ("jobs", "job-9")], 7)
        sent = await r.link.exchange()
        job_1 = store.docs[("jobs", "job-1")].get_state()
        items = (StateVectorItem("jobs", "job-1", job_1), StateVectorItem("jobs", "job-9", b"\x00"))
        assert sent == [StateVectors(items, True)]
        r.link.server.send_updates([("jobs", "job-9", remote_update(status="open"))], None)
        await r.link.exchange()
        assert store.fields("jobs", "job-9") == {"status": "open"}
        assert r.owner.changed == [("jobs", "job-9")]
        assert r.run.phase is SyncPhase.DOWNLOAD and r.owner.completed == 0
        r.link.server.send_synced(7)
        await r.link.exchange()
        assert r.run.phase is SyncPhase.LIVE and r.owner.completed == 1
        assert store.settings[CURSOR_SETTING] == "7"

        store.edit("jobs", "job-9", status="in_progress")  # live: pushed once committed
        assert pushed(await r.link.settled()) == [2]
        r.link.server.send_updates([("contacts", "c-1", remote_update(name="Ada"))], 8)
        await r.link.exchange()
        assert store.fields("contacts", "c-1") == {"name": "Ada"}
        assert store.settings[CURSOR_SETTING] == "8"  # with the updates
        r.link.server.send_cursor(9)
        await r.link.exchange()
        assert store.settings[CURSOR_SETTING] == "9"


@pytest.mark.asyncio
async def test_a_record_sent_live_during_a_fresh_catch_up_is_kept() -> None:
    # A filtered collection caught up from scratch: the replica drops, at ``synced``, what it
    # keeps that was not listed. A record committed after the relay's listing reaches it live
    # (the relay's live selection keeps it): it was sent, so it is kept.
    store = MemoryStore()
    subscriptions = [Subscription("jobs", where={"status": "open"})]
    async with running(store, subscriptions=subscriptions) as r:
        [subscribe] = [m for m in await r.link.welcome() if isinstance(m, Subscribe)]
        assert subscribe.cursor is None and subscribe.subscriptions is not None
        r.link.server.send_changed([("jobs", "job-1")], 7)
        await r.link.exchange()
        r.link.server.send_updates([("jobs", "job-2", remote_update(status="open"))], 8)
        r.link.server.send_updates([("jobs", "job-1", remote_update(status="open"))], None)
        r.link.server.send_synced(7, 1_796_203_200_000)
        await r.link.exchange()
        assert r.run.phase is SyncPhase.LIVE
        assert await store.ids("jobs") == ["job-1", "job-2"]


@pytest.mark.asyncio
async def test_the_cursor_is_persisted_only_once_synced() -> None:
    store = MemoryStore()
    async with running(store) as r:
        assert await r.link.welcome() == [Subscribe(GRANTED, None)]
        r.link.server.send_changed([("jobs", "job-9")], 7)
        await r.link.exchange()
        r.link.server.send_updates([("jobs", "job-9", remote_update(status="open"))], None)
        await r.link.exchange()
        assert store.fields("jobs", "job-9") == {"status": "open"}
        r.link.drop()  # before synced
    assert CURSOR_SETTING not in store.settings

    async with running(store) as r:  # the catch-up starts over
        assert await r.link.welcome() == [Subscribe(GRANTED, None)]
        r.link.server.send_synced(7)
        await r.link.exchange()
        assert store.settings[CURSOR_SETTING] == "7"

    async with running(store) as r:  # and the next one goes on from there
        assert await r.link.welcome() == [Subscribe(GRANTED, 7)]


@pytest.mark.asyncio
async def test_live_updates_that_cannot_be_stored_drop_the_link() -> None:
    store = MemoryStore()
    async with running(store) as r:
        await r.link.welcome()
        r.link.server.send_synced(3)
        await r.link.exchange()
        store.commit_error = OSError("disk full")
        r.link.server.send_updates([("jobs", "job-9", remote_update(status="open"))], 4)
        r.link.deliver()
        # Not stored: the next connection's catch-up, from cursor 3, fetches them again.
        assert await r.end() == "connection_lost"
    assert store.settings[CURSOR_SETTING] == "3"
    assert ("jobs", "job-9") not in store.docs


# -- the connection ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_collections_the_token_does_not_grant_are_not_subscribed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(MemoryStore(), collections=["jobs", "invoices"]) as r:
        with caplog.at_level(logging.WARNING, logger="crdt_sync.client"):
            assert await r.link.welcome() == [Subscribe(("jobs",), None)]
        assert "invoices" in caplog.text


@pytest.mark.asyncio
async def test_relay_errors_are_reported_and_a_fatal_one_ends_the_run() -> None:
    async with running(MemoryStore()) as r:
        await r.link.welcome()
        r.link.server.send_error("slow_down", "busy")
        await r.link.exchange()
        assert r.owner.errors == [("slow_down", "busy")]
        assert r.run.phase is SyncPhase.DOWNLOAD  # not fatal: the run goes on
        r.link.server.fail("going_away", "relay restarting")
        r.link.deliver()
        assert await r.end() == "going_away"
