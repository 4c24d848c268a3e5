"""The y-websocket codec and server session: byte-exact frames, pycrdt cross-checks, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text, create_sync_message, create_update_message, handle_sync_message

from crdt_sync.errors import InvalidMessage, InvalidState
from crdt_sync.yjs.y_websocket import (
    CLOSE_PERMISSION_DENIED,
    CLOSE_PROTOCOL_ERROR,
    AwarenessQueried,
    AwarenessReceived,
    PermissionDenied,
    StateVectorReceived,
    UpdateReceived,
    YjsServerSession,
    close_reason,
    decode_message,
    encode_permission_denied,
)


def received(session: YjsServerSession, frame: bytes) -> list[Any]:
    """``receive_data`` then ``events_received``: what the driver acts on for ``frame``."""
    session.receive_data(frame)
    return session.events_received()


def _doc_with(text: str) -> Doc:
    doc: Doc = Doc()
    doc["t"] = Text(text)
    return doc


def test_decode_sync_step1_update_step2_bytes() -> None:
    assert decode_message(bytes([0, 0, 2, 0xAA, 0xBB])) == StateVectorReceived(b"\xaa\xbb")
    assert decode_message(bytes([0, 1, 1, 0x07])) == UpdateReceived(b"\x07", step2=True)
    assert decode_message(bytes([0, 2, 0])) == UpdateReceived(b"", step2=False)
    assert decode_message(bytes([1, 2, 0x00, 0x01])) == AwarenessReceived(b"\x00\x01")
    assert decode_message(bytes([3])) == AwarenessQueried()
    assert decode_message(bytes([2, 0, 2]) + b"no") == PermissionDenied("no")


def test_decode_ignores_unknown_top_level_types() -> None:
    assert decode_message(bytes([4, 1, 2, 3])) is None
    assert decode_message(bytes([0x80, 0x01])) is None  # varUint 128


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        bytes([0]),
        bytes([0, 0]),
        bytes([0, 0, 5, 1]),
        bytes([0, 3, 0]),
        bytes([1, 9]),
        bytes([2, 1, 0]),
        bytes([2, 0, 2, 0xFF, 0xFE]),
        bytes([0xFF] * 11),
    ],
)
def test_decode_malformed_raises_invalid_message(frame: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_message(frame)


def test_pycrdt_sync_messages_decode_and_answer() -> None:
    server = _doc_with("hello")
    client: Doc = Doc()
    # pycrdt's SyncStep1 (what a Yrs/Yjs client sends) decodes to its state vector.
    event = decode_message(create_sync_message(client))
    assert event == StateVectorReceived(client.get_state())
    session = YjsServerSession()
    session.answer_sync_step1(server.get_update(client.get_state()), server.get_state())
    step2, step1 = session.data_to_send()
    # The client applies our SyncStep2 and answers our SyncStep1 with its own SyncStep2.
    assert handle_sync_message(step2[1:], client) is None
    assert str(client.get("t", type=Text)) == "hello"
    reply = handle_sync_message(step1[1:], client)
    assert reply is not None
    answer = decode_message(reply)
    assert isinstance(answer, UpdateReceived) and answer.step2


def test_update_frames_match_pycrdt() -> None:
    doc = _doc_with("x")
    update = doc.get_update()
    session = YjsServerSession()
    session.send_update(update)
    assert session.data_to_send() == [create_update_message(update)]
    assert decode_message(create_update_message(update)) == UpdateReceived(update, step2=False)


def test_session_events_in_order_and_output_drained() -> None:
    session = YjsServerSession()
    assert received(session, bytes([3])) == [AwarenessQueried()]
    assert received(session, bytes([9])) == []
    session.send_sync_step1(b"\x00")
    session.send_awareness(b"\x00")
    assert session.data_to_send() == [bytes([0, 0, 1, 0]), bytes([1, 1, 0])]
    assert session.data_to_send() == []


def test_deny_sends_permission_denied_then_closes() -> None:
    session = YjsServerSession()
    session.deny("bad token")
    assert session.data_to_send() == [bytes([2, 0, 9]) + b"bad token"]
    assert (session.close_code, session.close_reason) == (CLOSE_PERMISSION_DENIED, "bad token")
    assert received(session, bytes([3])) == []
    session.deny("again")  # idempotent
    assert session.data_to_send() == []
    with pytest.raises(InvalidState):
        session.send_update(b"\x00\x00")


def test_malformed_frame_fails_the_session_without_raising() -> None:
    session = YjsServerSession()
    assert received(session, bytes([0, 7, 0])) == []
    assert session.close_code == CLOSE_PROTOCOL_ERROR
    assert isinstance(session.close_exc, InvalidMessage)
    assert received(session, bytes([3])) == []


def test_close_reason_fits_a_close_frame() -> None:
    assert len(close_reason("é" * 100).encode()) <= 123
    assert close_reason("short") == "short"
    assert encode_permission_denied("") == bytes([2, 0, 0])


_frames = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda head, rest: bytes(head) + rest,
        st.lists(st.integers(0, 3), min_size=1, max_size=3),
        st.binary(max_size=32),
    ),
)


@settings(max_examples=400, deadline=None)
@given(_frames)
def test_fuzz_decoder_raises_only_invalid_message(frame: bytes) -> None:
    try:
        event = decode_message(frame)
    except InvalidMessage:
        return
    assert event is None or isinstance(
        event,
        StateVectorReceived
        | UpdateReceived
        | AwarenessReceived
        | AwarenessQueried
        | PermissionDenied,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(_frames, max_size=8))
def test_fuzz_session_never_raises(frames: list[bytes]) -> None:
    session = YjsServerSession()
    for frame in frames:
        events = received(session, frame)
        assert len(events) <= 1
        if session.closing:
            assert session.close_code == CLOSE_PROTOCOL_ERROR
            assert events == []
