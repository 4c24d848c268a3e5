"""The Hocuspocus multiplexed protocol (server side) as a pure codec and a per-socket session.

Hocuspocus (``@hocuspocus/provider`` 4.x, ``@hocuspocus/server`` 4.x) keeps many documents on
one websocket. Every frame, both ways, starts with the document's name::

    frame = varString(name) • varUint(type) • payload
    type 0  Sync            a y-protocols sync message (``y_websocket.decode_sync``)
    type 1  Awareness       varUint8Array(awareness update)
    type 2  Auth            varUint(sub) • ...
                              sub 0 Token: client -> server varString(token) [• varString(
                                    provider version), v4]; server -> client, no payload:
                                    "send your token again"
                              sub 1 PermissionDenied varString(reason)   (server -> client)
                              sub 2 Authenticated varString(scope)      (server -> client)
    type 3  QueryAwareness  (empty)
    type 4  SyncReply       like Sync, but a SyncStep1 in it is not answered with another
    type 5  Stateless       varString(payload)
    type 7  Close           client -> server: close this document; server -> client:
                            varString(reason)
    type 8  SyncStatus      varUint(1 = update stored, 0 = refused)        (server -> client)

plus two connection-level frames without a name: Ping ``[9]`` (server -> client) and Pong
``[10]`` (client -> server). The name may be ``document + "\\0" + session id`` (v4 "session
awareness"); replies go back to the name as received, and :attr:`HocuspocusEvent.document` is
the part before the ``\\0``.

Per document, a socket goes through: unknown -> (Token received) authenticating -> (the driver
calls :meth:`HocuspocusServerSession.authenticate`) open, or (``deny``) refused. Messages for a
document that is not open yet are held (bounded) and released, in order, when the driver
authenticates it; ``deny`` drops them, and the refused document's later traffic too, until a
new token for it arrives. Only documents whose token is not answered yet count against the
pending limit: a refusal never closes the socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import InvalidMessage, InvalidState
from . import y_websocket
from .lib0 import Reader, write_var_bytes, write_var_string, write_var_uint
from .updates import EMPTY_STATE_VECTOR
from .y_websocket import (
    CLOSE_PROTOCOL_ERROR,
    SyncType,
    close_reason,
    decode_sync,
    encode_sync,
)

__all__ = [
    "CLOSE_RESET",
    "PING",
    "PONG",
    "AwarenessQueried",
    "AwarenessReceived",
    "DocumentClosed",
    "DocumentUpdateReceived",
    "HocuspocusEvent",
    "HocuspocusServerSession",
    "MessageType",
    "PongReceived",
    "StateVectorReceived",
    "StatelessReceived",
    "TokenReceived",
    "decode_frame",
    "encode_frame",
]

#: Close code when the socket breaks a limit (``ResetConnection`` in ``@hocuspocus/common``).
CLOSE_RESET = 4205


class MessageType(enum.IntEnum):
    """Hocuspocus message types (``packages/server/src/types.ts``)."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    SYNC_REPLY = 4
    STATELESS = 5
    BROADCAST_STATELESS = 6
    CLOSE = 7
    SYNC_STATUS = 8
    PING = 9
    PONG = 10


class AuthType(enum.IntEnum):
    """Auth sub-message types (``packages/common/src/auth.ts``)."""

    TOKEN = 0
    PERMISSION_DENIED = 1
    AUTHENTICATED = 2


#: The connection-level ping the server sends (no document name).
PING = bytes([MessageType.PING])
#: The connection-level pong a v4 provider answers with.
PONG = bytes([MessageType.PONG])


@dataclass(frozen=True, slots=True)
class _Named:
    name: str

    @property
    def document(self) -> str:
        """The document name without a v4 session suffix (``name`` up to ``"\\0"``)."""
        return self.name.split("\0", 1)[0]


@dataclass(frozen=True, slots=True)
class TokenReceived(_Named):
    """The provider sent its token for ``name``: verify it, then ``authenticate`` or ``deny``."""

    token: str
    provider_version: str | None = None


@dataclass(frozen=True, slots=True)
class StateVectorReceived(_Named):
    """SyncStep1 for ``name``: answer SyncStep2 (+ own SyncStep1 unless ``reply``)."""

    state_vector: bytes
    reply: bool = False


@dataclass(frozen=True, slots=True)
class DocumentUpdateReceived(_Named):
    """An update for ``name`` (``step2``: a SyncStep2 answer); acknowledge after storing."""

    update: bytes
    step2: bool


@dataclass(frozen=True, slots=True)
class AwarenessReceived(_Named):
    """An awareness update for ``name``."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessQueried(_Named):
    """The provider asked for every awareness state of ``name``."""


@dataclass(frozen=True, slots=True)
class StatelessReceived(_Named):
    """An application-defined stateless payload for ``name``."""

    payload: str


@dataclass(frozen=True, slots=True)
class DocumentClosed(_Named):
    """The provider closed ``name`` (detached); the session already forgot it."""


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The provider answered a ping."""


HocuspocusEvent = (
    TokenReceived
    | StateVectorReceived
    | DocumentUpdateReceived
    | AwarenessReceived
    | AwarenessQueried
    | StatelessReceived
    | DocumentClosed
    | PongReceived
)


def encode_frame(name: str, kind: MessageType, payload: bytes = b"") -> bytes:
    """One Hocuspocus frame: ``varString(name) • varUint(kind) • payload``."""
    return write_var_string(name) + write_var_uint(kind) + payload


def decode_frame(frame: bytes) -> HocuspocusEvent | None:
    """Decode one frame a provider sent.

    Returns ``None`` for message types a provider does not send (ignored, as the reference
    server logs and ignores them). Trailing bytes are ignored, as lib0 decoders do.

    Raises:
        InvalidMessage: truncated data, a name or string that is not UTF-8, an unknown sync
            or auth sub-type.
    """
    if frame == PONG:
        return PongReceived()
    reader = Reader(frame)
    name = reader.var_string()
    kind = reader.var_uint()
    if kind in (MessageType.SYNC, MessageType.SYNC_REPLY):
        sync = decode_sync(reader)
        if isinstance(sync, y_websocket.StateVectorReceived):
            return StateVectorReceived(name, sync.state_vector, kind == MessageType.SYNC_REPLY)
        return DocumentUpdateReceived(name, sync.update, sync.step2)
    if kind == MessageType.AWARENESS:
        return AwarenessReceived(name, reader.var_bytes())
    if kind == MessageType.QUERY_AWARENESS:
        return AwarenessQueried(name)
    if kind == MessageType.AUTH:
        sub = reader.var_uint()
        if sub != AuthType.TOKEN:
            raise InvalidMessage(f"a provider sends no auth message of type {sub}")
        token = reader.var_string()
        version = None if reader.done else reader.var_string()
        return TokenReceived(name, token, version)
    if kind == MessageType.STATELESS:
        return StatelessReceived(name, reader.var_string())
    if kind == MessageType.CLOSE:
        return DocumentClosed(name)
    return None


class _DocState(enum.Enum):
    WAITING_TOKEN = "waiting_token"
    AUTHENTICATING = "authenticating"
    OPEN = "open"


@dataclass(slots=True)
class _Document:
    state: _DocState
    held: list[HocuspocusEvent] = field(default_factory=list)
    held_bytes: int = 0
    resync: bool = False  # refused earlier on this socket: resynchronise once open


class HocuspocusServerSession:
    """One Hocuspocus socket, server side: many documents, each with its own auth state.

    Calling contract (the one of :class:`crdt_sync.yjs.y_websocket.YjsServerSession` and the
    native :mod:`crdt_sync.protocol`):

    - ``receive_data(frame)`` for each binary websocket message, then act on every event
      :meth:`events_received` returns, in order, until it returns none. Events for a document
      come only once it is open, except :class:`TokenReceived`: the driver verifies the token,
      then calls :meth:`authenticate` (the events held for the document come next from
      :meth:`events_received`) or :meth:`deny`.
    - A malformed frame or a broken limit never raises: the session sets :attr:`close_code`,
      :attr:`close_reason` (and :attr:`close_exc` for a decoding error) and ignores further
      input; the driver closes the websocket after sending :meth:`data_to_send`.
    - After every call, send what :meth:`data_to_send` returns, in order.
    - Commands for a document that is not open raise :class:`~crdt_sync.errors.InvalidState`,
      and so does any command once the session is closing.

    A document the server refused (:meth:`deny`) or closed (:meth:`close_document`) is
    *refused* on this socket: a provider keeps sending for it after ``authenticationFailed``
    (the messages already in flight, its edits, its awareness renewals every 15 s), and those
    messages are dropped without counting against any limit. A new token for it is checked as
    for a new document; if it is accepted, :meth:`authenticate` returns a
    :class:`StateVectorReceived` with an empty state vector before the held events, so that
    the driver's answer (everything, plus the server's SyncStep1) resynchronises both sides:
    the provider sends no SyncStep1 after a token refresh, yet it missed what others wrote
    while refused, and the server missed what it wrote. A provider's ``Close`` forgets the
    document entirely.

    Args:
        max_pending_documents: documents whose token has not been answered yet, at once
            (reference: 100). Refused and open documents never count.
        max_held_messages: messages held for documents that are not open yet (reference: 1000).
        max_held_bytes: bytes of such messages (reference: 5 MiB).
        max_refused_documents: refused documents remembered per socket; beyond it the oldest
            is forgotten (a message for it then waits for a token, as for an unknown name).
    """

    __slots__ = (
        "_documents",
        "_events",
        "_held_bytes",
        "_held_messages",
        "_out",
        "_pending",
        "_refused",
        "close_code",
        "close_exc",
        "close_reason",
        "max_held_bytes",
        "max_held_messages",
        "max_pending_documents",
        "max_refused_documents",
    )

    def __init__(
        self,
        max_pending_documents: int = 100,
        max_held_messages: int = 1000,
        max_held_bytes: int = 5 * 1024 * 1024,
        max_refused_documents: int = 10_000,
    ) -> None:
        self.max_pending_documents = max_pending_documents
        self.max_held_messages = max_held_messages
        self.max_held_bytes = max_held_bytes
        self.max_refused_documents = max_refused_documents
        self._documents: dict[str, _Document] = {}
        self._refused: dict[str, None] = {}  # insertion-ordered: the oldest is forgotten first
        self._pending = 0  # documents WAITING_TOKEN or AUTHENTICATING
        self._held_messages = 0
        self._held_bytes = 0
        self._out: list[bytes] = []
        self._events: list[HocuspocusEvent] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_exc: InvalidMessage | None = None

    @property
    def closing(self) -> bool:
        """Whether the session decided to close the socket."""
        return self.close_code is not None

    @property
    def open_documents(self) -> list[str]:
        """Names (as the provider sent them) of the authenticated documents."""
        return [n for n, d in self._documents.items() if d.state is _DocState.OPEN]

    @property
    def pending_documents(self) -> int:
        """Documents whose token has not been answered yet (the limit's count)."""
        return self._pending

    @property
    def refused_documents(self) -> list[str]:
        """Names refused or closed by the server on this socket, oldest first."""
        return list(self._refused)

    @property
    def held_messages(self) -> int:
        """Messages held for documents that are not open yet."""
        return self._held_messages

    def is_open(self, name: str) -> bool:
        """Whether ``name`` is authenticated on this socket."""
        doc = self._documents.get(name)
        return doc is not None and doc.state is _DocState.OPEN

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, frame: bytes) -> None:
        """Decode one received frame; what to act on is in :meth:`events_received`."""
        self._events.extend(self._receive(frame))

    def events_received(self) -> list[HocuspocusEvent]:
        """Events to act on, in order; each call returns only what came since the last."""
        events, self._events = self._events, []
        return events

    def _receive(self, frame: bytes) -> list[HocuspocusEvent]:
        if self.closing:
            return []
        try:
            event = decode_frame(frame)
        except InvalidMessage as exc:
            self.close_exc = exc
            self._fail(CLOSE_PROTOCOL_ERROR, "malformed message")
            return []
        if event is None or isinstance(event, PongReceived):
            return [] if event is None else [event]
        name = event.name
        doc = self._documents.get(name)
        if isinstance(event, DocumentClosed):
            self._refused.pop(name, None)
            if doc is None:
                return []
            self._forget(name)
            return [event] if doc.state is _DocState.OPEN else []
        if doc is not None and doc.state is _DocState.OPEN:
            return [event]
        if isinstance(event, TokenReceived):
            if doc is None:
                if not self._admit_document():
                    return []
                refused_before = self._refused.pop(name, 0) is None
                doc = self._documents[name] = _Document(_DocState.AUTHENTICATING)
                doc.resync = refused_before
                self._pending += 1
            elif doc.state is _DocState.WAITING_TOKEN:
                doc.state = _DocState.AUTHENTICATING
            else:
                return []  # a second token while the first is checked: ignored
            return [event]
        if doc is None:
            if name in self._refused:
                return []  # traffic of a refused document: dropped, counts for nothing
            if not self._admit_document():
                return []
            doc = self._documents[name] = _Document(_DocState.WAITING_TOKEN)
            self._pending += 1
        self._hold(doc, event, len(frame))
        return []

    def _admit_document(self) -> bool:
        if self._pending >= self.max_pending_documents:
            self._fail(CLOSE_RESET, "too many documents awaiting authentication")
            return False
        return True

    def _hold(self, doc: _Document, event: HocuspocusEvent, size: int) -> None:
        if (
            self._held_messages + 1 > self.max_held_messages
            or self._held_bytes + size > self.max_held_bytes
        ):
            self._fail(CLOSE_RESET, "too many messages before authentication")
            return
        doc.held.append(event)
        doc.held_bytes += size
        self._held_messages += 1
        self._held_bytes += size

    def _release(self, doc: _Document) -> list[HocuspocusEvent]:
        """Take ``doc``'s held messages out of the counts (it is open or forgotten now)."""
        held = doc.held
        if doc.state is not _DocState.OPEN:
            self._pending -= 1
        self._held_messages -= len(held)
        self._held_bytes -= doc.held_bytes
        doc.held, doc.held_bytes = [], 0
        return held

    def _forget(self, name: str) -> None:
        doc = self._documents.pop(name, None)
        if doc is not None:
            self._release(doc)

    def _refuse(self, name: str) -> None:
        """Forget ``name`` and remember it as refused (the oldest beyond the cap goes)."""
        self._forget(name)
        self._refused.pop(name, None)
        self._refused[name] = None
        if len(self._refused) > self.max_refused_documents:
            del self._refused[next(iter(self._refused))]

    def _fail(self, code: int, reason: str) -> None:
        self.close_code = code
        self.close_reason = reason
        self._documents.clear()
        self._refused.clear()
        self._pending = self._held_messages = self._held_bytes = 0

    # -- output --------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Frames to send, in order; each call returns only what was queued since the last."""
        out, self._out = self._out, []
        return out

    def _queue(self, frame: bytes) -> None:
        if self.closing:
            raise InvalidState("the Hocuspocus session is closing")
        self._out.append(frame)

    def _require_open(self, name: str) -> None:
        if not self.is_open(name):
            raise InvalidState(f"document {name!r} is not open on this socket")

    def authenticate(self, name: str, scope: str = "read-write") -> None:
        """Open ``name`` after its token was accepted: queue ``Authenticated(scope)``.

        For a document already open (a provider refreshing its token), does nothing.
        Otherwise the events held for ``name`` while it was not open come next from
        :meth:`events_received`, in order; for a document refused earlier on this socket,
        first a :class:`StateVectorReceived` with an empty state vector (see the class
        docstring).

        Raises:
            InvalidState: no token is being checked for ``name``, or the session is closing.
        """
        doc = self._documents.get(name)
        if doc is not None and doc.state is _DocState.OPEN:
            return  # a refreshed token of an open document: nothing to say
        if doc is None or doc.state is not _DocState.AUTHENTICATING:
            raise InvalidState(f"no token is being checked for document {name!r}")
        self._queue(
            encode_frame(
                name,
                MessageType.AUTH,
                write_var_uint(AuthType.AUTHENTICATED) + write_var_string(scope),
            )
        )
        held = self._release(doc)
        doc.state = _DocState.OPEN
        if doc.resync:
            doc.resync = False
            held.insert(0, StateVectorReceived(name, EMPTY_STATE_VECTOR))
        self._events.extend(held)

    def deny(self, name: str, reason: str) -> None:
        """Refuse ``name``: queue ``PermissionDenied(reason)``; the document is refused on
        this socket (its held messages and later traffic are dropped, see the class
        docstring). The socket stays open for other documents. Works for an open document
        too (its token was refreshed and refused, or an update of it was rejected)."""
        self._queue(
            encode_frame(
                name,
                MessageType.AUTH,
                write_var_uint(AuthType.PERMISSION_DENIED) + write_var_string(reason),
            )
        )
        self._refuse(name)

    def answer_sync_step1(self, name: str, missing: bytes, state_vector: bytes) -> None:
        """Answer a SyncStep1 for ``name``: SyncStep2(``missing``), then the server's own
        SyncStep1. For a :class:`StateVectorReceived` with ``reply`` set, call
        :meth:`send_sync_step2` alone."""
        self.send_sync_step2(name, missing)
        self.send_sync_step1(name, state_vector)

    def send_sync_step1(self, name: str, state_vector: bytes) -> None:
        """Queue SyncStep1 for ``name`` with the server's state vector."""
        self._require_open(name)
        self._queue(encode_frame(name, MessageType.SYNC, encode_sync(SyncType.STEP1, state_vector)))

    def send_sync_step2(self, name: str, update: bytes) -> None:
        """Queue SyncStep2 for ``name`` with the updates the provider lacks."""
        self._require_open(name)
        self._queue(encode_frame(name, MessageType.SYNC, encode_sync(SyncType.STEP2, update)))

    def send_update(self, name: str, update: bytes) -> None:
        """Queue a live Update for ``name``."""
        self._require_open(name)
        self._queue(encode_frame(name, MessageType.SYNC, encode_sync(SyncType.UPDATE, update)))

    def acknowledge(self, name: str, stored: bool = True) -> None:
        """Queue SyncStatus for one received update of ``name``: call it once per
        :class:`DocumentUpdateReceived`, after the update is durably stored (``stored``) or
        refused (``stored=False``). Does nothing if ``name`` was closed meanwhile."""
        if not self.is_open(name) or self.closing:
            return
        self._queue(encode_frame(name, MessageType.SYNC_STATUS, write_var_uint(int(stored))))

    def send_awareness(self, name: str, update: bytes) -> None:
        """Queue an awareness update for ``name``."""
        self._require_open(name)
        self._queue(encode_frame(name, MessageType.AWARENESS, write_var_bytes(update)))

    def send_stateless(self, name: str, payload: str) -> None:
        """Queue a stateless payload for ``name``."""
        self._require_open(name)
        self._queue(encode_frame(name, MessageType.STATELESS, write_var_string(payload)))

    def close_document(self, name: str, reason: str) -> None:
        """Tell the provider ``name`` is closed (Close with ``reason``); the document is then
        refused on this socket, as after :meth:`deny`."""
        self._require_open(name)
        self._queue(encode_frame(name, MessageType.CLOSE, write_var_string(reason)))
        self._refuse(name)

    def ping(self) -> None:
        """Queue a connection-level Ping; v4 providers answer with a Pong. Any frame from the
        server keeps a provider from reconnecting (it gives up after 30 s of silence)."""
        self._queue(PING)

    def fail(self, code: int, reason: str) -> None:
        """Decide to close the socket with ``code`` and ``reason`` (e.g. a storage failure)."""
        if not self.closing:
            self._fail(code, close_reason(reason))
