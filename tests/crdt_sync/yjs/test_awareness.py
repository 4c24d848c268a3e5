"""Awareness bookkeeping for a relay room: y-protocols rules, ownership, removal, expiry."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Awareness, Doc

from crdt_sync.errors import InvalidMessage
from crdt_sync.yjs.awareness import (
    OUTDATED_TIMEOUT,
    AwarenessEntry,
    AwarenessRoom,
    decode_awareness_update,
    encode_awareness_update,
)


def _update(*entries: tuple[int, int, object]) -> bytes:
    return encode_awareness_update(
        AwarenessEntry(c, k, None if s is None else json.dumps(s)) for c, k, s in entries
    )


def test_encoding_matches_pycrdt_awareness() -> None:
    awareness = Awareness(Doc())
    awareness.set_local_state({"user": "ana", "cursor": 3})
    data = awareness.encode_awareness_update([awareness.client_id])
    [entry] = decode_awareness_update(data)
    assert entry.client_id == awareness.client_id
    assert json.loads(entry.state or "null") == {"user": "ana", "cursor": 3}
    # And ours is readable by pycrdt.
    other = Awareness(Doc())
    other.apply_awareness_update(_update((7, 1, {"user": "bo"})), origin="test")
    assert other.states[7] == {"user": "bo"}


def test_newer_clock_wins_older_ignored() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    assert room.apply("a", _update((1, 2, {"v": 2})), now=0) is not None
    assert room.apply("a", _update((1, 1, {"v": 1})), now=0) is None
    assert room.apply("a", _update((1, 2, {"v": 9})), now=0) is None  # same clock, state
    assert json.loads(room.states[1]) == {"v": 2}
    broadcast = room.apply("a", _update((1, 3, {"v": 3})), now=0)
    assert broadcast is not None
    assert decode_awareness_update(broadcast) == [AwarenessEntry(1, 3, '{"v": 3}')]


def test_null_state_removes_even_at_the_same_clock() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.apply("a", _update((1, 4, {"v": 1})), now=0)
    out = room.apply("a", _update((1, 4, None)), now=0)
    assert out is not None and decode_awareness_update(out) == [AwarenessEntry(1, 4, None)]
    assert room.states == {}
    assert room.full_update() is None


def test_full_update_carries_every_present_state() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.apply("a", _update((1, 1, {"n": "a"})), now=0)
    room.apply("b", _update((2, 5, {"n": "b"}), (3, 1, None)), now=0)
    full = room.full_update()
    assert full is not None
    assert sorted(decode_awareness_update(full), key=lambda e: e.client_id) == [
        AwarenessEntry(1, 1, '{"n": "a"}'),
        AwarenessEntry(2, 5, '{"n": "b"}'),
    ]


def test_closing_a_connection_removes_its_clients_with_clock_plus_one() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.apply("a", _update((1, 1, {"n": "a"}), (4, 7, {"n": "a2"})), now=0)
    room.apply("b", _update((2, 1, {"n": "b"})), now=0)
    assert room.clients_of("a") == {1, 4}
    removal = room.remove_connection("a")
    assert removal is not None
    assert decode_awareness_update(removal) == [
        AwarenessEntry(1, 2, None),
        AwarenessEntry(4, 8, None),
    ]
    assert set(room.states) == {2}
    assert room.remove_connection("a") is None
    # pycrdt (like y-protocols) drops the states on this removal update.
    peer = Awareness(Doc())
    peer.apply_awareness_update(_update((1, 1, {"n": "a"})), origin="t")
    peer.apply_awareness_update(removal, origin="t")
    assert 1 not in peer.states


def test_latest_announcer_owns_a_client() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.apply("old", _update((1, 1, {"n": 1})), now=0)
    room.apply("new", _update((1, 2, {"n": 1})), now=0)
    assert room.remove_connection("old") is None
    assert set(room.states) == {1}


def test_expire_drops_states_not_renewed() -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    room.apply("a", _update((1, 1, {})), now=0)
    room.apply("a", _update((2, 1, {})), now=20)
    assert room.expire(now=OUTDATED_TIMEOUT - 1) is None
    expired = room.expire(now=OUTDATED_TIMEOUT)
    assert expired is not None and decode_awareness_update(expired) == [AwarenessEntry(1, 2, None)]
    assert set(room.states) == {2}


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x01\x01", b"\x01\x01\x01\x03abc"])
def test_malformed_update_raises_invalid_message(data: bytes) -> None:
    room: AwarenessRoom[str] = AwarenessRoom()
    with pytest.raises(InvalidMessage):
        room.apply("a", data, now=0)
    assert len(room) == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=48))
def test_fuzz_decoder_raises_only_invalid_message(data: bytes) -> None:
    try:
        entries = decode_awareness_update(data)
    except InvalidMessage:
        return
    assert encode_awareness_update(entries) is not None


_ops = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 3),
        st.integers(0, 4),
        st.one_of(st.none(), st.integers(0, 9)),
        st.booleans(),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_room_matches_pycrdt_awareness_as_a_peer(
    ops: list[tuple[str, int, int, int | None, bool]],
) -> None:
    """A peer applying every broadcast ends with the room's states (what JS clients see)."""
    room: AwarenessRoom[str] = AwarenessRoom()
    peer = Awareness(Doc(client_id=999_999))
    for conn, client, clock, value, close in ops:
        if close:
            out = room.remove_connection(conn)
        else:
            out = room.apply(
                conn, _update((client, clock, None if value is None else {"v": value})), 0
            )
        if out is not None:
            peer.apply_awareness_update(out, origin="relay")
    remote = {c: s for c, s in peer.states.items() if c != 999_999}
    assert remote == {c: json.loads(s) for c, s in room.states.items()}
