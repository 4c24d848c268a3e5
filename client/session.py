"""The replica's connection lifecycle as a pure, table-driven state machine.

Like h11's ``_state.py``: no I/O, no clock, no asyncio. The driver
(:mod:`crdt_sync.client.replica`) reports what happened with :meth:`Session.handle` and acts on
the resulting :attr:`Session.state`; every allowed move is one row of :data:`TRANSITIONS`, and
anything else is a driver bug (:class:`~crdt_sync.errors.InvalidState`).

States::

    OFFLINE         not connected, nothing scheduled (start, or the network is reported down)
    CONNECTING      opening the websocket and waiting for ``welcome``
    SYNCING         welcomed: uploading the outbox, then downloading remote changes
    ONLINE          caught up; live updates flow both ways
    BACKOFF         the last attempt failed or the link died; waiting before the next one
    FORCED_OFFLINE  the user switched sync off (``go_offline()``); only ``go_online()`` ends it
    CLOSED          the replica is closed; final

Main path::

    OFFLINE --CONNECT--> CONNECTING --WELCOMED--> SYNCING --SYNCED--> ONLINE
    CONNECTING/SYNCING/ONLINE --LOST--> BACKOFF --CONNECT--> CONNECTING
    CONNECTING/SYNCING/ONLINE --AUTH_EXPIRED--> CONNECTING   (fresh token, no backoff)
    BACKOFF/OFFLINE --NETWORK_UP--> CONNECTING                (try at once)
    BACKOFF --NETWORK_DOWN--> OFFLINE                         (wait for the network)
    any but CLOSED --GO_OFFLINE--> FORCED_OFFLINE --GO_ONLINE--> CONNECTING
    any --CLOSE--> CLOSED

Events that do not change a state where they are harmless (``GO_ONLINE`` when not forced
offline, ``NETWORK_UP`` while connected, ``NETWORK_DOWN`` while connected: the heartbeat
decides whether the link still works) are listed as self-loops, so the table stays the single
source of truth.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from crdt_sync.errors import InvalidState

__all__ = ["TRANSITIONS", "Session", "SessionEvent", "SessionState", "public_state"]


class SessionState(enum.Enum):
    """Where the replica's connection stands (see the module docstring)."""

    OFFLINE = "offline"
    CONNECTING = "connecting"
    SYNCING = "syncing"
    ONLINE = "online"
    BACKOFF = "backoff"
    FORCED_OFFLINE = "forced_offline"
    CLOSED = "closed"


class SessionEvent(enum.Enum):
    """What the driver reports to the session."""

    CONNECT = "connect"
    """The driver starts a connection attempt (at start, or when the backoff delay elapsed)."""
    WELCOMED = "welcomed"
    """The relay accepted the handshake."""
    SYNCED = "synced"
    """Upload then download finished: the replica is caught up."""
    LOST = "lost"
    """The attempt failed, or the link closed or was declared dead by the heartbeat."""
    AUTH_EXPIRED = "auth_expired"
    """The relay ended the connection with ``token_expired``: reconnect with a fresh token."""
    NETWORK_UP = "network_up"
    """The app reports the network is reachable again."""
    NETWORK_DOWN = "network_down"
    """The app reports the network is gone."""
    GO_OFFLINE = "go_offline"
    """The user switched sync off."""
    GO_ONLINE = "go_online"
    """The user switched sync back on."""
    CLOSE = "close"
    """The replica is closing."""


S = SessionState
E = SessionEvent

_ACTIVE = (S.CONNECTING, S.SYNCING, S.ONLINE)

TRANSITIONS: Mapping[tuple[SessionState, SessionEvent], SessionState] = {
    (S.OFFLINE, E.CONNECT): S.CONNECTING,
    (S.BACKOFF, E.CONNECT): S.CONNECTING,
    (S.CONNECTING, E.WELCOMED): S.SYNCING,
    (S.SYNCING, E.SYNCED): S.ONLINE,
    **{(state, E.LOST): S.BACKOFF for state in _ACTIVE},
    **{(state, E.AUTH_EXPIRED): S.CONNECTING for state in _ACTIVE},
    (S.OFFLINE, E.NETWORK_UP): S.CONNECTING,
    (S.BACKOFF, E.NETWORK_UP): S.CONNECTING,
    **{(state, E.NETWORK_UP): state for state in (*_ACTIVE, S.FORCED_OFFLINE)},
    (S.BACKOFF, E.NETWORK_DOWN): S.OFFLINE,
    **{(state, E.NETWORK_DOWN): state for state in (*_ACTIVE, S.OFFLINE, S.FORCED_OFFLINE)},
    **{(state, E.GO_OFFLINE): S.FORCED_OFFLINE for state in S if state is not S.CLOSED},
    (S.FORCED_OFFLINE, E.GO_ONLINE): S.CONNECTING,
    **{(state, E.GO_ONLINE): state for state in S if state not in (S.FORCED_OFFLINE, S.CLOSED)},
    **{(state, E.CLOSE): S.CLOSED for state in S},
}
"""Every allowed ``(state, event) -> next state``."""


_PUBLIC = {S.CONNECTING: "connecting", S.SYNCING: "syncing", S.ONLINE: "online"}


def public_state(state: SessionState) -> str:
    """The state an app shows: ``offline``, ``connecting``, ``syncing`` or ``online``.

    ``BACKOFF``, ``FORCED_OFFLINE`` and ``CLOSED`` all show as ``offline``.
    """
    return _PUBLIC.get(state, "offline")


class Session:
    """The connection state of one replica.

    Args:
        state: the initial state (``OFFLINE``, or ``FORCED_OFFLINE`` for a replica opened with
            sync switched off).
    """

    def __init__(self, state: SessionState = SessionState.OFFLINE) -> None:
        if state not in (S.OFFLINE, S.FORCED_OFFLINE):
            raise InvalidState(f"a session starts OFFLINE or FORCED_OFFLINE, not {state.name}")
        self._state: SessionState = state
        #: True once the app reported the network down, until it reports it up again.
        self.network_down = False
        #: True while the app reports a metered network (informational for the driver).
        self.metered = False

    @property
    def state(self) -> SessionState:
        """The current state."""
        return self._state

    @property
    def wants_connection(self) -> bool:
        """Whether the driver should be connecting or connected (not offline of any kind)."""
        return self._state in _ACTIVE

    def can_handle(self, event: SessionEvent) -> bool:
        """Whether ``event`` is allowed in the current state."""
        return (self._state, event) in TRANSITIONS

    def handle(self, event: SessionEvent) -> SessionState:
        """Apply ``event``; return the new state (which may equal the old one).

        Raises:
            InvalidState: the event is not allowed in the current state (a driver bug).
        """
        if event is E.NETWORK_DOWN:
            self.network_down = True
        elif event is E.NETWORK_UP:
            self.network_down = False
        try:
            self._state = TRANSITIONS[self._state, event]
        except KeyError:
            raise InvalidState(
                f"session event {event.name} is not allowed in state {self._state.name}"
            ) from None
        return self._state
