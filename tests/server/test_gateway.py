"""The gateway and the fan-out (server/gateway.py, server/fanout.py) in process.

No sockets: a :class:`MemoryRelayStorage` whose commits the tests hold and release, recording
subscribers and room members. What it looks like over real websockets and SQLite is tested in
the ``test_relay_*.py`` files (a real relay process) next to these.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from crdt_sync.server.fanout import Delivery, Fanout
from crdt_sync.server.gateway import Admission, Gateway, InFlight
from crdt_sync.server.metrics import RelayMetrics
from crdt_sync.server.storage import MemoryRelayStorage
from crdt_sync.server.tokens import Grant
from crdt_sync.server.validation import UpdateBlocked, UpdateRejected
from crdt_sync.server.yjs_rooms import YjsRooms
from helpers.record_updates import RecordWriter
from helpers.yjs_updates import text_edits, text_of, text_update
from pycrdt import merge_updates

from crdt_sync.errors import AuthError, InvalidState, StoreError
from crdt_sync.messages import PushItem, RejectItem
from crdt_sync.query import Claim, Eq

WAIT = 5.0
GRANT = Grant("acme", frozenset({"jobs", "contacts"}), 4_000_000_000)


@dataclass(eq=False)
class Recorder:
    """A subscriber (or room member) that records what it is sent."""

    frames: list[tuple[list[Delivery], int | None]] = field(default_factory=list)
    room_updates: list[bytes] = field(default_factory=list)
    removed: list[object] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, updates: list[Delivery], cursor: int | None) -> None:
        self.frames.append((list(updates), cursor))
        self.arrived.set()

    def deliver_update(self, update: bytes) -> None:
        self.room_updates.append(update)
        self.arrived.set()

    def deliver_awareness(self, update: bytes) -> None:
        pass

    def deliver_removed(self, items: object) -> None:
        self.removed.append(items)

    async def next(self) -> None:
        """Wait for the next delivery."""
        self.arrived.clear()
        async with asyncio.timeout(WAIT):
            await self.arrived.wait()


@dataclass
class Relayish:
    storage: MemoryRelayStorage
    fanout: Fanout
    gateway: Gateway
    metrics: RelayMetrics
    inflight: InFlight

    async def push(
        self,
        items: list[PushItem],
        origin: object = None,
        *,
        early: bool = False,
        grant: Grant = GRANT,
    ) -> tuple[Admission, asyncio.Future[list[int]]]:
        """Admit and submit like the native endpoint; the future is the commit's outcome."""
        admission = await self.gateway.admit(grant, items)
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

        def committed(outcome: asyncio.Future[list[int]]) -> None:
            if outcome.exception() is not None:
                done.set_exception(outcome.exception())  # type: ignore[arg-type]
            else:
                done.set_result(outcome.result())

        if admission.accepted:
            self.gateway.submit(admission, "replica", origin, early=early, on_commit=committed)
        return admission, done

    def rejects(self, code: str) -> float:
        value = self.metrics.registry.get_sample_value("crdt_sync_rejects_total", {"code": code})
        return value or 0.0


def _build(validator: Callable[..., None] | None = None) -> Relayish:
    storage = MemoryRelayStorage()
    fanout = Fanout(YjsRooms())
    metrics = RelayMetrics()
    inflight = InFlight()

    def verifier(token: str) -> Grant:
        if token != "good":
            raise AuthError("bad_token", "not good")
        return GRANT

    gateway = Gateway(storage, fanout, metrics, inflight, verifier=verifier, validator=validator)
    return Relayish(storage, fanout, gateway, metrics, inflight)


@pytest_asyncio.fixture
async def relay() -> AsyncIterator[Relayish]:
    parts = _build()
    await parts.storage.open()
    try:
        yield parts
    finally:
        await parts.storage.close()


def _items(record_id: str, updates: list[bytes], first_seq: int = 1) -> list[PushItem]:
    return [PushItem(first_seq + i, "jobs", record_id, u) for i, u in enumerate(updates)]


# -- tokens and admission ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tokens_are_verified_once_for_every_endpoint(relay: Relayish) -> None:
    assert await relay.gateway.verify_token("good") == GRANT
    with pytest.raises(AuthError) as refused:
        await relay.gateway.verify_token("bad")
    assert refused.value.code == "bad_token"


@pytest.mark.asyncio
async def test_undecodable_and_gapped_updates_are_refused_the_rest_goes_through(
    relay: Relayish,
) -> None:
    first, second, third = text_edits(3)
    other = text_update("other", client_id=9)
    items = [
        PushItem(1, "jobs", "j", b"!"),
        PushItem(2, "jobs", "j", second),  # builds on `first`, which the relay does not have
        PushItem(3, "jobs", "k", other),
        PushItem(4, "jobs", "j", first),
        PushItem(5, "jobs", "j", second),  # now it can: `first` came before it in this push
        PushItem(6, "jobs", "j", third),
    ]
    admission, committed = await relay.push(items)
    assert [(r.seq, r.code) for r in admission.refused] == [(1, "invalid_update"), (2, "blocked")]
    assert [item.seq for item, _ in admission.accepted] == [3, 4, 5, 6]
    assert (relay.rejects("invalid_update"), relay.rejects("blocked")) == (1, 1)
    assert await committed == [1, 2, 3, 4]
    state = await relay.gateway.record_state("acme", "jobs", "j")
    assert state is not None and text_of(state) == "0,1,2,"


@pytest.mark.asyncio
async def test_the_validator_sees_the_committed_state_and_refusals_block_what_follows() -> None:
    seen: list[bytes | None] = []

    def no_twos(
        collection: str, record_id: str, update: bytes, state: bytes | None, grant: Grant
    ) -> None:
        seen.append(state)
        if "2," in text_of(merge_updates(state, update) if state else update):
            raise UpdateRejected("no twos")

    relay = _build(no_twos)
    await relay.storage.open()
    edits = text_edits(4)
    _, committed = await relay.push(_items("j", edits[:2]))
    assert await committed == [1, 2]
    admission, committed = await relay.push(_items("j", edits[2:], first_seq=3))
    assert admission.refused == [
        RejectItem(3, "rejected", "no twos"),
        RejectItem(4, "blocked", admission.refused[1].reason),  # builds on the refused one
    ]
    assert "waits for it" in admission.refused[1].reason
    assert not admission.accepted
    assert seen[0] is None and seen[-1] is not None and text_of(seen[-1]) == "0,1,"
    assert len(seen) == 3  # a blocked update never reaches the validator
    await relay.storage.close()


# -- submission and fan-out -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_updates_reach_other_subscribers_after_their_commit_with_its_cursor(
    relay: Relayish,
) -> None:
    pusher, watcher, other_tenant = Recorder(), Recorder(), Recorder()
    relay.fanout.subscribe("acme", ["jobs"], pusher)
    relay.fanout.subscribe("acme", ["jobs"], watcher)
    relay.fanout.subscribe("globex", ["jobs"], other_tenant)
    relay.storage.hold()
    first, second = text_edits(2)
    _, committed_a = await relay.push(_items("j", [first]), origin=pusher)
    _, committed_b = await relay.push(_items("j", [second], first_seq=2), origin=pusher)
    await asyncio.sleep(0)  # a loop iteration: nothing is sent before the commit
    assert (watcher.frames, committed_a.done(), len(relay.inflight)) == ([], False, 2)
    relay.storage.release()
    await watcher.next()
    assert (await committed_a, await committed_b) == ([1], [2])
    # one frame for the group commit, never to the pusher nor to another tenant
    assert watcher.frames == [([("jobs", "j", first), ("jobs", "j", second)], 2)]
    assert pusher.frames == [] and other_tenant.frames == []
    assert len(relay.inflight) == 0
    assert relay.metrics.updates_applied.value == 2


@pytest.mark.asyncio
async def test_early_copies_go_before_the_commit_and_the_cursor_after(relay: Relayish) -> None:
    early, late = Recorder(), Recorder()
    relay.fanout.subscribe("acme", ["jobs"], early)
    relay.storage.hold()
    update = text_edits(1)[0]
    _, committed = await relay.push(_items("j", [update]), early=True)
    await early.next()
    assert early.frames == [([("jobs", "j", update)], None)]  # no cursor: not committed
    relay.fanout.subscribe("acme", ["jobs"], late)  # subscribes between the copy and the commit
    relay.storage.release()
    await late.next()
    assert await committed == [1]
    assert early.frames[1:] == [([], 1)]  # the cursor alone: it has the update already
    assert late.frames == [([("jobs", "j", update)], 1)]  # the late copy, with the cursor


@pytest.mark.asyncio
async def test_a_failed_commit_acks_nothing_sends_no_cursor_and_forgets_its_clocks(
    relay: Relayish,
) -> None:
    watcher = Recorder()
    relay.fanout.subscribe("acme", ["jobs"], watcher)
    relay.storage.hold()
    first, second = text_edits(2)
    _, committed = await relay.push(_items("j", [first]), early=True)
    await watcher.next()  # the early copy is out
    relay.storage.release("disk full")
    with pytest.raises(StoreError, match="disk full"):
        await committed
    assert len(relay.inflight) == 0
    # What built on the failed update waits for it again, and it is taken when re-sent.
    admission, _ = await relay.push(_items("j", [second], first_seq=2))
    assert [r.code for r in admission.refused] == ["blocked"]
    _, committed = await relay.push(_items("j", [first, second]))
    assert await committed == [1, 2]
    await watcher.next()
    assert watcher.frames[-1][1] == 2  # the first cursor names the re-sent updates


@pytest.mark.asyncio
async def test_a_write_refused_by_a_closing_storage_is_withdrawn(relay: Relayish) -> None:
    watcher = Recorder()
    relay.fanout.subscribe("acme", ["jobs"], watcher)
    first = text_edits(1)[0]
    admission = await relay.gateway.admit(GRANT, _items("j", [first]))
    await relay.storage.close()
    with pytest.raises(InvalidState):
        relay.gateway.submit(admission, "r", None, early=True, on_commit=lambda done: None)
    await asyncio.sleep(0)  # a loop iteration: the early copy would have gone in it
    assert watcher.frames == [] and len(relay.inflight) == 0


# -- one update from a Yjs endpoint -----------------------------------------------------------


@pytest.mark.asyncio
async def test_yjs_updates_are_echoed_to_the_room_and_reach_native_subscribers(
    relay: Relayish,
) -> None:
    member, other_record, watcher = Recorder(), Recorder(), Recorder()
    relay.fanout.rooms.join(("acme", "jobs", "j"), member)
    relay.fanout.rooms.join(("acme", "jobs", "k"), other_record)
    relay.fanout.subscribe("acme", ["jobs"], watcher)
    first, second = text_edits(2)
    relay.storage.hold()
    one = await relay.gateway.submit_update(GRANT, "yjs-1", member, "jobs", "j", first)
    two = await relay.gateway.submit_update(GRANT, "yjs-1", member, "jobs", "j", second)
    relay.storage.release()
    await member.next()
    assert (await one, await two) == (1, 2)
    # the sender included, the group commit's updates merged into one message
    assert len(member.room_updates) == 1 and text_of(member.room_updates[0]) == "0,1,"
    assert other_record.room_updates == []
    assert watcher.frames == [([("jobs", "j", first), ("jobs", "j", second)], 2)]


@pytest.mark.asyncio
async def test_a_yjs_update_is_refused_by_exception(relay: Relayish) -> None:
    first, second = text_edits(2)
    with pytest.raises(UpdateBlocked):
        await relay.gateway.submit_update(GRANT, "yjs-1", None, "jobs", "j", second)
    with pytest.raises(UpdateRejected) as invalid:
        await relay.gateway.submit_update(GRANT, "yjs-1", None, "jobs", "j", b"!")
    assert type(invalid.value) is UpdateRejected and relay.rejects("invalid_update") == 1
    relay.gateway.close()
    with pytest.raises(InvalidState):
        await relay.gateway.submit_update(GRANT, "yjs-1", None, "jobs", "j", first)


# -- deletion under record-level access ---------------------------------------------------------


@pytest.mark.asyncio
async def test_a_deletion_is_judged_on_the_record_as_the_deleter_saw_it(
    relay: Relayish,
) -> None:
    # docs/relay.md, "Deletion and purge": a deleted record keeps the indexed fields it had,
    # so a deletion, and a write that loses to it, are judged on the record as it was (its
    # document shows no field: judged on that, a deletion would "move it outside").
    def scoped(sub: str) -> Grant:
        return Grant(
            "acme",
            frozenset({"jobs"}),
            4_000_000_000,
            {"jobs": Eq("owner", Claim("sub"))},
            {"sub": sub},
        )

    writer = RecordWriter()
    await relay.storage.write("acme", "r0", [("jobs", "j1", writer.write(owner="amy"))])
    late = RecordWriter(replica="late")  # amy's other device, offline during the deletion
    late.doc.apply_update(writer.doc.get_update())
    tombstone = writer.delete()
    bob = await relay.gateway.admit(scoped("bob"), _items("j1", [tombstone]))
    assert [r.code for r in bob.refused] == ["forbidden"]  # not his record
    amy = await relay.gateway.admit(scoped("amy"), _items("j1", [tombstone]))
    assert amy.refused == [] and len(amy.accepted) == 1
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    relay.gateway.submit(amy, "r1", None, early=False, on_commit=done.set_result)
    await done
    fields = await relay.storage.fields("acme", [("jobs", "j1")])
    assert fields == {("jobs", "j1"): {"owner": "amy"}}
    # A write that loses to the deletion is taken (and logged as lost by every replica), from
    # a token that could write the record; not from another.
    edit = late.write(note="on my way")
    assert (await relay.gateway.admit(scoped("bob"), _items("j1", [edit]))).refused != []
    amy = await relay.gateway.admit(scoped("amy"), _items("j1", [edit], first_seq=2))
    assert amy.refused == []
    written: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    relay.gateway.submit(amy, "r2", None, early=False, on_commit=written.set_result)
    await written
