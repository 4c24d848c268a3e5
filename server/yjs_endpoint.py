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

The websocket's read loop, send queue and rate limit are :class:`~crdt_sync.server.yjs_link.
Link`'s, shared with the Hocuspocus endpoint.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, unquote, urlsplit

from pycrdt import get_state
from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

from crdt_sync.errors import AuthError, InvalidMessage, InvalidState
from crdt_sync.yjs.updates import EMPTY_STATE_VECTOR, EMPTY_UPDATE
from crdt_sync.yjs.y_websocket import (
    CLOSE_PERMISSION_DENIED,
    CLOSE_PROTOCOL_ERROR,
    AwarenessQueried,
    AwarenessReceived,
    StateVectorReceived,
    UpdateReceived,
    YjsServerSession,
)

from .gateway import deleted_reason
from .tokens import Grant
from .validation import UpdateBlocked, UpdateRejected
from .yjs_link import EMPTY_AWARENESS, Link, LinkServices, answer_state_vector, new_replica_id
from .yjs_rooms import RoomKey

PATH_PREFIX = "/yjs/"


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


class YjsConnection(Link):
    """One y-websocket connection (see the module docstring). It is its own room member."""

    kind = "yjs"

    def __init__(self, ws: ServerConnection, services: LinkServices) -> None:
        super().__init__(ws, services)
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

    def deliver_removed(self, reason: str) -> None:
        if not self.session.closing:
            self._deny(reason)

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
            grant = await self.gateway.verify_token(tokens[0])
        except AuthError as exc:
            self._deny(f"{exc.code}: {exc.reason}" if exc.reason != exc.code else exc.code)
            return
        if not grant.allows(collection):
            self._deny(f"forbidden: the token does not grant collection {collection!r}")
            return
        tombstone = await self.gateway.purged(grant.tenant, collection, record_id)
        if tombstone is not None:
            self._deny(deleted_reason((collection, record_id), tombstone))
            return
        if not await self.gateway.readable(grant, collection, record_id):
            self._deny("forbidden: the record is outside this token's access")
            return
        self.grant = grant
        self.key = (grant.tenant, collection, record_id)
        # First: anything committed from now on reaches us (while the record stays readable).
        self.rooms.join(self.key, self, grant.scope(collection))
        state = await self.gateway.record_state(*self.key)
        if self.session.closing or self.closing:
            return
        self.session.send_sync_step1(get_state(state) if state is not None else EMPTY_STATE_VECTOR)
        awareness = self.rooms.full_awareness(self.key)
        if awareness is not None:
            self.session.send_awareness(awareness)
        self._flush()

    async def handle(self, message: bytes) -> None:
        if self.key is None or self.session.closing:
            return
        self.session.receive_data(message)
        for event in self.session.events_received():
            match event:
                case StateVectorReceived(state_vector):
                    state = await self.gateway.record_state(*self.key)
                    if self._session_closing():
                        return
                    missing, vector = answer_state_vector(state, state_vector)
                    self.session.answer_sync_step1(missing, vector)
                case UpdateReceived(update):
                    await self._on_update(update)
                case AwarenessReceived(update):
                    try:
                        self.rooms.apply_awareness(
                            self.key, self, update, asyncio.get_running_loop().time()
                        )
                    except InvalidMessage:
                        self.session.fail(CLOSE_PROTOCOL_ERROR, "malformed awareness update")
                case AwarenessQueried():
                    full = self.rooms.full_awareness(self.key)
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
            future = await self.gateway.submit_update(
                self.grant, self.replica, self, collection, record_id, update
            )
        except UpdateBlocked:
            # Not stored, not echoed (the echo is y-websocket's confirmation). It builds on
            # edits the relay does not have yet, e.g. offline edits the client's SyncStep2 is
            # about to carry; that SyncStep2 (computed against the relay's state) includes it.
            return
        except UpdateRejected as exc:
            self._deny(f"{exc.code}: {exc.reason}")
            return
        except InvalidState:
            self.close(CloseCode.GOING_AWAY, "the relay is shutting down")
            return
        future.add_done_callback(self._committed)

    def _committed(self, future: asyncio.Future[int]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.close(CloseCode.INTERNAL_ERROR, "the relay could not store the update")

    def cleanup(self) -> None:
        if self.key is not None:
            self.rooms.leave(self.key, self)
