"""The relay never stores nor acknowledges an update that depends on updates it does not have.

Yjs updates of one client form a contiguous clock sequence per record: when entry N of a record
is refused, the same replica's entries N+1, N+2 refer to N's clocks and could integrate nowhere.
The relay refuses them ``blocked`` (not stored, not acked) and takes them once N is there.
Real relay processes, real websockets, a real validator module loaded with ``--validator``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crdt_sync.server import Relay, RelayConfig, UpdateRejected, mint, secret_verifier
from helpers.relay import RelayClient, RelayProcess, start_relay
from helpers.yjs_checks import nothing_pending
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text, get_state, get_update, merge_updates
from websockets.asyncio.client import connect

from crdt_sync.protocol import Acked, Rejected
from crdt_sync.yjs.hocuspocus import MessageType as HP
from crdt_sync.yjs.hocuspocus import encode_frame
from crdt_sync.yjs.integrate import covers
from crdt_sync.yjs.lib0 import Reader, write_var_string, write_var_uint
from crdt_sync.yjs.updates import decode_state_vector, encode_state_vector
from crdt_sync.yjs.y_websocket import SyncType, UpdateReceived, decode_message, encode_sync

WAIT = 10.0

RULES = """
from pycrdt import Doc, Map
from crdt_sync.server import UpdateRejected


def no_cancelling(collection, record_id, update, current_state, grant):
    doc = Doc()
    if current_state is not None:
        doc.apply_update(current_state)
    doc.apply_update(update)
    if doc.get("fields", type=Map).get("status") == "cancelled":
        raise UpdateRejected("only the office can cancel a job")
"""


@pytest.fixture(scope="module")
def validating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay refusing cancellations (tests use distinct tenants)."""
    data = tmp_path_factory.mktemp("validating")
    (data / "job_rules.py").write_text(RULES)
    relay = start_relay(data / "data", args=["--validator", "job_rules:no_cancelling"])
    yield relay
    relay.kill()


class Editor:
    """One Yjs client editing records: each edit is one update, as a replica's outbox entry."""

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.docs: dict[str, Doc[Any]] = {}

    def edit(self, record_id: str, change: Callable[[Doc[Any]], None]) -> bytes:
        doc = self.docs.setdefault(record_id, Doc(client_id=self.client_id))
        updates: list[bytes] = []
        subscription = doc.observe(lambda event: updates.append(event.update))
        try:
            with doc.transaction():
                change(doc)
        finally:
            doc.unobserve(subscription)
        (update,) = updates
        return update


def _status(value: str) -> Callable[[Doc[Any]], None]:
    def set_status(doc: Doc[Any]) -> None:
        doc.get("fields", type=Map)["status"] = value

    return set_status


def _note(text: str) -> Callable[[Doc[Any]], None]:
    def append(doc: Doc[Any]) -> None:
        notes = doc.get("notes", type=Text)
        notes += text

    return append


def _read(state: bytes) -> tuple[Any, str]:
    doc: Doc[Any] = Doc()
    doc.apply_update(state)
    return doc.get("fields", type=Map).get("status"), str(doc.get("notes", type=Text))


@pytest.mark.asyncio
async def test_entries_after_a_refused_one_are_blocked_not_acked(validating: RelayProcess) -> None:
    tech = Editor(client_id=41)
    open_job = tech.edit("job-1", _status("open"))
    cancel = tech.edit("job-1", _status("cancelled"))  # refused by the validator
    note_1 = tech.edit("job-1", _note("arrived "))  # builds on the refused entry
    other = tech.edit("job-2", _note("unrelated"))
    note_2 = tech.edit("job-1", _note("fixed the leak"))
    token = validating.token("blocked-push", ["jobs"])
    async with RelayClient.open(validating.url, token, "tech") as client:
        acked, _ = await client.push_and_settle([(1, "jobs", "job-1", open_job)])
        assert acked == {1}
        acked, refused = await client.push_and_settle(
            [
                (2, "jobs", "job-1", cancel),
                (3, "jobs", "job-1", note_1),
                (4, "jobs", "job-2", other),
                (5, "jobs", "job-1", note_2),
            ]
        )
        assert acked == {4}
        assert refused[2] == ("rejected", "only the office can cancel a job")
        assert [refused[s][0] for s in (3, 5)] == ["blocked", "blocked"]
        assert "earlier update of this record" in refused[3][1]
        # Pushed again later, alone: still blocked (the refused entry is still missing).
        _, refused = await client.push_and_settle([(6, "jobs", "job-1", note_1)])
        assert refused[6][0] == "blocked"
        stored = await client.fetch([("jobs", "job-1"), ("jobs", "job-2")])
    assert nothing_pending(stored[("jobs", "job-1")])
    assert _read(stored[("jobs", "job-1")]) == ("open", "")
    assert _read(stored[("jobs", "job-2")])[1] == "unrelated"


@pytest.mark.asyncio
async def test_a_fixed_entry_unblocks_the_ones_after_it(validating: RelayProcess) -> None:
    tech = Editor(client_id=42)
    cancel = tech.edit("job-1", _status("cancelled"))
    note = tech.edit("job-1", _note("parts ordered"))
    token = validating.token("unblocked", ["jobs"])
    async with RelayClient.open(validating.url, token, "tech") as client:
        acked, refused = await client.push_and_settle(
            [(1, "jobs", "job-1", cancel), (2, "jobs", "job-1", note)]
        )
        assert (acked, sorted(refused)) == (set(), [1, 2])
        # The app's fix folded into the refused entry (what the replica's resolve() uploads):
        # the refused update, the later one and the fix, as one update.
        fix = tech.edit("job-1", _status("on_hold"))
        acked, refused = await client.push_and_settle(
            [(1, "jobs", "job-1", merge_updates(cancel, note, fix)), (2, "jobs", "job-1", note)]
        )
        assert (acked, refused) == ({1, 2}, {})
        stored = await client.fetch([("jobs", "job-1")])
    assert nothing_pending(stored[("jobs", "job-1")])
    assert _read(stored[("jobs", "job-1")]) == ("on_hold", "parts ordered")


@pytest.mark.asyncio
async def test_a_gap_is_blocked_without_a_validator_too(relay: RelayProcess) -> None:
    tech = Editor(client_id=43)
    first = tech.edit("job-1", _note("one "))
    second = tech.edit("job-1", _note("two "))
    deletion = tech.edit("job-1", lambda doc: doc.get("notes", type=Text).__delitem__(slice(0, 4)))
    token = relay.token("gaps", ["jobs"])
    async with RelayClient.open(relay.url, token, "tech") as client:
        # A later entry, and a deletion of what the missing entry inserted: both blocked.
        acked, refused = await client.push_and_settle(
            [(2, "jobs", "job-1", second), (3, "jobs", "job-1", deletion)]
        )
        assert (acked, {s: c for s, (c, _) in refused.items()}) == (
            set(),
            {2: "blocked", 3: "blocked"},
        )
        assert await client.fetch([("jobs", "job-1")]) == {}  # nothing stored
        # Once the first is there, they are taken: in one push, in order.
        acked, refused = await client.push_and_settle(
            [
                (1, "jobs", "job-1", first),
                (2, "jobs", "job-1", second),
                (3, "jobs", "job-1", deletion),
            ]
        )
        assert (acked, refused) == ({1, 2, 3}, {})
        stored = await client.fetch([("jobs", "job-1")])
    assert nothing_pending(stored[("jobs", "job-1")])
    assert _read(stored[("jobs", "job-1")])[1] == "two "


@pytest.mark.asyncio
async def test_pipelined_pushes_build_on_entries_not_yet_committed(relay: RelayProcess) -> None:
    """Entries of earlier push frames still in the group commit count as the relay's."""
    tech = Editor(client_id=44)
    updates = [tech.edit("job-1", _note(f"{i} ")) for i in range(40)]
    token = relay.token("pipelined", ["jobs"])
    async with RelayClient.open(relay.url, token, "tech") as client:
        for seq, update in enumerate(updates, start=1):  # one frame each, none waited for
            await client.push([(seq, "jobs", "job-1", update)])
        acked: set[int] = set()
        while len(acked) < len(updates):
            event = await client.wait_for(lambda e: isinstance(e, Acked | Rejected))
            assert isinstance(event, Acked), event
            acked.update(event.seqs)
        stored = await client.fetch([("jobs", "job-1")])
    assert _read(stored[("jobs", "job-1")])[1] == "".join(f"{i} " for i in range(40))


# -- Yjs endpoints --------------------------------------------------------------------------


async def _recv(ws: Any) -> bytes:
    message = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(message, bytes)
    return message


def _hp(name: str, kind: int, payload: bytes) -> bytes:
    return encode_frame(name, kind, payload)


def _parse_hp(frame: bytes) -> tuple[str, int, bytes]:
    reader = Reader(frame)
    return reader.var_string(), reader.var_uint(), reader.rest()


@pytest.mark.asyncio
async def test_y_websocket_update_with_a_gap_is_neither_stored_nor_echoed(
    relay: RelayProcess,
) -> None:
    tech = Editor(client_id=45)
    first = tech.edit("job-1", _note("offline "))
    second = tech.edit("job-1", _note("online"))
    token = relay.token("yjs-gap", ["jobs"])
    async with connect(f"{relay.url}/yjs/jobs/job-1?token={token}") as ws:
        await _recv(ws)  # the relay's SyncStep1
        await ws.send(write_var_uint(0) + encode_sync(SyncType.UPDATE, second))
        # What the client's SyncStep2 would then carry: the offline edit. Its echo is the
        # first message back: the update with the gap was not echoed (nor stored).
        await ws.send(write_var_uint(0) + encode_sync(SyncType.STEP2, first))
        echo = decode_message(await _recv(ws))
        assert echo == UpdateReceived(first, step2=False)
        await ws.send(write_var_uint(0) + encode_sync(SyncType.UPDATE, second))
        assert decode_message(await _recv(ws)) == UpdateReceived(second, step2=False)
    async with RelayClient.open(relay.url, token, "reader") as reader:
        stored = await reader.fetch([("jobs", "job-1")])
    assert nothing_pending(stored[("jobs", "job-1")])
    assert _read(stored[("jobs", "job-1")])[1] == "offline online"


@pytest.mark.asyncio
async def test_hocuspocus_update_after_a_refused_one_is_not_acknowledged(
    validating: RelayProcess,
) -> None:
    tech = Editor(client_id=46)
    open_job = tech.edit("job-1", _status("open"))
    cancel = tech.edit("job-1", _status("cancelled"))
    note = tech.edit("job-1", _note("arrived"))
    name = "jobs/job-1"
    auth = (
        write_var_uint(0)
        + write_var_string(validating.token("hp-gap", ["jobs"]))
        + write_var_string("4.8.0")
    )

    async def statuses(ws: Any, count: int) -> list[tuple[int, bytes]]:
        seen: list[tuple[int, bytes]] = []
        while len([s for s in seen if s[0] in (HP.SYNC_STATUS, HP.AUTH)]) < count:
            doc, kind, payload = _parse_hp(await _recv(ws))
            assert doc == name
            seen.append((kind, payload))
        return [s for s in seen if s[0] in (HP.SYNC_STATUS, HP.AUTH)]

    async with connect(f"{validating.url}/hocuspocus") as ws:
        await ws.send(_hp(name, HP.AUTH, auth))
        await ws.send(_hp(name, HP.SYNC, encode_sync(SyncType.UPDATE, open_job)))
        assert await statuses(ws, 2) == [
            (HP.AUTH, bytes([2]) + write_var_string("read-write")),
            (HP.SYNC_STATUS, b"\x01"),
        ]
        await ws.send(_hp(name, HP.SYNC, encode_sync(SyncType.UPDATE, cancel)))
        refused = await statuses(ws, 2)
        assert refused[0] == (HP.SYNC_STATUS, b"\x00")
        assert refused[1][0] == HP.AUTH and refused[1][1][0] == 1  # PermissionDenied
        # The provider authenticates again and sends its next edit, which builds on the
        # refused one: not stored, not acknowledged (SyncStatus(false), document kept open).
        await ws.send(_hp(name, HP.AUTH, auth))
        await ws.send(_hp(name, HP.SYNC, encode_sync(SyncType.UPDATE, note)))
        after = await statuses(ws, 2)
        assert after == [
            (HP.AUTH, bytes([2]) + write_var_string("read-write")),
            (HP.SYNC_STATUS, b"\x00"),
        ]
    async with RelayClient.open(
        validating.url, validating.token("hp-gap", ["jobs"]), "reader"
    ) as reader:
        stored = await reader.fetch([("jobs", "job-1")])
    assert nothing_pending(stored[("jobs", "job-1")])
    assert _read(stored[("jobs", "job-1")]) == ("open", "")


# -- property: whatever the validator refuses, nothing acknowledged is lost --------------------

EDITORS = (51, 52)
EVERYTHING = encode_state_vector({client: 2**32 - 1 for client in EDITORS})
REFUSE = "refuse-me"  # the validator refuses every update containing this word

edits = st.lists(
    st.tuples(
        st.sampled_from(EDITORS),
        st.sampled_from(["job-1", "job-2"]),
        st.sampled_from(["note", "status", "delete"]),
        st.booleans(),  # refused by the validator
    ),
    min_size=1,
    max_size=14,
)


def refuse_marked(
    collection: str, record_id: str, update: bytes, current_state: bytes | None, grant: Any
) -> None:
    """The property's validator (run in process)."""
    if REFUSE.encode() in update:
        raise UpdateRejected("refused by the test")


def _change(kind: str, refused: bool, n: int) -> Callable[[Doc[Any]], None]:
    word = f"{REFUSE if refused else 'w'}{n} "
    if kind == "status":
        return _status(word)
    if kind == "delete" and not refused:  # a deletion alone (or a note if there is nothing)

        def delete(doc: Doc[Any]) -> None:
            notes = doc.get("notes", type=Text)
            if len(notes):
                del notes[0:1]
            else:
                notes += word

        return delete
    return _note(word)


async def _upload(
    client: RelayClient, items: list[tuple[int, str, str, bytes]], frames: int, pipelined: bool
) -> tuple[set[int], dict[int, str]]:
    """Push ``items`` in ``frames`` frames, each awaited or all at once; the outcome of each."""
    acked: set[int] = set()
    refused: dict[int, str] = {}
    size = -(-len(items) // frames)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    for number, chunk in enumerate(chunks, start=1):
        await client.push(chunk)
        if pipelined and number < len(chunks):
            continue
        wanted = {seq for seq, *_ in (items if pipelined else chunk)}
        while not wanted <= acked | refused.keys():
            event = await client.wait_for(lambda e: isinstance(e, Acked | Rejected))
            if isinstance(event, Acked):
                acked.update(event.seqs)
            else:
                assert isinstance(event, Rejected)
                refused.update({i.seq: i.code for i in event.items})
    return acked, refused


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits, st.integers(1, 4), st.booleans())
def test_whatever_the_validator_refuses_every_acknowledged_entry_is_integrated(
    script: list[tuple[int, str, str, bool]], frames: int, pipelined: bool
) -> None:
    """Two editors (replicas) push their entries concurrently to an in-process relay (real
    websockets, real SQLite) whose validator refuses some of them. Every acknowledged entry
    is integrated in the relay's stored state, which holds nothing pending; entries before
    the first refusal in their editor's sequence of a record are all acknowledged."""
    editors = {client: Editor(client) for client in EDITORS}
    entries: dict[int, list[tuple[int, str, str, bytes]]] = {client: [] for client in EDITORS}
    refused_by_hook: set[tuple[int, int]] = set()
    for n, (client, record_id, kind, refuse) in enumerate(script, start=1):
        update = editors[client].edit(record_id, _change(kind, refuse, n))
        entries[client].append((n, "jobs", record_id, update))
        if REFUSE.encode() in update:
            refused_by_hook.add((client, n))

    async def run() -> tuple[dict[int, tuple[set[int], dict[int, str]]], dict[Any, bytes]]:
        with tempfile.TemporaryDirectory() as data:
            config = RelayConfig(
                port=0,
                data_dir=Path(data),
                verifier=secret_verifier("s"),
                validator=refuse_marked,
                rate_limit=0,
            )
            relay = Relay(config)
            await relay.start()
            token = mint("s", "props", ["jobs"], 600)
            try:
                async with (
                    RelayClient.open(relay.url, token, "a") as a,
                    RelayClient.open(relay.url, token, "b") as b,
                ):
                    clients = dict(zip(EDITORS, (a, b), strict=True))
                    outcomes = await asyncio.gather(
                        *(
                            _upload(clients[c], entries[c], frames, pipelined)
                            for c in EDITORS
                            if entries[c]
                        )
                    )
                    stored = await a.fetch([("jobs", "job-1"), ("jobs", "job-2")])
            finally:
                await relay.shutdown()
        busy = [c for c in EDITORS if entries[c]]
        return dict(zip(busy, outcomes, strict=True)), stored

    outcomes, stored = asyncio.run(run())
    states = {key: decode_state_vector(get_state(state)) for key, state in stored.items()}
    for state in stored.values():
        assert nothing_pending(state)
    for client, (acked, refused) in outcomes.items():
        after_refusal: set[str] = set()  # records with a refused entry of this editor so far
        for seq, _, record_id, update in entries[client]:
            if seq in acked:
                vector = states[("jobs", record_id)]
                assert covers(vector, update) and covers(vector, get_update(update, EVERYTHING))
            if (client, seq) in refused_by_hook:
                assert seq not in acked
            if record_id not in after_refusal:  # nothing refused before it: never blocked
                expected = "rejected" if (client, seq) in refused_by_hook else None
                assert refused.get(seq) == expected
            if seq in refused:
                after_refusal.add(record_id)
