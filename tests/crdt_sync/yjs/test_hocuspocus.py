"""The Hocuspocus codec and server session: provider 4.x frames, per-document auth, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import InvalidMessage, InvalidState
from crdt_sync.yjs.hocuspocus import (
    CLOSE_RESET,
    PING,
    PONG,
    AwarenessQueried,
    AwarenessReceived,
    DocumentClosed,
    DocumentUpdateReceived,
    HocuspocusServerSession,
    MessageType,
    PongReceived,
    StatelessReceived,
    StateVectorReceived,
    TokenReceived,
    decode_frame,
    encode_frame,
)
from crdt_sync.yjs.lib0 import write_var_string
from crdt_sync.yjs.y_websocket import CLOSE_PROTOCOL_ERROR


def received(session: HocuspocusServerSession, frame: bytes) -> list[Any]:
    """``receive_data`` then ``events_received``: what the driver acts on for ``frame``."""
    session.receive_data(frame)
    return session.events_received()


def authenticated(session: HocuspocusServerSession, name: str, *args: Any) -> list[Any]:
    """``authenticate`` then ``events_received``: the events held for ``name``."""
    session.authenticate(name, *args)
    return session.events_received()


def _name(name: str) -> bytes:
    return write_var_string(name)


# Frames exactly as @hocuspocus/provider 4.8.0 writes them (src/OutgoingMessages/*.ts).
AUTH = _name("jobs/j1") + bytes([2, 0]) + _name("tok") + _name("4.8.0")
STEP1 = _name("jobs/j1") + bytes([0, 0, 1, 0])
UPDATE = _name("jobs/j1") + bytes([0, 2, 2, 0, 0])
AWARENESS = _name("jobs/j1") + bytes([1, 1, 0])


def test_decode_provider_frames() -> None:
    assert decode_frame(AUTH) == TokenReceived("jobs/j1", "tok", "4.8.0")
    assert decode_frame(_name("d") + bytes([2, 0]) + _name("t")) == TokenReceived("d", "t", None)
    assert decode_frame(STEP1) == StateVectorReceived("jobs/j1", b"\x00")
    assert decode_frame(_name("d") + bytes([4, 0, 0])) == StateVectorReceived("d", b"", True)
    assert decode_frame(UPDATE) == DocumentUpdateReceived("jobs/j1", b"\x00\x00", False)
    assert decode_frame(_name("d") + bytes([0, 1, 0])) == DocumentUpdateReceived("d", b"", True)
    assert decode_frame(AWARENESS) == AwarenessReceived("jobs/j1", b"\x00")
    assert decode_frame(_name("d") + bytes([3])) == AwarenessQueried("d")
    assert decode_frame(_name("d") + bytes([5]) + _name("hi")) == StatelessReceived("d", "hi")
    assert decode_frame(_name("d") + bytes([7])) == DocumentClosed("d")
    assert decode_frame(PONG) == PongReceived()
    assert decode_frame(_name("d") + bytes([8, 1])) is None  # server-only type: ignored


def test_session_awareness_names_keep_the_document() -> None:
    event = decode_frame(_name("jobs/j1\0abc") + bytes([3]))
    assert isinstance(event, AwarenessQueried)
    assert event.name == "jobs/j1\0abc" and event.document == "jobs/j1"


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x05ab",
        _name("d"),
        _name("d") + bytes([0, 9, 0]),
        _name("d") + bytes([2, 1]),
        _name("d") + bytes([2, 0, 4]),
        b"\x02\xff\xfe\x00",
        _name("d") + bytes([1, 3, 0]),
    ],
)
def test_decode_malformed_raises_invalid_message(frame: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_frame(frame)


def _open(session: HocuspocusServerSession, name: str = "jobs/j1") -> None:
    token = _name(name) + bytes([2, 0]) + _name("tok")
    assert received(session, token) == [TokenReceived(name, "tok", None)]
    authenticated(session, name)
    session.data_to_send()


def test_authenticate_replies_and_releases_held_messages_in_order() -> None:
    session = HocuspocusServerSession()
    assert received(session, AUTH) == [TokenReceived("jobs/j1", "tok", "4.8.0")]
    assert received(session, STEP1) == []
    assert received(session, AWARENESS) == []
    held = authenticated(session, "jobs/j1")
    assert held == [StateVectorReceived("jobs/j1", b"\x00"), AwarenessReceived("jobs/j1", b"\x00")]
    assert session.data_to_send() == [_name("jobs/j1") + bytes([2, 2]) + _name("read-write")]
    assert received(session, UPDATE) == [DocumentUpdateReceived("jobs/j1", b"\x00\x00", False)]


def test_messages_before_the_token_wait_for_it() -> None:
    session = HocuspocusServerSession()
    assert received(session, STEP1) == []
    assert received(session, AUTH) == [TokenReceived("jobs/j1", "tok", "4.8.0")]
    assert authenticated(session, "jobs/j1") == [StateVectorReceived("jobs/j1", b"\x00")]


def test_deny_refuses_one_document_and_keeps_the_socket() -> None:
    session = HocuspocusServerSession()
    _open(session, "jobs/ok")
    received(session, _name("jobs/no") + bytes([2, 0]) + _name("bad"))
    received(session, _name("jobs/no") + bytes([0, 2, 0]))
    session.deny("jobs/no", "forbidden")
    assert session.data_to_send() == [_name("jobs/no") + bytes([2, 1]) + _name("forbidden")]
    assert not session.closing
    assert session.open_documents == ["jobs/ok"]
    with pytest.raises(InvalidState):
        authenticated(session, "jobs/no")
    with pytest.raises(InvalidState):
        session.send_update("jobs/no", b"\x00\x00")


def test_sync_answer_order_and_status_acks() -> None:
    session = HocuspocusServerSession()
    _open(session)
    session.answer_sync_step1("jobs/j1", b"\x00\x00", b"\x00")
    session.acknowledge("jobs/j1")
    session.acknowledge("jobs/j1", stored=False)
    assert session.data_to_send() == [
        _name("jobs/j1") + bytes([0, 1, 2, 0, 0]),
        _name("jobs/j1") + bytes([0, 0, 1, 0]),
        _name("jobs/j1") + bytes([8, 1]),
        _name("jobs/j1") + bytes([8, 0]),
    ]


def test_outgoing_frames() -> None:
    session = HocuspocusServerSession()
    _open(session, "d")
    session.send_update("d", b"\x00\x00")
    session.send_awareness("d", b"\x00")
    session.send_stateless("d", "x")
    session.ping()
    session.close_document("d", "bye")
    assert session.data_to_send() == [
        encode_frame("d", MessageType.SYNC, bytes([2, 2, 0, 0])),
        _name("d") + bytes([1, 1, 0]),
        _name("d") + bytes([5]) + _name("x"),
        PING,
        _name("d") + bytes([7]) + _name("bye"),
    ]
    assert session.open_documents == []
    session.acknowledge("d")  # closed meanwhile: nothing
    assert session.data_to_send() == []


def test_provider_close_forgets_the_document() -> None:
    session = HocuspocusServerSession()
    _open(session)
    assert received(session, _name("jobs/j1") + bytes([7])) == [DocumentClosed("jobs/j1")]
    assert not session.is_open("jobs/j1")
    assert received(session, STEP1) == []  # held until a new token


def test_limits_close_the_socket() -> None:
    session = HocuspocusServerSession(max_pending_documents=2, max_held_messages=3)
    received(session, _name("a") + bytes([3]))
    received(session, _name("b") + bytes([3]))
    assert not session.closing
    received(session, _name("c") + bytes([3]))
    assert session.close_code == CLOSE_RESET
    session = HocuspocusServerSession(max_held_messages=2)
    for _ in range(3):
        received(session, _name("a") + bytes([3]))
    assert session.close_code == CLOSE_RESET


def test_malformed_frame_fails_the_session() -> None:
    session = HocuspocusServerSession()
    _open(session)
    assert received(session, _name("jobs/j1") + bytes([0, 5, 0])) == []
    assert session.close_code == CLOSE_PROTOCOL_ERROR
    assert isinstance(session.close_exc, InvalidMessage)
    assert received(session, UPDATE) == []
    with pytest.raises(InvalidState):
        session.ping()


_frames = st.one_of(
    st.binary(max_size=48),
    st.builds(
        lambda name, kind, rest: write_var_string(name) + bytes([kind]) + rest,
        st.sampled_from(["d", "e", "d\0s"]),
        st.integers(0, 11),
        st.binary(max_size=24),
    ),
)


@settings(max_examples=400, deadline=None)
@given(_frames)
def test_fuzz_decoder_raises_only_invalid_message(frame: bytes) -> None:
    try:
        event = decode_frame(frame)
    except InvalidMessage:
        return
    assert event is None or event.__class__.__module__ == "crdt_sync.yjs.hocuspocus"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_frames, st.sampled_from(["none", "auth", "deny"])), max_size=10))
def test_fuzz_session_never_raises(steps: list[tuple[bytes, str]]) -> None:
    session = HocuspocusServerSession(max_pending_documents=2, max_held_messages=4)
    for frame, action in steps:
        events = received(session, frame)
        for event in events:
            if isinstance(event, TokenReceived) and not session.closing:
                if action == "auth":
                    for held in authenticated(session, event.name):
                        assert not isinstance(held, TokenReceived | PongReceived)
                elif action == "deny":
                    session.deny(event.name, "no")
        session.data_to_send()
        if session.closing:
            assert session.close_code in (CLOSE_PROTOCOL_ERROR, CLOSE_RESET)


def test_token_refresh_on_an_open_document() -> None:
    session = HocuspocusServerSession()
    _open(session)
    assert received(session, AUTH) == [TokenReceived("jobs/j1", "tok", "4.8.0")]
    assert authenticated(session, "jobs/j1") == []
    assert session.data_to_send() == []
    session.deny("jobs/j1", "expired")
    assert not session.is_open("jobs/j1")


def _refuse(session: HocuspocusServerSession, name: str) -> None:
    """A provider's attach sequence for ``name`` (token, sync step 1, awareness), refused."""
    assert received(session, _name(name) + bytes([2, 0]) + _name("bad")) == [
        TokenReceived(name, "bad", None)
    ]
    session.deny(name, "bad_token")
    # What the provider sent before it heard the refusal, and keeps sending after it.
    assert received(session, _name(name) + bytes([0, 0, 1, 0])) == []
    assert received(session, _name(name) + bytes([1, 1, 0])) == []
    assert received(session, _name(name) + bytes([0, 2, 2, 0, 0])) == []


def test_refused_documents_never_count_against_the_pending_limit() -> None:
    session = HocuspocusServerSession(max_pending_documents=3)
    for i in range(50):
        _refuse(session, f"jobs/bad-{i}")
    assert not session.closing
    assert session.pending_documents == 0 and session.held_messages == 0
    assert len(session.refused_documents) == 50
    _open(session, "jobs/ok")
    assert session.is_open("jobs/ok") and not session.closing
    # The limit still counts documents whose token is not answered yet.
    for name in ("a", "b", "c"):
        received(session, _name(name) + bytes([3]))
    assert session.pending_documents == 3 and not session.closing
    received(session, _name("d") + bytes([3]))
    assert session.close_code == CLOSE_RESET


def test_an_authenticated_document_leaves_the_pending_count() -> None:
    session = HocuspocusServerSession(max_pending_documents=1)
    for i in range(10):
        _open(session, f"d{i}")
    assert session.pending_documents == 0 and not session.closing
    assert len(session.open_documents) == 10


def test_a_refused_document_authenticated_again_is_resynchronised() -> None:
    session = HocuspocusServerSession()
    _refuse(session, "jobs/j1")
    assert received(session, AUTH) == [TokenReceived("jobs/j1", "tok", "4.8.0")]
    assert "jobs/j1" not in session.refused_documents
    assert received(session, AWARENESS) == []
    # The provider sends no SyncStep1 after a token refresh: the session asks for one.
    assert authenticated(session, "jobs/j1") == [
        StateVectorReceived("jobs/j1", b"\x00"),
        AwarenessReceived("jobs/j1", b"\x00"),
    ]
    session.data_to_send()
    # Only once: a later token refresh of the open document changes nothing.
    received(session, AUTH)
    assert authenticated(session, "jobs/j1") == []


def test_an_open_document_refused_later_drops_its_traffic() -> None:
    session = HocuspocusServerSession(max_pending_documents=1)
    _open(session)
    session.deny("jobs/j1", "rejected: job closed")
    assert session.refused_documents == ["jobs/j1"]
    for frame in (UPDATE, AWARENESS, STEP1):
        assert received(session, frame) == []
    assert session.pending_documents == 0 and session.held_messages == 0


def test_a_document_closed_by_the_server_drops_its_traffic() -> None:
    session = HocuspocusServerSession()
    _open(session, "d")
    session.close_document("d", "bye")
    assert received(session, _name("d") + bytes([3])) == []
    assert session.pending_documents == 0


def test_the_providers_close_forgets_a_refused_document() -> None:
    session = HocuspocusServerSession()
    _refuse(session, "jobs/j1")
    assert received(session, _name("jobs/j1") + bytes([7])) == []
    assert session.refused_documents == []
    assert received(session, STEP1) == []  # now held until a token, as for a new name
    assert session.pending_documents == 1 and session.held_messages == 1


def test_refused_documents_are_remembered_up_to_a_bound() -> None:
    session = HocuspocusServerSession(max_refused_documents=3)
    for name in ("a", "b", "c", "d"):
        _refuse(session, name)
    assert session.refused_documents == ["b", "c", "d"]
    # Refusing a name again makes it the newest.
    received(session, _name("b") + bytes([2, 0]) + _name("bad"))
    session.deny("b", "no")
    assert session.refused_documents == ["c", "d", "b"]


_names = st.sampled_from(["a", "b", "c", "d", "e"])
_provider_frames = st.one_of(
    st.builds(lambda n: _name(n) + bytes([2, 0]) + _name("t"), _names),
    st.builds(lambda n: _name(n) + bytes([0, 0, 1, 0]), _names),
    st.builds(lambda n: _name(n) + bytes([0, 2, 2, 0, 0]), _names),
    st.builds(lambda n: _name(n) + bytes([1, 1, 0]), _names),
    st.builds(lambda n: _name(n) + bytes([7]), _names),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_provider_frames, st.sampled_from(["auth", "deny", "later"]), _names),
        max_size=40,
    )
)
def test_counts_match_the_documents_whatever_the_order(
    steps: list[tuple[bytes, str, str]],
) -> None:
    """The pending and held counts always equal what the documents hold: refusals, closes and
    authentications leave nothing counted behind."""
    session = HocuspocusServerSession(max_pending_documents=5, max_held_messages=1000)
    checking: set[str] = set()
    for frame, action, other in steps:
        for event in received(session, frame):
            if isinstance(event, TokenReceived):
                checking.add(event.name)
        # A provider's Close forgets a document whose token is being checked.
        checking = {n for n in checking if n in session._documents and not session.is_open(n)}
        for name in sorted(checking):
            if action == "auth":
                authenticated(session, name)
                checking.discard(name)
            elif action == "deny":
                session.deny(name, "no")
                checking.discard(name)
        if action == "deny" and session.is_open(other):
            session.deny(other, "no longer")
        session.data_to_send()
        assert not session.closing  # 5 names: the pending limit is never broken
        documents = session._documents
        assert session.pending_documents == sum(
            1 for name in documents if not session.is_open(name)
        )
        assert session.held_messages == sum(len(d.held) for d in documents.values())
        assert not set(session.refused_documents) & set(documents)
