"""The y-websocket endpoint: ``ws://HOST:PORT/yjs/<collection>/<record id>?token=...``.

One websocket, one record, as with the reference server (``@y/websocket-server``). This module
is the asyncio driver around :class:`crdt_sync.yjs.y_websocket.YjsServerSession`:

1. Verify the ``token`` query parameter with the relay's verifier, and check that the grant
   covers ``<collection>``; otherwise send ``permissionDenied(reason)`` and close with 4403
   (y-websocket does not reconnect after a 44xx close code).
2. Join the record's room (committed updates reach us from now on), then send the relay's
   SyncStep1 and the awareness states present.
3. SyncStep1 from the client: answer SyncStep2 (what the client lacks, from the committed
   state) and our own SyncStep1. SyncStep2/Update: validate, group-commit, then deliver to
   every connection of the record (the sender included) and to native subscribers. A refused
   update: ``permissionDenied("rejected: ...")`` and close 4403. An update that builds on
   updates the relay does not have (blocked) is neither stored nor echoed.
4. Awareness: relayed to every connection of the record (sender included), answered on
   query-awareness, removed when the connection closes; never stored.

:class:`Link` is the part shared with the Hocuspocus endpoint: a bounded send queue drained by
its own task (fan-out never waits for a peer; a peer that reads too slowly is cut off with 1013)
and the close decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from pycrdt import get_state, get_update
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.protocol import State as WebSocketState

from crdt_sync.errors import AuthError, InvalidMessage, InvalidState
from crdt_sync.rate_limit import TokenBucket
from crdt_sync.yjs.updates import EMPTY_UPDATE
from crdt_sync.yjs.y_websocket import (
    CLOSE_PERMISSION_DENIED,
    CLOSE_PROTOCOL_ERROR,
    AwarenessQueried,
    AwarenessReceived,
    StateVectorReceived,
    UpdateReceived,
    YjsServerSession,
    close_reason,
)

from .tokens import Grant
from .validation import UpdateBlocked, UpdateRejected
from .yjs_rooms import RoomKey

if TYPE_CHECKING:
    from .relay import Relay

log = logging.getLogger(__name__)

PATH_PREFIX = "/yjs/"
#: Websocket-level ping interval of the Yjs endpoints (the reference servers use 30 s).
PING_INTERVAL = 30.0
#: How often the relay drops awareness states that were not renewed.
AWARENESS_CHECK_INTERVAL = 3.0
EMPTY_STATE_VECTOR = b"\x00"
EMPTY_AWARENESS = b"\x00"

_CLOSE_INTERNAL = 1011
_CLOSE_TRY_AGAIN_LATER = 1013
_CLOSE_UNSUPPORTED_DATA = 1003
_CLOSE_POLICY_VIOLATION = 1008
_SLOW_ABORT_AFTER = 1.0
_replica_ids = itertools.count(1)


def is_yjs_path(path: str) -> bool:
    """Whether ``path`` (without the query) is served by this endpoint."""
    return path.startswith(PATH_PREFIX)


def parse_record_path(path: str) -> tuple[str, str] | None:
    """``/yjs/<collection>/<record id>`` -> ``(collection, record_id)`` (percent-decoded).

    The record id is everything after the collection's slash (it may contain slashes).
    Returns ``None`` when a part is missing.
    """
    rest = urlsplit(path).path[len(PATH_PREFIX) :]
    collection, slash, record_id = rest.partition("/")
    if not slash or not collection or not record_id:
        return None
    return unquote(collection), unquote(record_id)


def new_replica_id(kind: str) -> str:
    """A replica id for a Yjs connection: its commits count as "another replica's" for every
    native replica (``changed`` catch-up)."""
    return f"{kind}-{next(_replica_ids)}"


def answer_state_vector(state: bytes | None, state_vector: bytes) -> tuple[bytes, bytes]:
    """``(missing, server_state_vector)`` for a SyncStep1 carrying ``state_vector``."""
    if state is None:
        return EMPTY_UPDATE, EMPTY_STATE_VECTOR
    try:
        missing = get_update(state, state_vector or EMPTY_STATE_VECTOR)
    except ValueError:
        missing = state  # an unreadable state vector gets the whole record
    return missing, get_state(state)


class Link:
    """A Yjs websocket: a bounded send queue with its sender task, and the close decision.

    Subclasses implement :meth:`handle` (one received message) and :meth:`cleanup`.
    """

    kind = "yjs"

    def __init__(self, relay: Relay, ws: ServerConnection) -> None:
        self.relay = relay
        self.ws = ws
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        rate = relay.config.rate_limit
        self._bucket = TokenBucket(rate) if rate else None

    @property
    def closing(self) -> bool:
        """Whether the link decided to close (received messages are then ignored)."""
        return self._close is not None

    def send(self, frame: bytes) -> None:
        """Queue ``frame``; never waits. A peer whose queue overflows is cut off (1013)."""
        if self._close is not None:
            return
        config = self.relay.config
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self.relay.metrics.frame_out(self.kind, len(frame))
        if (
            len(self._queue) > config.send_queue_frames
            or self._queued_bytes > config.send_queue_bytes
        ):
            log.warning("disconnecting a %s client: its send queue is full", self.kind)
            self.relay.metrics.errors.labels("too_slow").inc()
            self._queue.clear()
            self._queued_bytes = 0
            self.close(_CLOSE_TRY_AGAIN_LATER, "too slow")
            asyncio.get_running_loop().call_later(_SLOW_ABORT_AFTER, self._abort)
            return
        self._wakeup.set()

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (idempotent)."""
        if self._close is None:
            self._close = (code, close_reason(reason))
            self._wakeup.set()

    def _abort(self) -> None:
        if self.ws.state is not WebSocketState.CLOSED:
            self.ws.transport.abort()

    async def _sender(self) -> None:
        try:
            while True:
                while not self._queue and self._close is None:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if self._queue:
                    frame = self._queue.popleft()
                    self._queued_bytes -= len(frame)
                    await self.ws.send(frame)
                    continue
                assert self._close is not None
                await self.ws.close(*self._close)
                return
        except WebSocketClosed:
            return

    async def run(self) -> None:
        """Serve the websocket until it closes."""
        sender = asyncio.create_task(self._sender())
        loop = asyncio.get_running_loop()
        try:
            await self.start()
            async for message in self.ws:
                if self.closing:
                    continue  # drained, not handled
                if isinstance(message, str):
                    self.close(_CLOSE_UNSUPPORTED_DATA, "binary messages only")
                    continue
                self.relay.metrics.frame_in(self.kind, len(message))
                if self._bucket is not None and not self._bucket.admit(loop.time()):
                    self._rate_limited()
                    continue
                try:
                    await self.handle(message)
                except Exception:
                    log.exception("internal error handling a %s message", self.kind)
                    self.close(_CLOSE_INTERNAL, "internal relay error")
        except WebSocketClosed:
            pass
        finally:
            self.cleanup()
            if self.closing:
                with contextlib.suppress(asyncio.TimeoutError, WebSocketClosed):
                    await asyncio.wait_for(
                        asyncio.shield(sender), self.relay.config.shutdown_timeout
                    )
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketClosed):
                await sender

    def credit_messages(self, count: int) -> None:
        """Let ``count`` more messages through the rate limit (a document's handshake)."""
        if self._bucket is not None:
            self._bucket.credit(count)

    def _rate_limited(self) -> None:
        """Over the relay's messages-per-second limit: close 1008 (its reason says why; the
        client's reconnect backoff then slows it down). Other connections are unaffected."""
        assert self._bucket is not None
        log.warning("disconnecting a %s client: over the rate limit", self.kind)
        self.relay.metrics.errors.labels("rate_limited").inc()
        self.close(
            _CLOSE_POLICY_VIOLATION,
            f"rate limited: more than {self._bucket.rate:g} messages per second",
        )

    async def start(self) -> None:
        """Called once before the first message is read."""

    async def handle(self, message: bytes) -> None:
        """Handle one binary message."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Called once when the websocket is done (leave rooms)."""


class YjsConnection(Link):
    """One y-websocket connection (see the module docstring). It is its own room member."""

    kind = "yjs"

    def __init__(self, relay: Relay, ws: ServerConnection) -> None:
        super().__init__(relay, ws)
        self.session = YjsServerSession()
        self.replica = new_replica_id("yjs")
        self.grant: Grant | None = None
        self.key: RoomKey | None = None
        self._failed_commit = False

    # -- RoomMember -----------------------------------------------------------------------

    def deliver_update(self, update: bytes) -> None:
        if not self.session.closing:
            self.session.send_update(update)
            self._flush()

    def deliver_awareness(self, update: bytes) -> None:
        if not self.session.closing:
            self.session.send_awareness(update)
            self._flush()

    # -- driver ---------------------------------------------------------------------------

    def _flush(self) -> None:
        for frame in self.session.data_to_send():
            self.send(frame)
        if self.session.close_code is not None:
            self.close(self.session.close_code, self.session.close_reason)

    def _session_closing(self) -> bool:
        return self.session.closing  # a call: still true after an await (mypy narrows fields)

    def _deny(self, reason: str) -> None:
        self.session.deny(reason, CLOSE_PERMISSION_DENIED)
        self._flush()

    async def start(self) -> None:
        request = self.ws.request
        target = request.path if request is not None else ""
        record = parse_record_path(target)
        if record is None:
            self._deny("bad path: expected /yjs/<collection>/<record id>")
            return
        collection, record_id = record
        tokens = parse_qs(urlsplit(target).query).get("token", [])
        try:
            if not tokens:
                raise AuthError("bad_token", "missing token query parameter")
            grant = await self.relay.verify_token(tokens[0])
        except AuthError as exc:
            self._deny(f"{exc.code}: {exc.reason}" if exc.reason != exc.code else exc.code)
            return
        if not grant.allows(collection):
            self._deny(f"forbidden: the token does not grant collection {collection!r}")
            return
        self.grant = grant
        self.key = (grant.tenant, collection, record_id)
        rooms = self.relay.yjs_rooms
        rooms.join(self.key, self)  # first: anything committed from now on reaches us
        state = await self.relay.record_state(*self.key)
        if self.session.closing or self.closing:
            return
        self.session.send_sync_step1(get_state(state) if state is not None else EMPTY_STATE_VECTOR)
        awareness = rooms.full_awareness(self.key)
        if awareness is not None:
            self.session.send_awareness(awareness)
        self._flush()

    async def handle(self, message: bytes) -> None:
        if self.key is None or self.session.closing:
            return
        for event in self.session.receive_data(message):
            match event:
                case StateVectorReceived(state_vector):
                    state = await self.relay.record_state(*self.key)
                    if self._session_closing():
                        return
                    missing, vector = answer_state_vector(state, state_vector)
                    self.session.answer_sync_step1(missing, vector)
                case UpdateReceived(update):
                    await self._on_update(update)
                case AwarenessReceived(update):
                    try:
                        self.relay.yjs_rooms.apply_awareness(
                            self.key, self, update, asyncio.get_running_loop().time()
                        )
                    except InvalidMessage:
                        self.session.fail(CLOSE_PROTOCOL_ERROR, "malformed awareness update")
                case AwarenessQueried():
                    full = self.relay.yjs_rooms.full_awareness(self.key)
                    self.session.send_awareness(full or EMPTY_AWARENESS)
                case _:
                    pass  # a client's permissionDenied: nothing to do
        self._flush()

    async def _on_update(self, update: bytes) -> None:
        assert self.grant is not None and self.key is not None
        if update == EMPTY_UPDATE:
            return  # a SyncStep2 with nothing new: nothing to store or echo
        if self.grant.expires_at <= time.time():
            self._deny("token_expired: reconnect with a fresh token")
            return
        _, collection, record_id = self.key
        try:
            future = await self.relay.submit_record_update(
                self.grant, self.replica, self, collection, record_id, update
            )
        except UpdateBlocked:
            # Not stored, not echoed (the echo is y-websocket's confirmation). It builds on
            # edits the relay does not have yet, e.g. offline edits the client's SyncStep2 is
            # about to carry; that SyncStep2 (computed against the relay's state) includes it.
            return
        except UpdateRejected as exc:
            self._deny(f"rejected: {exc.reason}")
            return
        except InvalidState:
            self.close(1001, "the relay is shutting down")
            return
        future.add_done_callback(self._committed)

    def _committed(self, future: asyncio.Future[int]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.close(_CLOSE_INTERNAL, "the relay could not store the update")

    def cleanup(self) -> None:
        if self.key is not None:
            self.relay.yjs_rooms.leave(self.key, self)
