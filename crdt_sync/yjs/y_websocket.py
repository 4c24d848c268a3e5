"""The y-websocket wire protocol (server side) as a pure codec and a per-connection session.

One websocket binary message carries exactly one message (``y-protocols/PROTOCOL.md``)::

    message = varUint(type) • payload
    type 0  sync             varUint(sub) • varUint8Array(data)
                                 sub 0 SyncStep1 (data = state vector)
                                 sub 1 SyncStep2 (data = update the receiver lacks)
                                 sub 2 Update    (data = incremental update)
    type 1  awareness        varUint8Array(awareness update)
    type 2  auth             varUint(0 = permissionDenied) • varString(reason)
    type 3  query-awareness  (empty)

Updates are Yjs v1 updates. The sync sub-message codec (:func:`encode_sync`,
:func:`decode_sync`) is shared with :mod:`crdt_sync.yjs.hocuspocus`, whose frames carry the same
payloads behind a document name.

:class:`YjsServerSession` holds one connection's protocol state, the way websockets' sans-I/O
``Protocol`` does: the driver feeds each received message to :meth:`~YjsServerSession.
receive_data`, acts on the returned events, calls commands (``send_*``, ``deny``) and sends
what :meth:`~YjsServerSession.data_to_send` returns. It never touches a socket or a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import InvalidMessage, InvalidState
from .lib0 import Reader, write_var_bytes, write_var_string, write_var_uint

__all__ = [
    "CLOSE_PERMISSION_DENIED",
    "CLOSE_PROTOCOL_ERROR",
    "AwarenessQueried",
    "AwarenessReceived",
    "MessageType",
    "PermissionDenied",
    "StateVectorReceived",
    "SyncType",
    "UpdateReceived",
    "YjsEvent",
    "YjsServerSession",
    "close_reason",
    "decode_message",
    "decode_sync",
    "encode_awareness",
    "encode_permission_denied",
    "encode_query_awareness",
    "encode_sync",
]

#: Websocket close code after a permission denial. y-websocket (3.x) does not reconnect after a
#: close code in 4400-4499 (``defaultShouldReconnect``), which is what a refused token needs.
CLOSE_PERMISSION_DENIED = 4403

#: Websocket close code after a malformed message (RFC 6455 "protocol error").
CLOSE_PROTOCOL_ERROR = 1002


class MessageType(enum.IntEnum):
    """Top-level y-websocket message types."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(enum.IntEnum):
    """y-protocols sync sub-message types."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


_AUTH_PERMISSION_DENIED = 0


@dataclass(frozen=True, slots=True)
class StateVectorReceived:
    """The peer sent SyncStep1: answer with the updates it lacks (SyncStep2)."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """The peer sent an update to apply: a SyncStep2 answer (``step2``) or a live Update."""

    update: bytes
    step2: bool


@dataclass(frozen=True, slots=True)
class AwarenessReceived:
    """The peer sent an awareness update (``crdt_sync.yjs.awareness`` decodes it)."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessQueried:
    """The peer asked for every known awareness state (query-awareness)."""


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    """The peer sent an auth message denying permission (a server receives none in practice)."""

    reason: str


YjsEvent = (
    StateVectorReceived | UpdateReceived | AwarenessReceived | AwarenessQueried | PermissionDenied
)


def encode_sync(sync_type: SyncType, data: bytes) -> bytes:
    """Encode a sync sub-message (without the top-level type): ``varUint(sub) • varBytes``."""
    return write_var_uint(sync_type) + write_var_bytes(data)


def decode_sync(reader: Reader) -> StateVectorReceived | UpdateReceived:
    """Decode a sync sub-message from ``reader``.

    Raises:
        InvalidMessage: truncated data or an unknown sub-type.
    """
    sub = reader.var_uint()
    data = reader.var_bytes()
    if sub == SyncType.STEP1:
        return StateVectorReceived(data)
    if sub == SyncType.STEP2:
        return UpdateReceived(data, step2=True)
    if sub == SyncType.UPDATE:
        return UpdateReceived(data, step2=False)
    raise InvalidMessage(f"unknown sync message type {sub}")


def encode_awareness(update: bytes) -> bytes:
    """A y-websocket awareness message carrying ``update``."""
    return write_var_uint(MessageType.AWARENESS) + write_var_bytes(update)


def encode_query_awareness() -> bytes:
    """A y-websocket query-awareness message."""
    return write_var_uint(MessageType.QUERY_AWARENESS)


def encode_permission_denied(reason: str) -> bytes:
    """A y-websocket auth message ``permissionDenied`` with ``reason``."""
    return (
        write_var_uint(MessageType.AUTH)
        + write_var_uint(_AUTH_PERMISSION_DENIED)
        + write_var_string(reason)
    )


def decode_message(frame: bytes) -> YjsEvent | None:
    """Decode one y-websocket message.

    Returns ``None`` for a message type this protocol does not define: the reference server
    ignores those, and so do we (forward compatibility). Trailing bytes are ignored, as lib0
    decoders do.

    Raises:
        InvalidMessage: the message is truncated, a sync sub-type is unknown, or an auth
            message is not ``permissionDenied``.
    """
    reader = Reader(frame)
    kind = reader.var_uint()
    if kind == MessageType.SYNC:
        return decode_sync(reader)
    if kind == MessageType.AWARENESS:
        return AwarenessReceived(reader.var_bytes())
    if kind == MessageType.QUERY_AWARENESS:
        return AwarenessQueried()
    if kind == MessageType.AUTH:
        if reader.var_uint() != _AUTH_PERMISSION_DENIED:
            raise InvalidMessage("unknown auth message type")
        return PermissionDenied(reader.var_string())
    return None


class YjsServerSession:
    """One y-websocket connection, server side: decoding in, framing out, close decisions.

    Calling contract (the one :mod:`crdt_sync.protocol` and
    :mod:`crdt_sync.yjs.hocuspocus` follow too, as websockets' sans-I/O ``Protocol`` does):

    - ``receive_data(message)`` for each binary websocket message, then act on each event
      :meth:`events_received` returns, in order. A malformed message never raises: the
      session queues nothing more,
      sets :attr:`close_code`/:attr:`close_reason` (protocol error), keeps the decoding error
      in :attr:`close_exc`, and ignores further input; the driver closes the websocket.
    - After any call, send every frame :meth:`data_to_send` returns, in order; then, if
      :attr:`close_code` is set, close the websocket with that code and reason.
    - Commands after the session is closing raise :class:`~crdt_sync.errors.InvalidState`.

    Answering SyncStep1 as the reference server does is :meth:`answer_sync_step1`: SyncStep2
    with the missing updates, immediately followed by the server's own SyncStep1.
    """

    __slots__ = ("_events", "_out", "close_code", "close_exc", "close_reason")

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._events: list[YjsEvent] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_exc: InvalidMessage | None = None

    @property
    def closing(self) -> bool:
        """Whether the session decided to close (denied or failed)."""
        return self.close_code is not None

    def receive_data(self, frame: bytes) -> None:
        """Decode one received message; its event (if any) is in :meth:`events_received`."""
        if self.closing:
            return
        try:
            event = decode_message(frame)
        except InvalidMessage as exc:
            self.close_exc = exc
            self.close_code = CLOSE_PROTOCOL_ERROR
            self.close_reason = "malformed message"
            return
        if event is not None:
            self._events.append(event)

    def events_received(self) -> list[YjsEvent]:
        """Events to act on, in order; each call returns only what came since the last."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Frames to send, in order; each call returns only what was queued since the last."""
        out, self._out = self._out, []
        return out

    def _queue(self, frame: bytes) -> None:
        if self.closing:
            raise InvalidState("the y-websocket session is closing")
        self._out.append(frame)

    def send_sync_step1(self, state_vector: bytes) -> None:
        """Queue SyncStep1 with the server's state vector (sent first on every connection)."""
        self._queue(write_var_uint(MessageType.SYNC) + encode_sync(SyncType.STEP1, state_vector))

    def send_sync_step2(self, update: bytes) -> None:
        """Queue SyncStep2 carrying the updates the client lacks."""
        self._queue(write_var_uint(MessageType.SYNC) + encode_sync(SyncType.STEP2, update))

    def answer_sync_step1(self, missing: bytes, state_vector: bytes) -> None:
        """Queue the reference answer to a SyncStep1: SyncStep2(``missing``), then SyncStep1."""
        self.send_sync_step2(missing)
        self.send_sync_step1(state_vector)

    def send_update(self, update: bytes) -> None:
        """Queue a live Update (an applied update, echoed to every connection of the record)."""
        self._queue(write_var_uint(MessageType.SYNC) + encode_sync(SyncType.UPDATE, update))

    def send_awareness(self, update: bytes) -> None:
        """Queue an awareness message carrying ``update``."""
        self._queue(encode_awareness(update))

    def fail(self, code: int, reason: str) -> None:
        """Decide to close with ``code`` and ``reason`` without an auth message (idempotent)."""
        if not self.closing:
            self.close_code = code
            self.close_reason = close_reason(reason)

    def deny(self, reason: str, code: int = CLOSE_PERMISSION_DENIED) -> None:
        """Queue ``permissionDenied(reason)`` and decide to close with ``code`` (default 4403).

        Idempotent once closing (a second call does nothing).
        """
        if self.closing:
            return
        self._out.append(encode_permission_denied(reason))
        self.close_code = code
        self.close_reason = close_reason(reason)


def close_reason(reason: str) -> str:
    """``reason`` cut to fit a websocket close frame (at most 123 UTF-8 bytes)."""
    return reason.encode("utf-8")[:123].decode("utf-8", errors="ignore")
