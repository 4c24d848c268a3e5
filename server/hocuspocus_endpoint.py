"""The Hocuspocus endpoint: ``ws://HOST:PORT/hocuspocus``, many records on one websocket.

The asyncio driver around :class:`crdt_sync.yjs.hocuspocus.HocuspocusServerSession`. A document
name is ``<collection>/<record id>`` (a v4 ``"\\0<session>"`` suffix is allowed). Per document:

1. The provider's Auth(Token): verified with the relay's verifier; the grant must cover the
   collection. Then ``Authenticated("read-write")`` (messages the provider sent meanwhile are
   handled next, in order) and the awareness states present; otherwise
   ``PermissionDenied(reason)``, and the socket stays open for the other documents (the
   refused document's later traffic is dropped until a new token for it; see
   :class:`~crdt_sync.yjs.hocuspocus.HocuspocusServerSession`).
2. SyncStep1: answered with SyncStep2 (from the committed state) and the relay's own SyncStep1.
3. SyncStep2/Update: validated and group-committed; ``SyncStatus(true)`` is sent only once the
   update is durably stored (an empty update is acknowledged after the document's previous
   updates are stored). The update then reaches every connection of the record (the sender
   included) and native subscribers. A refused update: ``SyncStatus(false)`` and
   ``PermissionDenied("rejected: ...")`` for that document. An update that builds on updates
   the relay does not have (blocked): ``SyncStatus(false)`` only, neither stored nor echoed.
4. Awareness relayed between connections of the record, never stored; removed on Close or when
   the socket closes.

Keepalive: a connection-level Ping every :data:`APP_PING_INTERVAL` seconds (a v4 provider
reconnects after 30 s without any message), plus the websocket ping every 30 s.
"""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

from crdt_sync.errors import AuthError, InvalidMessage, InvalidState
from crdt_sync.yjs.hocuspocus import (
    AwarenessQueried,
    AwarenessReceived,
    DocumentClosed,
    DocumentUpdateReceived,
    HocuspocusEvent,
    HocuspocusServerSession,
    StateVectorReceived,
    TokenReceived,
)
from crdt_sync.yjs.updates import EMPTY_UPDATE
from crdt_sync.yjs.y_websocket import CLOSE_PROTOCOL_ERROR

from .gateway import deleted_reason
from .tokens import Grant
from .validation import UpdateBlocked, UpdateRejected
from .yjs_link import EMPTY_AWARENESS, Link, LinkServices, answer_state_vector, new_replica_id
from .yjs_rooms import RoomKey

PATH = "/hocuspocus"
#: Seconds between connection-level Pings (providers give up after 30 s of silence).
APP_PING_INTERVAL = 10.0
#: Messages a provider sends to open a document (auth, sync step 1, awareness and its query):
#: credited to the rate limit when a document is opened.
_ATTACH_MESSAGES = 4


def is_hocuspocus_path(path: str) -> bool:
    """Whether ``path`` (without the query) is served by this endpoint."""
    return path == PATH or path.startswith(PATH + "/")


def parse_document_name(name: str) -> tuple[str, str] | None:
    """``<collection>/<record id>`` (before any ``"\\0"`` suffix) -> parts, or ``None``."""
    collection, slash, record_id = name.split("\0", 1)[0].partition("/")
    if not slash or not collection or not record_id:
        return None
    return collection, record_id


class _Document:
    """One open document on a Hocuspocus socket: a room member."""

    __slots__ = ("grant", "key", "last_commit", "link", "name")

    def __init__(self, link: HocuspocusConnection, name: str, key: RoomKey, grant: Grant) -> None:
        self.link = link
        self.name = name
        self.key = key
        self.grant = grant
        self.last_commit: asyncio.Future[int] | None = None

    def deliver_update(self, update: bytes) -> None:
        session = self.link.session
        if not session.closing and session.is_open(self.name):
            session.send_update(self.name, update)
            self.link.flush()

    def deliver_awareness(self, update: bytes) -> None:
        session = self.link.session
        if not session.closing and session.is_open(self.name):
            session.send_awareness(self.name, update)
            self.link.flush()

    def deliver_removed(self, reason: str) -> None:
        session = self.link.session
        self.link._forget(self.name)
        if not session.closing and session.is_open(self.name):
            session.deny(self.name, reason)
            self.link.flush()


class HocuspocusConnection(Link):
    """One Hocuspocus socket (see the module docstring)."""

    kind = "hocuspocus"

    def __init__(self, ws: ServerConnection, services: LinkServices) -> None:
        super().__init__(ws, services)
        self.session = HocuspocusServerSession()
        self.replica = new_replica_id("hocuspocus")
        self.documents: dict[str, _Document] = {}
        self._pinger: asyncio.TimerHandle | None = None

    def flush(self) -> None:
        """Send what the session queued; close if it decided to."""
        for frame in self.session.data_to_send():
            self.send(frame)
        if self.session.close_code is not None:
            self.close(self.session.close_code, self.session.close_reason)

    def _ping(self) -> None:
        if self.session.closing or self.closing:
            return
        self.session.ping()
        self.flush()
        self._pinger = asyncio.get_running_loop().call_later(APP_PING_INTERVAL, self._ping)

    async def start(self) -> None:
        self._pinger = asyncio.get_running_loop().call_later(APP_PING_INTERVAL, self._ping)

    async def handle(self, message: bytes) -> None:
        self.session.receive_data(message)
        await self._dispatch(self.session.events_received())
        self.flush()

    async def _dispatch(self, events: list[HocuspocusEvent]) -> None:
        for event in events:
            if self.session.closing:
                return
            match event:
                case TokenReceived():
                    await self._on_token(event)
                case StateVectorReceived(name, state_vector, reply):
                    doc = self.documents.get(name)
                    if doc is None:
                        continue
                    state = await self.gateway.record_state(*doc.key)
                    if not self.session.is_open(name) or self.session.closing:
                        continue
                    missing, vector = answer_state_vector(state, state_vector)
                    if reply:
                        self.session.send_sync_step2(name, missing)
                    else:
                        self.session.answer_sync_step1(name, missing, vector)
                case DocumentUpdateReceived(name, update):
                    await self._on_update(name, update)
                case AwarenessReceived(name, update):
                    doc = self.documents.get(name)
                    if doc is None:
                        continue
                    try:
                        self.rooms.apply_awareness(
                            doc.key, doc, update, asyncio.get_running_loop().time()
                        )
                    except InvalidMessage:
                        self.session.fail(CLOSE_PROTOCOL_ERROR, "malformed awareness update")
                case AwarenessQueried(name):
                    doc = self.documents.get(name)
                    if doc is not None:
                        full = self.rooms.full_awareness(doc.key)
                        self.session.send_awareness(name, full or EMPTY_AWARENESS)
                case DocumentClosed(name):
                    self._forget(name)
                case _:
                    pass  # Pong, Stateless (no stateless hook on this relay)
            self.flush()

    async def _on_token(self, event: TokenReceived) -> None:
        name = event.name
        if name not in self.documents:
            # One socket carries every document: opening many at once is not a flood, whether
            # each is accepted or refused (a refused one's messages in flight are dropped).
            self.credit_messages(_ATTACH_MESSAGES)
        parsed = parse_document_name(name)
        reason = None
        grant: Grant | None = None
        if parsed is None:
            reason = "bad document name: expected <collection>/<record id>"
        else:
            try:
                grant = await self.gateway.verify_token(event.token)
            except AuthError as exc:
                reason = f"{exc.code}: {exc.reason}" if exc.reason != exc.code else exc.code
            else:
                if not grant.allows(parsed[0]):
                    reason = f"forbidden: the token does not grant collection {parsed[0]!r}"
                elif (tombstone := await self.gateway.purged(grant.tenant, *parsed)) is not None:
                    reason = deleted_reason(parsed, tombstone)
                elif not await self.gateway.readable(grant, *parsed):
                    reason = "forbidden: the record is outside this token's access"
        if self.session.closing:
            return
        if reason is not None or grant is None or parsed is None:
            self._forget(name)
            self.session.deny(name, reason or "permission-denied")
            return
        existing = self.documents.get(name)
        if existing is not None:  # a refreshed token of an open document
            existing.grant = grant
            self.session.authenticate(name)
            return
        key: RoomKey = (grant.tenant, parsed[0], parsed[1])
        doc = self.documents[name] = _Document(self, name, key, grant)
        self.session.authenticate(name)
        held = self.session.events_received()  # what came for it before: handled next
        self.rooms.join(key, doc, grant.scope(parsed[0]))
        awareness = self.rooms.full_awareness(key)
        if awareness is not None:
            self.session.send_awareness(name, awareness)
        self.flush()
        await self._dispatch(held)

    async def _on_update(self, name: str, update: bytes) -> None:
        doc = self.documents.get(name)
        if doc is None:
            return
        if update == EMPTY_UPDATE:
            self._acknowledge_after(doc, doc.last_commit)
            return
        if doc.grant.expires_at <= time.time():
            self._forget(name)
            self.session.deny(name, "token_expired: reconnect with a fresh token")
            return
        _, collection, record_id = doc.key
        try:
            future = await self.gateway.submit_update(
                doc.grant, self.replica, doc, collection, record_id, update
            )
        except UpdateBlocked:
            # Builds on updates the relay does not have: not stored, not acknowledged; the
            # document stays open (the provider's next SyncStep2 carries what it builds on).
            if self.session.is_open(name):
                self.session.acknowledge(name, stored=False)
            return
        except UpdateRejected as exc:
            if self.session.is_open(name):
                self.session.acknowledge(name, stored=False)
                self._forget(name)
                self.session.deny(name, f"{exc.code}: {exc.reason}")
            return
        except InvalidState:
            self.close(CloseCode.GOING_AWAY, "the relay is shutting down")
            return
        doc.last_commit = future
        self._acknowledge_after(doc, future)

    def _acknowledge_after(self, doc: _Document, future: asyncio.Future[int] | None) -> None:
        """SyncStatus for ``doc`` once ``future`` (its latest commit) is done."""

        def acknowledge(done: asyncio.Future[int] | None) -> None:
            if self.session.closing:
                return
            if done is not None and (done.cancelled() or done.exception() is not None):
                self.session.fail(CloseCode.INTERNAL_ERROR, "the relay could not store the update")
            else:
                self.session.acknowledge(doc.name, stored=True)
            self.flush()

        if future is None or future.done():
            acknowledge(future)
        else:
            future.add_done_callback(acknowledge)

    def _forget(self, name: str) -> None:
        doc = self.documents.pop(name, None)
        if doc is not None:
            self.rooms.leave(doc.key, doc)

    def cleanup(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        for name in list(self.documents):
            self._forget(name)
