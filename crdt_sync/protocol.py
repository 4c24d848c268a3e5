"""The sync protocol as two pure state machines: :class:`ClientProtocol`, :class:`ServerProtocol`.

Theory of operation
===================

One websocket joins one replica (client) to the relay (server). Each websocket message is one
protocol message (:mod:`crdt_sync.messages`, encoded by :mod:`crdt_sync.codec`). The objects
here own everything about a connection that is not I/O: the handshake and its version check,
the connection :class:`State`, which message may come when, limits, batching of many records
into few frames, the in-flight set of pushed outbox entries, ping ids, and how a connection
fails. They never await, never touch a socket, a store or a clock: time comes in as ``now``
arguments (any monotonic float, e.g. ``loop.time()``), and data goes out as bytes that the
driver sends.

A driver (``crdt_sync.server`` for the relay, ``crdt_sync.client`` for a replica) pumps bytes
and acts on events, the way websockets' asyncio connection pumps its sans-I/O ``Protocol``:

1. When a websocket message arrives, call ``receive_data(message, now)``. Then call
   :meth:`data_to_send` and send every item it returns, in order (automatic answers such as
   ``pong`` and fatal ``error`` frames are queued there); then call :meth:`events_received`
   and act on each event in order.
2. After each command (``push()``, ``ack()``, ``send_updates()``, ...), call
   :meth:`data_to_send` and send what it returns.
3. An empty ``b""`` in :meth:`data_to_send` means "close the websocket now" (a real message is
   never empty). It follows a fatal ``error`` frame that the core queued (the peer misbehaved,
   or ``fail()``/``close()`` was called); from then on the state is ``CLOSING``.
4. When the websocket is closed (by either side, or lost), call :meth:`receive_eof`. The state
   becomes ``CLOSED``; :attr:`close_exc` says why (code and reason of the fatal error sent or
   received, or ``connection_lost``).

States (``docs/protocol.md``, "State machines")::

    CONNECTING --(client: welcome received / server: accept())--> OPEN
    CONNECTING, OPEN --(fatal error sent or received, fail(), close())--> CLOSING
    any --(receive_eof())--> CLOSED

In ``CONNECTING`` the client has queued ``hello`` and waits for ``welcome``; the server waits for
``hello``, reports it as :class:`HelloReceived`, and stays in ``CONNECTING`` until the driver
verified the token and calls ``accept()`` or ``refuse()``. Any other message before that fails
the connection with ``not_ready``. In ``OPEN`` every other message is allowed. In ``CLOSING``
and ``CLOSED`` received data is ignored and commands raise :class:`~crdt_sync.errors.InvalidState`.

House rules:

- A peer's mistake never raises out of ``receive_data()``: the core queues a fatal ``error``
  frame with a stable code (``bad_frame``, ``too_big``, ``too_many_items``, ``rate_limited``,
  ``not_ready``, ``unsupported_version``, ``forbidden``) and ``b""``, moves to ``CLOSING`` and
  records :attr:`close_exc` (whose ``__cause__`` is the decoding error, if any).
- A local mistake (a command in a state that does not allow it, a too-big item) raises at once.
- Events are facts about the peer, delivered in the order the frames arrived. The core adds
  none of its own except :class:`Acked`/:class:`Rejected` filtering (client) and the automatic
  ``forbidden`` rejects of pushed entries outside the grant (server).
- Everything that decides what may happen when lives in this file.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import codec
from . import messages as m
from .errors import ConnectionClosed, InvalidMessage, InvalidState, MessageTooBig, ProtocolError
from .messages import (
    PROTOCOL_VERSION,
    Limits,
    PushItem,
    RecordKey,
    RejectItem,
    RemovedItem,
    StateVectorItem,
    UpdateItem,
)
from .rate_limit import TokenBucket
from .subscriptions import Subscription

__all__ = [
    "CONNECTION_LOST",
    "DEFAULT_BURST",
    "DEFAULT_CLIENT_MAX_FRAME",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_RATE",
    "Acked",
    "ChangedReceived",
    "ClientEvent",
    "ClientProtocol",
    "DroppedReceived",
    "ErrorReceived",
    "HelloReceived",
    "PongReceived",
    "PushReceived",
    "Rejected",
    "RemovedReceived",
    "ServerEvent",
    "ServerProtocol",
    "State",
    "StateVectorsReceived",
    "Subscribed",
    "SyncedReceived",
    "UpdatesReceived",
    "Welcomed",
]

logger = logging.getLogger("crdt_sync.protocol")

#: Largest frame a relay accepts by default, in bytes (announced in ``welcome``).
DEFAULT_MAX_FRAME = codec.DEFAULT_MAX_FRAME

#: Most items (entries, records, collections) per frame a relay accepts by default.
DEFAULT_MAX_ITEMS = 1000

#: Messages per second a relay accepts from one connection by default (token bucket refill).
DEFAULT_RATE = 1000.0

#: Messages a connection may send in a burst by default (token bucket size).
DEFAULT_BURST = 2000

#: Largest frame a client accepts from the relay by default, in bytes.
DEFAULT_CLIENT_MAX_FRAME = 64 * 1024 * 1024

#: Close code recorded when the transport ended without a fatal ``error`` frame.
CONNECTION_LOST = "connection_lost"

# Upper bounds of msgpack's overhead, used to batch items into frames below a byte budget:
# a frame's map, type and scalar fields; an item's array header, ints and string headers.
_FRAME_OVERHEAD = 64
_ITEM_OVERHEAD = 32

# The smallest max_frame a relay may announce (room for one small entry per frame).
_MIN_MAX_FRAME = 256

# Pings whose send time is remembered for round-trip times (older ones are forgotten).
_MAX_PINGS_TRACKED = 64


class State(enum.IntEnum):
    """The state of a connection (websockets' names)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcomed:
    """Client: the handshake succeeded. The relay granted ``collections`` of ``tenant``.

    ``cache_max_age``: the tenant's maximum offline-cache age in seconds (None: no expiry).
    ``scopes``: per collection, the grant's record filter (wire form), if it restricts one.
    """

    tenant: str
    collections: tuple[str, ...]
    limits: Limits
    cache_max_age: float | None = None
    scopes: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class Acked:
    """Client: these pushed entries are durably stored on the relay; drop them from the outbox.

    Only seqs in flight on this connection are reported, each once: duplicate acks are dropped.
    """

    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Client: the relay refused these pushed entries (``[seq, code, reason]`` each)."""

    items: tuple[RejectItem, ...]


@dataclass(frozen=True, slots=True)
class ChangedReceived:
    """Client: catch-up lists records changed by others; answer with ``send_state_vectors()``.

    Answer every ``ChangedReceived`` with the state vectors of its records, passing
    ``done=event.done``.
    """

    items: tuple[RecordKey, ...]
    cursor: int
    done: bool


@dataclass(frozen=True, slots=True)
class UpdatesReceived:
    """Client: updates to apply (diffs answering ``sv``, or live updates made by others)."""

    items: tuple[UpdateItem, ...]
    cursor: int | None


@dataclass(frozen=True, slots=True)
class RemovedReceived:
    """Client: these records were deleted and purged on the relay; remove them from the store
    (settling pending changes of them: docs/records.md, "Deleting a record")."""

    items: tuple[RemovedItem, ...]
    cursor: int | None


@dataclass(frozen=True, slots=True)
class SyncedReceived:
    """Client: catch-up is complete up to ``cursor``; persist it once the updates are applied.

    ``at``: when the relay evaluated the subscriptions (send it back as ``since``), or None.
    """

    cursor: int
    at: int | None = None


@dataclass(frozen=True, slots=True)
class DroppedReceived:
    """Client: these records left what the replica keeps; remove them, except those with
    unsynced local changes (removed once those are acknowledged)."""

    items: tuple[RecordKey, ...]


@dataclass(frozen=True, slots=True)
class PongReceived:
    """Either side: the answer to our ping ``id``.

    ``round_trip`` is in the unit of ``now``; None unless both ``ping()`` and the
    ``receive_data()`` that carried the pong were given ``now``.
    """

    id: int
    round_trip: float | None


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """Either side: the peer sent an ``error``. After a fatal one the state is ``CLOSING``."""

    code: str
    reason: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """Server: a client introduced itself; verify ``token``, then ``accept()`` or ``refuse()``.

    The version was already checked (a mismatch fails with ``unsupported_version``).
    """

    token: str
    replica: str
    version: int


@dataclass(frozen=True, slots=True)
class PushReceived:
    """Server: outbox entries to store in order, then ``ack()`` (after commit) or ``reject()``.

    Entries outside the grant were already rejected with ``forbidden`` and are not included.
    """

    items: tuple[PushItem, ...]


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Server: register live fan-out for ``collections``, then catch up since ``cursor``.

    Catch-up: ``send_changed()`` the records changed by other replicas since ``cursor``
    (``None``: all records), or ``send_synced()`` at once if there are none.
    ``subscriptions`` (None: whole collections) narrow what the replica keeps; ``since`` is
    the ``at`` of the catch-up that gave ``cursor``.
    """

    collections: tuple[str, ...]
    cursor: int | None
    subscriptions: tuple[Subscription, ...] | None = None
    since: int | None = None


@dataclass(frozen=True, slots=True)
class StateVectorsReceived:
    """Server: answer with ``send_updates(diffs, None)``; if ``done``, then ``send_synced()``."""

    items: tuple[StateVectorItem, ...]
    done: bool


ClientEvent = (
    Welcomed
    | Acked
    | Rejected
    | ChangedReceived
    | UpdatesReceived
    | RemovedReceived
    | SyncedReceived
    | DroppedReceived
    | PongReceived
    | ErrorReceived
)
"""Events a :class:`ClientProtocol` reports."""

ServerEvent = (
    HelloReceived | PushReceived | Subscribed | StateVectorsReceived | PongReceived | ErrorReceived
)
"""Events a :class:`ServerProtocol` reports."""


# -- batching ------------------------------------------------------------------------------

_T = TypeVar("_T")


def _batches(
    items: Sequence[_T], sizes: Sequence[int], max_items: int, max_bytes: int
) -> Iterator[list[_T]]:
    """Split ``items`` in order into lists of at most ``max_items`` whose sizes fit ``max_bytes``.

    ``sizes[i]`` is the encoded size bound of ``items[i]``. An item too big to share a frame
    goes alone in its own list.
    """
    batch: list[_T] = []
    used = _FRAME_OVERHEAD
    for item, size in zip(items, sizes, strict=True):
        if batch and (len(batch) >= max_items or used + size > max_bytes):
            yield batch
            batch, used = [], _FRAME_OVERHEAD
        batch.append(item)
        used += size
    if batch:
        yield batch


def _key_size(collection: str, record_id: str) -> int:
    return len(collection.encode()) + len(record_id.encode()) + _ITEM_OVERHEAD


def _push_size(item: PushItem) -> int:
    return _key_size(item.collection, item.record_id) + len(item.update)


def _sv_size(item: StateVectorItem) -> int:
    return _key_size(item.collection, item.record_id) + len(item.state_vector)


def _update_size(item: UpdateItem) -> int:
    return _key_size(item.collection, item.record_id) + len(item.update)


def _record_size(item: RecordKey) -> int:
    return _key_size(item.collection, item.record_id)


def _removed_size(item: RemovedItem) -> int:
    return _key_size(item.collection, item.record_id) + len(item.tombstone.encode())


# -- the common part -----------------------------------------------------------------------


_E = TypeVar("_E", ClientEvent, ServerEvent)


class _Protocol(Generic[_E]):
    """What both ends share: output and event queues, states, ping/pong, errors, closing."""

    _peer_name = "peer"

    def __init__(self, *, max_frame: int, now: float | None) -> None:
        self.max_frame = max_frame
        self._state = State.CONNECTING
        self._output: list[bytes] = []
        self._events: list[_E] = []
        self._close_exc: ConnectionClosed | None = None
        self._last_received_at = now
        self._next_ping_id = 1
        self._pings: dict[int, float | None] = {}

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The connection's state."""
        return self._state

    def _set_state(self, state: State) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: %s -> %s", type(self).__name__, self._state.name, state.name)
        self._state = state

    @property
    def close_exc(self) -> ConnectionClosed:
        """Why the connection ended: the code and reason of the fatal error sent or received.

        ``code`` is ``connection_lost`` if the transport ended without a fatal error frame.
        If the connection failed on a malformed frame, ``__cause__`` is the decoding error.

        Raises:
            InvalidState: the state is not ``CLOSING`` or ``CLOSED`` yet.
        """
        if self._close_exc is None:
            raise InvalidState(f"the connection is {self._state.name}, not closing or closed")
        return self._close_exc

    @property
    def last_received_at(self) -> float | None:
        """``now`` of the last ``receive_data()`` given one (or of the constructor), else None."""
        return self._last_received_at

    def idle_for(self, now: float) -> float:
        """How long nothing was received, for dead-link detection (0.0 if no time is known).

        A driver pings every heartbeat interval and declares the link dead (``close()`` or
        ``fail()``, then closes the socket) once ``idle_for(now)`` exceeds its limit.
        """
        if self._last_received_at is None:
            return 0.0
        return max(0.0, now - self._last_received_at)

    # -- outputs --------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """The websocket messages to send, in order, since the last call.

        Call it after every ``receive_data()`` and every command. An empty ``b""`` means "close
        the websocket now" (after sending the messages before it).
        """
        output, self._output = self._output, []
        return output

    def _send(self, msg: m.Message) -> None:
        self._output.append(codec.encode(msg))

    def _emit(self, event: _E) -> None:
        self._events.append(event)

    def _require_open(self, command: str) -> None:
        if self._state is not State.OPEN:
            raise InvalidState(f"cannot {command}: the connection is {self._state.name}")

    # -- inputs ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | str, now: float | None = None) -> None:
        """Feed one websocket message received from the peer.

        Never raises because of what the peer sent: a malformed or forbidden message fails the
        connection (a fatal ``error`` frame and ``b""`` are queued, the state becomes
        ``CLOSING``). Data received in ``CLOSING`` or ``CLOSED`` is ignored.

        After it, call :meth:`data_to_send` and send what it returns, then
        :meth:`events_received` and act on each event.

        Args:
            data: the message; ``bytes`` for a binary message. A text message (``str``) is not
                allowed by the protocol and fails the connection.
            now: the current time (monotonic seconds), used for :meth:`idle_for`, round-trip
                times and (server) the rate limit. Optional.
        """
        if self._state >= State.CLOSING:
            return
        if now is not None:
            self._last_received_at = now
        if not isinstance(data, bytes):
            self.fail("bad_frame", "text messages are not allowed; send binary msgpack frames")
            return
        if not self._admit(data, now):
            return
        try:
            msg = codec.decode(data, self.max_frame)
        except MessageTooBig as exc:
            self._fail(
                "too_big", f"frame of {len(data)} bytes over the {self.max_frame} limit", exc
            )
            return
        except InvalidMessage as exc:
            self._fail("bad_frame", str(exc), exc)
            return
        # Messages both sides handle the same way once the connection is open.
        if self._state is State.OPEN:
            if type(msg) is m.Ping:
                self._send(m.Pong(msg.id))
                return
            if type(msg) is m.Pong:
                sent_at = self._pings.pop(msg.id, None)
                rtt = None if sent_at is None or now is None else now - sent_at
                self._emit(PongReceived(msg.id, rtt))
                return
        if isinstance(msg, m.Error):
            self._emit(ErrorReceived(msg.code, msg.reason, msg.fatal))
            if msg.fatal:
                self._close_exc = ConnectionClosed(msg.code, msg.reason)
                self._output.append(b"")
                self._set_state(State.CLOSING)
            return
        self._handle(msg, now)

    def _admit(self, data: bytes, now: float | None) -> bool:
        """Hook run before decoding (the server's rate limit); False if the frame failed."""
        return True

    def _handle(self, msg: m.Message, now: float | None) -> None:
        raise NotImplementedError  # pragma: no cover

    def receive_eof(self) -> None:
        """Report that the websocket is closed (by us, by the peer, or lost).

        The state becomes ``CLOSED``; :attr:`close_exc` says why. Idempotent.
        """
        if self._close_exc is None:
            self._close_exc = ConnectionClosed(
                CONNECTION_LOST, f"the {self._peer_name} closed the connection"
            )
        self._output = []
        if self._state is not State.CLOSED:
            self._set_state(State.CLOSED)

    def events_received(self) -> list[_E]:
        """The events reported since the last call, in order; the driver acts on each."""
        events, self._events = self._events, []
        return events

    # -- commands both sides have ---------------------------------------------------------

    def ping(self, now: float | None = None) -> int:
        """Send a ``ping``; the matching :class:`PongReceived` carries the returned id.

        Args:
            now: the current time, to measure the round trip. Optional.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("ping")
        ping_id = self._next_ping_id
        self._next_ping_id += 1
        self._pings[ping_id] = now
        if len(self._pings) > _MAX_PINGS_TRACKED:
            del self._pings[next(iter(self._pings))]
        self._send(m.Ping(ping_id))
        return ping_id

    def send_error(self, code: str, reason: str = "") -> None:
        """Send a non-fatal ``error`` (the connection stays open).

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send an error")
        self._send(m.Error(code, reason, fatal=False))

    def fail(self, code: str, reason: str = "") -> None:
        """Fail the connection: queue a fatal ``error`` frame and ``b""``, move to ``CLOSING``.

        Does nothing if the connection is already ``CLOSING`` or ``CLOSED``.

        Args:
            code: a stable error code (``docs/protocol.md``, "Error codes").
            reason: a human-readable explanation; do not leak internals.
        """
        self._fail(code, reason, None)

    def _fail(self, code: str, reason: str, cause: ProtocolError | None) -> None:
        if self._state >= State.CLOSING:
            return
        self._send(m.Error(code, reason, fatal=True))
        self._output.append(b"")
        exc = ConnectionClosed(code, reason)
        exc.__cause__ = cause
        self._close_exc = exc
        self._set_state(State.CLOSING)

    def _unexpected(self, msg: m.Message) -> None:
        kind = type(msg).__name__
        self._fail("bad_frame", f"unexpected {kind} message from the {self._peer_name}", None)


# -- client --------------------------------------------------------------------------------


class ClientProtocol(_Protocol[ClientEvent]):
    """The replica's end of a sync connection.

    Args:
        replica: this replica's stable id (the relay uses it to skip a replica's own changes
            in catch-up).
        token: the auth token. If given, ``hello`` is queued at once; otherwise call
            :meth:`hello` before sending anything.
        max_frame: the largest frame accepted from the relay, in bytes.
        now: the current time, the start of :meth:`idle_for`. Optional.
    """

    _peer_name = "relay"

    def __init__(
        self,
        replica: str,
        token: str | None = None,
        *,
        max_frame: int = DEFAULT_CLIENT_MAX_FRAME,
        now: float | None = None,
    ) -> None:
        super().__init__(max_frame=max_frame, now=now)
        self.replica = replica
        self._hello_sent = False
        self._welcome: m.Welcome | None = None
        self._in_flight: dict[int, None] = {}
        self._catching_up = False
        if token is not None:
            self.hello(token)

    # -- what the client knows ------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        """The relay's limits from ``welcome``.

        Raises:
            InvalidState: no ``welcome`` was received.
        """
        if self._welcome is None:
            raise InvalidState("no welcome received yet")
        return self._welcome.limits

    @property
    def tenant(self) -> str | None:
        """The tenant the relay granted, once welcomed."""
        return None if self._welcome is None else self._welcome.tenant

    @property
    def collections(self) -> tuple[str, ...]:
        """The collections the relay granted (empty until welcomed)."""
        return () if self._welcome is None else self._welcome.collections

    @property
    def in_flight(self) -> frozenset[int]:
        """Seqs pushed on this connection and neither acked nor rejected yet."""
        return frozenset(self._in_flight)

    @property
    def uploads_pending(self) -> int:
        """How many pushed entries wait for an ack or reject (0: the upload phase is over)."""
        return len(self._in_flight)

    @property
    def catching_up(self) -> bool:
        """True from ``subscribe()`` until the matching ``synced`` arrives."""
        return self._catching_up

    # -- commands -------------------------------------------------------------------------

    def hello(self, token: str) -> None:
        """Queue the ``hello`` frame (done by the constructor when it is given a token).

        Raises:
            InvalidState: ``hello`` was already sent, or the connection is not ``CONNECTING``.
        """
        if self._hello_sent or self._state is not State.CONNECTING:
            raise InvalidState("hello can be sent only once, first")
        self._hello_sent = True
        self._send(m.Hello(token, self.replica, PROTOCOL_VERSION))

    def push(self, items: Iterable[PushItem | tuple[int, str, str, bytes]]) -> None:
        """Push outbox entries, in increasing seq order, batched to the relay's limits.

        The seqs become in flight until an :class:`Acked` or :class:`Rejected` reports them.
        Pushing a seq again (after a lost ack) is allowed.

        Raises:
            InvalidState: the connection is not ``OPEN``.
            MessageTooBig: an entry does not fit in one frame under the relay's ``max_frame``
                (nothing is queued then).
        """
        self._require_open("push")
        entries = [item if type(item) is PushItem else PushItem(*item) for item in items]
        limits = self.limits
        sizes = [_push_size(entry) for entry in entries]
        for entry, size in zip(entries, sizes, strict=True):
            if size + _FRAME_OVERHEAD > limits.max_frame:
                raise MessageTooBig(
                    f"outbox entry {entry.seq} ({len(entry.update)} bytes of update) does not"
                    f" fit the relay's {limits.max_frame} bytes frame limit"
                )
        for batch in _batches(entries, sizes, limits.max_items, limits.max_frame):
            self._send(m.Push(tuple(batch)))
        for entry in entries:
            self._in_flight[entry.seq] = None

    def subscribe(
        self,
        collections: Iterable[str],
        cursor: int | None,
        subscriptions: Iterable[Subscription] | None = None,
        since: int | None = None,
    ) -> None:
        """Subscribe to live changes of ``collections`` and start catch-up since ``cursor``.

        The protocol (upload first) wants this sent once :attr:`uploads_pending` is 0; the
        core leaves that policy to the driver. :attr:`catching_up` is true until ``synced``.

        Args:
            collections: the collections to sync.
            cursor: the cursor of the last completed catch-up with these subscriptions.
            subscriptions: what the replica keeps of them (None: every record). Each one's
                collection must be among ``collections``.
            since: the ``at`` of the ``synced`` that gave ``cursor``.

        Raises:
            InvalidState: the connection is not ``OPEN``.
            ValueError: a subscription's collection is not among ``collections``.
        """
        self._require_open("subscribe")
        names = tuple(collections)
        subs = None if subscriptions is None else tuple(subscriptions)
        if subs is not None and not {s.collection for s in subs} <= set(names):
            raise ValueError("every subscription's collection must be subscribed to")
        self._catching_up = True
        self._send(m.Subscribe(names, cursor, subs, since))

    def send_state_vectors(
        self,
        items: Iterable[StateVectorItem | tuple[str, str, bytes]],
        *,
        done: bool = False,
    ) -> None:
        """Ask for what this replica misses of these records (batched to the relay's limits).

        Args:
            items: ``(collection, record_id, state_vector)``; ``b"\\x00"`` (or ``b""``) for a
                record this replica does not have.
            done: true when answering a :class:`ChangedReceived` whose ``done`` is true; set on the
                last frame only. With no items and ``done`` true, one empty frame is sent.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send state vectors")
        vectors = [StateVectorItem(*item) for item in items]
        limits = self.limits
        sizes = [_sv_size(vector) for vector in vectors]
        batches = list(_batches(vectors, sizes, limits.max_items, limits.max_frame))
        if not batches and done:
            batches = [[]]
        for i, batch in enumerate(batches):
            self._send(m.StateVectors(tuple(batch), done and i == len(batches) - 1))

    def close(self, code: str = "going_away", reason: str = "") -> None:
        """End the connection: a fatal ``error`` frame, then ``b""``. Idempotent.

        Args:
            code: why (``going_away`` by default: the replica goes offline).
            reason: a human-readable explanation.
        """
        self.fail(code, reason)

    # -- receiving ------------------------------------------------------------------------

    def _handle(self, msg: m.Message, now: float | None) -> None:
        if self._state is State.CONNECTING:
            if isinstance(msg, m.Welcome) and self._hello_sent:
                if msg.version != PROTOCOL_VERSION:
                    self.fail(
                        "unsupported_version",
                        f"relay speaks v{msg.version}, this client v{PROTOCOL_VERSION}",
                    )
                    return
                if msg.limits.max_items < 1 or msg.limits.max_frame < _MIN_MAX_FRAME:
                    # Nothing could be pushed under such limits (docs/protocol.md, "Limits").
                    self.fail("bad_frame", f"unusable limits in welcome: {msg.limits}")
                    return
                self._welcome = msg
                self._set_state(State.OPEN)
                self._emit(
                    Welcomed(msg.tenant, msg.collections, msg.limits, msg.cache_max_age, msg.scopes)
                )
            else:
                self._unexpected(msg)
            return
        match msg:
            case m.Ack(seqs):
                fresh = tuple(s for s in seqs if self._in_flight.pop(s, False) is None)
                if fresh:
                    self._emit(Acked(fresh))
            case m.Reject(items):
                refused = tuple(i for i in items if self._in_flight.pop(i.seq, False) is None)
                if refused:
                    self._emit(Rejected(refused))
            case m.Changed(items, cursor, done):
                self._emit(ChangedReceived(items, cursor, done))
            case m.Updates(items, cursor):
                self._emit(UpdatesReceived(items, cursor))
            case m.Removed(items, cursor):
                self._emit(RemovedReceived(items, cursor))
            case m.Synced(cursor, at):
                self._catching_up = False
                self._emit(SyncedReceived(cursor, at))
            case m.Dropped(items):
                self._emit(DroppedReceived(items))
            case _:
                self._unexpected(msg)


# -- server --------------------------------------------------------------------------------


class ServerProtocol(_Protocol[ServerEvent]):
    """The relay's end of one client's sync connection.

    Args:
        max_frame: the largest frame accepted (announced in ``welcome``); also the byte budget
            the server batches its own frames to.
        max_items: the most items (entries, records, collections) per received frame
            (announced in ``welcome``); also the batch size of the server's own frames.
        rate: messages per second allowed in the long run (token bucket refill); None (or 0)
            disables the rate limit. Only enforced when ``receive_data()`` gets ``now``.
        burst: messages allowed in a burst (bucket size); defaults to ``2 * rate``.
        now: the current time, the start of :meth:`idle_for`. Optional.
    """

    _peer_name = "client"

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_items: int = DEFAULT_MAX_ITEMS,
        rate: float | None = DEFAULT_RATE,
        burst: float | None = None,
        now: float | None = None,
    ) -> None:
        super().__init__(max_frame=max_frame, now=now)
        self.max_items = max_items
        self.rate = rate
        self._bucket = TokenBucket(rate, burst) if rate else None
        self._hello: m.Hello | None = None
        self._tenant: str | None = None
        self._grant: frozenset[str] = frozenset()

    # -- what the server knows ------------------------------------------------------------

    @property
    def replica(self) -> str | None:
        """The client's replica id, once its ``hello`` arrived."""
        return None if self._hello is None else self._hello.replica

    @property
    def tenant(self) -> str | None:
        """The tenant given to ``accept()``."""
        return self._tenant

    @property
    def collections(self) -> frozenset[str]:
        """The collections given to ``accept()`` (the grant)."""
        return self._grant

    # -- commands -------------------------------------------------------------------------

    def accept(
        self,
        tenant: str,
        collections: Iterable[str],
        scopes: Iterable[tuple[str, object]] = (),
        *,
        cache_max_age: float | None = None,
    ) -> None:
        """Accept the client after verifying its token: send ``welcome``, move to ``OPEN``.

        Args:
            tenant: the tenant the token belongs to.
            collections: the collections the token grants; pushes, subscriptions and state
                vectors outside them are refused by the core (``forbidden``).
            cache_max_age: the tenant's maximum offline-cache age in seconds, sent in
                ``welcome`` (None: no expiry, the field is left out).
            scopes: per collection, the grant's record filter (wire form), announced to the
                client; the driver enforces it record by record.

        Raises:
            InvalidState: no ``hello`` was received, or the connection is not ``CONNECTING``.
        """
        if self._state is not State.CONNECTING or self._hello is None:
            raise InvalidState("accept() needs a hello received in CONNECTING")
        granted = tuple(dict.fromkeys(collections))
        self._tenant = tenant
        self._grant = frozenset(granted)
        self._send(
            m.Welcome(
                tenant,
                granted,
                Limits(self.max_frame, self.max_items),
                PROTOCOL_VERSION,
                cache_max_age,
                tuple(scopes),
            )
        )
        self._set_state(State.OPEN)

    def refuse(self, code: str, reason: str = "") -> None:
        """Refuse the client (``bad_token``, ``token_expired``...): fatal error, then close.

        Raises:
            InvalidState: the connection is not ``CONNECTING``.
        """
        if self._state is not State.CONNECTING:
            raise InvalidState(f"cannot refuse: the connection is {self._state.name}")
        self.fail(code, reason)

    def ack(self, seqs: Iterable[int]) -> None:
        """Acknowledge pushed entries. Call only once they are durably committed.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("ack")
        seqs = tuple(seqs)
        if seqs:
            self._send(m.Ack(seqs))

    def reject(self, items: Iterable[RejectItem | tuple[int, str, str]]) -> None:
        """Refuse pushed entries: ``(seq, code, reason)`` each (``rejected``, ``invalid_update``).

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("reject")
        refused = tuple(RejectItem(*item) for item in items)
        if refused:
            self._send(m.Reject(refused))

    def send_changed(
        self, items: Iterable[RecordKey | tuple[str, str]], cursor: int, done: bool = True
    ) -> None:
        """List records changed since the subscription's cursor, batched; ``done`` on the last.

        Args:
            items: the records changed by other replicas since the ``sub`` cursor.
            cursor: the change sequence the catch-up runs up to (sent again in ``synced``).
            done: false if more ``send_changed()`` calls follow for this catch-up.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send changed")
        keys = [RecordKey(*item) for item in items]
        sizes = [_record_size(key) for key in keys]
        batches = list(_batches(keys, sizes, self.max_items, self.max_frame)) or [[]]
        for i, batch in enumerate(batches):
            self._send(m.Changed(tuple(batch), cursor, done and i == len(batches) - 1))

    def send_updates(
        self, items: Iterable[UpdateItem | tuple[str, str, bytes]], cursor: int | None
    ) -> None:
        """Send updates, batched: diffs answering ``sv`` (``cursor`` None) or live ones.

        Args:
            items: ``(collection, record_id, update)``.
            cursor: for live updates, the change sequence of the newest one included (put on
                the last frame only); None for diffs.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send updates")
        # _batches() inlined: catch-up answers and fan-out frames hold many items.
        max_items, max_bytes = self.max_items, self.max_frame
        batch: list[UpdateItem] = []
        used = _FRAME_OVERHEAD
        for item in items:
            update = item if type(item) is UpdateItem else UpdateItem(*item)
            size = _update_size(update)
            if batch and (len(batch) >= max_items or used + size > max_bytes):
                self._send(m.Updates(tuple(batch), None))
                batch, used = [], _FRAME_OVERHEAD
            batch.append(update)
            used += size
        if batch:
            self._send(m.Updates(tuple(batch), cursor))

    def send_cursor(self, cursor: int) -> None:
        """Send a live cursor alone: an ``updates`` frame with no items.

        The relay sends live updates before their commit (cursor None) and the cursor that
        covers them once they are committed; when no other update goes out with it, it goes
        alone. Clients before this addition handle it already: no updates to apply, a cursor
        to persist.

        Args:
            cursor: a committed change sequence such that the client has received every
                change of its subscriptions up to it.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send cursor")
        self._send(m.Updates((), cursor))

    def send_removed(
        self, items: Iterable[RemovedItem | tuple[str, str, str]], cursor: int | None = None
    ) -> None:
        """Tell the client these records were deleted and purged (``(collection, record_id,
        tombstone)`` each), batched: in a catch-up before ``changed``/``synced``, or live after
        a purge.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send removed")
        removed = [RemovedItem(*item) for item in items]
        sizes = [_removed_size(item) for item in removed]
        for batch in _batches(removed, sizes, self.max_items, self.max_frame):
            self._send(m.Removed(tuple(batch), cursor))

    def send_synced(self, cursor: int, at: int | None = None) -> None:
        """Tell the client catch-up is complete up to ``cursor`` (after the answering updates).

        Args:
            cursor: the change sequence the catch-up ran up to.
            at: when the subscriptions were evaluated (Unix ms), for the client's next ``sub``.

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send synced")
        self._send(m.Synced(cursor, at))

    def send_dropped(self, items: Iterable[RecordKey | tuple[str, str]]) -> None:
        """Tell the client these records left what it keeps (batched to the limits).

        Raises:
            InvalidState: the connection is not ``OPEN``.
        """
        self._require_open("send dropped")
        keys = [RecordKey(*item) for item in items]
        sizes = [_record_size(key) for key in keys]
        for batch in _batches(keys, sizes, self.max_items, self.max_frame):
            self._send(m.Dropped(tuple(batch)))

    # -- receiving ------------------------------------------------------------------------

    def _admit(self, data: bytes, now: float | None) -> bool:
        if self._bucket is None or now is None or self._bucket.admit(now):
            return True
        self.fail("rate_limited", f"more than {self.rate:g} messages per second")
        return False

    def _too_many(self, count: int, what: str) -> bool:
        if count > self.max_items:
            self.fail(
                "too_many_items", f"{count} {what} in one frame; the limit is {self.max_items}"
            )
            return True
        return False

    def _handle(self, msg: m.Message, now: float | None) -> None:
        if self._state is State.CONNECTING:
            if isinstance(msg, m.Hello) and self._hello is None:
                if msg.version != PROTOCOL_VERSION:
                    self.fail(
                        "unsupported_version",
                        f"this relay speaks v{PROTOCOL_VERSION}, the client v{msg.version}",
                    )
                    return
                self._hello = msg
                self._emit(HelloReceived(msg.token, msg.replica, msg.version))
            elif isinstance(msg, m.Hello):
                self._unexpected(msg)
            else:
                self.fail("not_ready", "the handshake is not complete: send hello, wait welcome")
            return
        match msg:
            case m.Push(items):
                if self._too_many(len(items), "entries"):
                    return
                for before, after in itertools.pairwise(items):
                    if after.seq <= before.seq:
                        self.fail("bad_frame", "push seqs must increase within a frame")
                        return
                allowed = tuple(i for i in items if i.collection in self._grant)
                if len(allowed) < len(items):
                    self._send(
                        m.Reject(
                            tuple(
                                RejectItem(i.seq, "forbidden", f"no access to {i.collection!r}")
                                for i in items
                                if i.collection not in self._grant
                            )
                        )
                    )
                if allowed:
                    self._emit(PushReceived(allowed))
            case m.Subscribe(collections, cursor, subscriptions, since):
                if self._too_many(len(collections), "collections"):
                    return
                if subscriptions is not None and self._too_many(
                    len(subscriptions), "subscriptions"
                ):
                    return
                outside = sorted(set(collections) - self._grant)
                if outside:
                    self.fail("forbidden", f"no access to collections {outside}")
                    return
                stray = sorted({s.collection for s in subscriptions or ()} - set(collections))
                if stray:
                    self.fail("bad_frame", f"subscriptions on collections not in sub: {stray}")
                    return
                self._emit(Subscribed(collections, cursor, subscriptions, since))
            case m.StateVectors(items, done):
                if self._too_many(len(items), "records"):
                    return
                outside = sorted({i.collection for i in items} - self._grant)
                if outside:
                    self.fail("forbidden", f"no access to collections {outside}")
                    return
                self._emit(StateVectorsReceived(items, done))
            case _:
                self._unexpected(msg)
