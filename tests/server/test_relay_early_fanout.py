"""Early fan-out (``--early-fanout``) against a running relay: updates reach subscribers
before their commit.

With the flag, the relay sends an accepted push to the other subscribers at once (cursor
None) and acks the pusher only after the commit; the cursor that covers the update follows the
commit. Without it (the default), nothing goes out before the commit. These tests stop commits
by holding the relay's SQLite write lock from another connection on its data file
(``BEGIN IMMEDIATE``), so "accepted but not committed" is a state the test controls.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from crdt_sync.server.storage import DB_FILENAME
from helpers.relay import RelayClient, RelayProcess
from pycrdt import Doc, Map, Text

from crdt_sync.protocol import Acked, ClientEvent, ErrorReceived, PongReceived, UpdatesReceived


def _note(text: str, client_id: int = 1) -> bytes:
    doc = Doc(client_id=client_id)
    doc.get("notes", type=Text).insert(0, text)
    return doc.get_update()


class _WriteLock:
    """Holds the relay database's write lock (the relay's commits wait) until released."""

    def __init__(self, data_dir: Path) -> None:
        self.db = sqlite3.connect(data_dir / DB_FILENAME, timeout=10, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self.db.close()


async def _until_pong(client: RelayClient) -> list[ClientEvent]:
    """Ping and return every event received before the pong.

    The relay handles one connection's frames in order and queues its output in order, so
    whatever it had queued for this client before it handled the ping is in the list.
    """
    seen: list[ClientEvent] = []
    client.protocol.ping()
    await client.flush()

    def collect(event: ClientEvent) -> bool:
        seen.append(event)
        return isinstance(event, PongReceived)

    await client.wait_for(collect)
    return seen[:-1]


async def _live(client: RelayClient) -> tuple[list[str], int]:
    """Receive live frames until one carries a cursor: ``(record ids received, cursor)``."""
    records: list[str] = []
    while True:
        event = await client.next_event(UpdatesReceived)
        records.extend(item.record_id for item in event.items)
        if event.cursor is not None:
            return records, event.cursor


@pytest.mark.asyncio
async def test_update_reaches_subscribers_before_its_commit_and_the_cursor_after(
    relay_factory: Callable[..., RelayProcess],
) -> None:
    relay = relay_factory(args=["--early-fanout"])
    token = relay.token("early", ["jobs"])
    async with (
        RelayClient.open(relay.url, token, "a") as a,
        RelayClient.open(relay.url, token, "b") as b,
        RelayClient.open(relay.url, token, "c") as c,
    ):
        _, _, start = await b.catch_up(["jobs"], None)
        await a.push_and_settle([(1, "jobs", "j0", _note("zero"))])
        assert await _live(b) == (["j0"], start + 1)
        lock = _WriteLock(relay.data_dir)
        try:
            await a.push([(2, "jobs", "j1", _note("one"))])
            early = await b.next_event(UpdatesReceived)
            assert [i.record_id for i in early.items] == ["j1"] and early.cursor is None
            # not committed: A has no ack, B no cursor (each checked up to a ping round trip)
            assert not [e for e in await _until_pong(a) if isinstance(e, Acked)]
            assert not [e for e in await _until_pong(b) if isinstance(e, UpdatesReceived)]
            # C subscribes while j1 is accepted but not committed: its catch-up reads
            # committed state (j0 only), so j1 must reach it after the commit
            changed, _, c_synced = await c.catch_up(["jobs"], None)
            assert changed == [("jobs", "j0")] and c_synced == start + 1
            assert not [e for e in await _until_pong(c) if isinstance(e, UpdatesReceived)]
        finally:
            lock.release()
        acked = await a.next_event(Acked)
        assert acked.seqs == (2,)
        # B had j1: it gets the cursor alone; C gets j1 itself with the same cursor
        cursor_frame = await b.next_event(UpdatesReceived)
        assert cursor_frame.items == () and cursor_frame.cursor == start + 2
        assert await _live(c) == (["j1"], start + 2)
        # B's next sub with that cursor misses nothing and repeats nothing
        await a.push_and_settle([(3, "jobs", "j2", _note("two"))])
    async with RelayClient.open(relay.url, token, "b") as b_again:
        changed, _, synced = await b_again.catch_up(["jobs"], cursor_frame.cursor)
        assert changed == [("jobs", "j2")] and synced == start + 3
        # an older cursor would have listed j1 too: the cursor really covered it
        changed, _, _ = await b_again.catch_up(["jobs"], start + 1)
        assert sorted(changed) == [("jobs", "j1"), ("jobs", "j2")]


@pytest.mark.asyncio
async def test_failed_commit_sends_no_cursor_and_the_resent_update_arrives_again(
    relay_factory: Callable[..., RelayProcess],
) -> None:
    relay = relay_factory(args=["--early-fanout"])
    token = relay.token("early", ["jobs"])
    async with RelayClient.open(relay.url, token, "b") as b:
        _, _, start = await b.catch_up(["jobs"], None)
        async with RelayClient.open(relay.url, token, "a") as a:
            lock = _WriteLock(relay.data_dir)
            try:
                await a.push([(1, "jobs", "lost", _note("once"))])
                early = await b.next_event(UpdatesReceived)
                assert [i.record_id for i in early.items] == ["lost"] and early.cursor is None
                # the relay's writer gives up on the lock (its busy timeout): the commit
                # fails, A is not acked but told the relay could not store it
                error = await a.next_event(ErrorReceived, within=30)
                assert error.code == "internal"
            finally:
                lock.release()
        # nothing committed, so B never hears a cursor for it
        assert not [e for e in await _until_pong(b) if isinstance(e, UpdatesReceived)]
        # A re-sends its unacked entry on a new connection: stored, and B gets it again
        async with RelayClient.open(relay.url, token, "a") as a:
            acked, _ = await a.push_and_settle([(1, "jobs", "lost", _note("once"))])
            assert acked == {1}
        assert await _live(b) == (["lost"], start + 1)


VALIDATOR = """
from crdt_sync.server import UpdateRejected

def no_drafts(collection, record_id, update, current_state, grant):
    if record_id.startswith("draft"):
        raise UpdateRejected("drafts stay local")
"""


@pytest.mark.asyncio
async def test_refused_updates_are_never_fanned_out(
    tmp_path: Path, relay_factory: Callable[..., RelayProcess]
) -> None:
    (tmp_path / "draft_rules.py").write_text(VALIDATOR)
    relay = relay_factory(args=["--early-fanout", "--validator", "draft_rules:no_drafts"])
    token = relay.token("acme", ["jobs"])
    doc = Doc(client_id=3)
    doc.get("fields", type=Map)["status"] = "open"
    async with (
        RelayClient.open(relay.url, token, "a") as a,
        RelayClient.open(relay.url, token, "b") as b,
    ):
        await b.catch_up(["jobs"], None)
        acked, rejected = await a.push_and_settle(
            [
                (1, "jobs", "draft-1", _note("secret")),
                (2, "jobs", "bad", b"\xff\xfenot yjs"),
                (3, "jobs", "job-1", doc.get_update()),
            ]
        )
        assert acked == {3} and sorted(rejected) == [1, 2]
        records, _ = await _live(b)
        assert records == ["job-1"]
        assert not [e for e in await _until_pong(b) if isinstance(e, UpdatesReceived)]


@pytest.mark.asyncio
async def test_by_default_nothing_is_fanned_out_before_its_commit(
    relay_factory: Callable[..., RelayProcess],
) -> None:
    relay = relay_factory()
    token = relay.token("late", ["jobs"])
    async with (
        RelayClient.open(relay.url, token, "a") as a,
        RelayClient.open(relay.url, token, "b") as b,
    ):
        _, _, start = await b.catch_up(["jobs"], None)
        lock = _WriteLock(relay.data_dir)
        try:
            await a.push([(1, "jobs", "j1", _note("one"))])
            assert not [e for e in await _until_pong(a) if isinstance(e, Acked)]
            assert not [e for e in await _until_pong(b) if isinstance(e, UpdatesReceived)]
        finally:
            lock.release()
        assert (await a.next_event(Acked)).seqs == (1,)
        assert await _live(b) == (["j1"], start + 1)  # the update and its cursor together
