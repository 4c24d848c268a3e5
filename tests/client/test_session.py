"""The pure connection state machine: every row of its table, and what it refuses."""

from __future__ import annotations

import pytest
from crdt_sync.client.session import (
    TRANSITIONS,
    Session,
    SessionEvent,
    SessionState,
    public_state,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import InvalidState

S = SessionState
E = SessionEvent


def _session_in(state: SessionState) -> Session:
    """A session driven into ``state`` through allowed events only."""
    paths = {
        S.OFFLINE: [],
        S.CONNECTING: [E.CONNECT],
        S.SYNCING: [E.CONNECT, E.WELCOMED],
        S.ONLINE: [E.CONNECT, E.WELCOMED, E.SYNCED],
        S.BACKOFF: [E.CONNECT, E.LOST],
        S.FORCED_OFFLINE: [E.GO_OFFLINE],
        S.CLOSED: [E.CLOSE],
    }
    session = Session()
    for event in paths[state]:
        session.handle(event)
    assert session.state is state
    return session


def test_main_path() -> None:
    session = Session()
    assert session.state is S.OFFLINE
    assert session.handle(E.CONNECT) is S.CONNECTING
    assert session.handle(E.WELCOMED) is S.SYNCING
    assert session.handle(E.SYNCED) is S.ONLINE
    assert session.handle(E.LOST) is S.BACKOFF
    assert session.handle(E.CONNECT) is S.CONNECTING


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS, key=str))
def test_every_row_of_the_table(state: SessionState, event: SessionEvent) -> None:
    session = _session_in(state)
    assert session.handle(event) is TRANSITIONS[state, event]


@pytest.mark.parametrize(
    ("state", "event"),
    sorted(((s, e) for s in S for e in E if (s, e) not in TRANSITIONS), key=str),
)
def test_everything_else_is_refused(state: SessionState, event: SessionEvent) -> None:
    session = _session_in(state)
    assert not session.can_handle(event)
    with pytest.raises(InvalidState, match=event.name):
        session.handle(event)
    assert session.state is state


def test_closed_is_final_except_for_close() -> None:
    session = _session_in(S.CLOSED)
    assert [e for e in E if session.can_handle(e)] == [E.CLOSE]


def test_forced_offline_is_left_only_by_go_online_or_close() -> None:
    session = _session_in(S.FORCED_OFFLINE)
    for event in (E.NETWORK_UP, E.NETWORK_DOWN, E.GO_OFFLINE):
        assert session.handle(event) is S.FORCED_OFFLINE
    assert not session.can_handle(E.CONNECT)
    assert session.handle(E.GO_ONLINE) is S.CONNECTING


def test_network_up_skips_the_backoff_and_down_parks_it() -> None:
    session = _session_in(S.BACKOFF)
    assert session.handle(E.NETWORK_DOWN) is S.OFFLINE
    assert session.network_down
    assert session.handle(E.NETWORK_UP) is S.CONNECTING
    assert not session.network_down


def test_auth_expired_reconnects_without_backoff() -> None:
    for state in (S.CONNECTING, S.SYNCING, S.ONLINE):
        assert _session_in(state).handle(E.AUTH_EXPIRED) is S.CONNECTING


def test_initial_state_must_be_offline() -> None:
    assert Session(S.FORCED_OFFLINE).state is S.FORCED_OFFLINE
    with pytest.raises(InvalidState):
        Session(S.ONLINE)


def test_public_states() -> None:
    assert {s: public_state(s) for s in S} == {
        S.OFFLINE: "offline",
        S.CONNECTING: "connecting",
        S.SYNCING: "syncing",
        S.ONLINE: "online",
        S.BACKOFF: "offline",
        S.FORCED_OFFLINE: "offline",
        S.CLOSED: "offline",
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(E)), max_size=40))
def test_random_event_sequences_stay_in_the_table(events: list[SessionEvent]) -> None:
    session = Session()
    for event in events:
        before = session.state
        if session.can_handle(event):
            assert session.handle(event) is TRANSITIONS[before, event]
        else:
            with pytest.raises(InvalidState):
                session.handle(event)
            assert session.state is before
        # Only these states keep (or make) a connection.
        assert session.wants_connection == (session.state in (S.CONNECTING, S.SYNCING, S.ONLINE))
