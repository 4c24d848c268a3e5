"""The relay: a websockets asyncio server pumping one :class:`ServerProtocol` per connection.

Theory of operation
===================

Everything the protocol decides (handshake order, limits, grant checks on ``push``/``sub``/
``sv``, batching) happens in the sans-I/O :class:`crdt_sync.protocol.ServerProtocol`. This
module is the driver: it feeds each websocket message to ``receive_data(message, now)``,
queues what ``data_to_send()`` returns on the connection's bounded send queue, and acts on the
events:

- ``HelloReceived``: run the :data:`~crdt_sync.server.tokens.Verifier`; ``accept(tenant,
  collections)`` or ``refuse(bad_token|token_expired)``. A connection is failed with
  ``token_expired`` when its token expires.
- ``PushReceived`` (entries outside the grant were already rejected ``forbidden`` by the core):
  each update must decode as a Yjs v1 update (else ``invalid_update``), depend only on clocks
  the relay has (else ``blocked``: the record's committed state, the updates accepted and not
  yet committed, and the entries of the same push accepted before it) and pass the optional
  validator (else ``rejected``); the rest is submitted to the storage's group commit and acked
  from the commit's callback, i.e. only once durable. The accepted updates are fanned out to
  the OTHER connections of the same tenant subscribed to their collection after the commit,
  with their cursor. With ``early_fanout`` they go at once, before the commit (cursor None);
  after the commit, each of them gets the cursor that covers them, and connections that
  subscribed in between get them then (docs/protocol.md, "Live updates").
- ``Subscribed``: register the subscription first (live fan-out starts), then read the
  tenant's committed head and list the records changed by other replicas since the cursor
  (``changed``, cursor = that head), or ``synced`` at once if there are none. A cursor ahead of
  the relay's head (a relay whose data was reset) is treated as ``None``.
- ``StateVectorsReceived``: answer ``updates`` with ``pycrdt.get_update(state, sv)`` diffs;
  after the ``done`` one, ``synced`` with the catch-up's cursor.

A connection's output goes through a bounded queue drained by its own sender task: fan-out
never awaits a peer, and a peer whose queue overflows (it reads too slowly) is disconnected
with close code 1013. Shutdown (:meth:`Relay.shutdown`, on SIGTERM/SIGINT): stop accepting,
stop reading frames, let every submitted write commit and its ack be queued, send ``error
going_away`` and close with 1001, then close the storage.

HTTP on the same port: ``GET /healthz`` (200 ``ok``, 503 while shutting down) and ``GET
/metrics`` (Prometheus text format, :mod:`crdt_sync.server.metrics`).

Yjs clients on the same port (``docs/yjs.md``): ``/yjs/<collection>/<record id>?token=...``
speaks y-websocket (:mod:`crdt_sync.server.yjs_endpoint`) and ``/hocuspocus`` speaks Hocuspocus
(:mod:`crdt_sync.server.hocuspocus_endpoint`). Their drivers go through the same gateway as
native replicas: :meth:`Relay.verify_token`, :meth:`Relay.record_state` and
:meth:`Relay.submit_record_update` (validation hook, group commit, then fan-out to native
subscribers). Every committed update, from any endpoint, is also delivered to the Yjs
connections that have the record open (:class:`~crdt_sync.server.yjs_rooms.YjsRooms`), the
sender included.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycrdt import get_state, get_update, merge_updates
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.http11 import Request, Response
from websockets.protocol import State as WebSocketState

from crdt_sync.errors import AuthError, InvalidMessage, InvalidState
from crdt_sync.messages import PushItem, StateVectorItem
from crdt_sync.protocol import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_ITEMS,
    DEFAULT_RATE,
    HelloReceived,
    PushReceived,
    ServerEvent,
    ServerProtocol,
    State,
    StateVectorsReceived,
    Subscribed,
)
from crdt_sync.yjs_encoding import UpdateClocks, read_update_clocks

from .hocuspocus_endpoint import HocuspocusConnection, is_hocuspocus_path
from .metrics import RelayMetrics
from .record_clocks import RecordClocks
from .storage import (
    DEFAULT_FORGET_ORIGINS_AFTER,
    DEFAULT_STATE_CACHE_BYTES,
    RelayStorage,
    SQLiteRelayStorage,
)
from .tokens import Grant, Verifier
from .validation import UpdateBlocked, UpdateRejected, Validator
from .wire import message_type
from .yjs_endpoint import AWARENESS_CHECK_INTERVAL, PING_INTERVAL, Link, YjsConnection, is_yjs_path
from .yjs_rooms import YjsRooms

log = logging.getLogger(__name__)

EMPTY_STATE_VECTOR = b"\x00"

_CLOSE_CODES = {"going_away": 1001, "too_big": 1009, "internal": 1011}
_POLICY_VIOLATION = 1008
_TRY_AGAIN_LATER = 1013
_SLOW_ABORT_AFTER = 1.0  # seconds a cut-off slow peer gets for the closing handshake
_MERGE_CHUNK = 64  # updates merged into one Yjs Update message (merge_updates is quadratic)


def _abort(ws: ServerConnection) -> None:
    """Drop the TCP connection at once (no closing handshake)."""
    if ws.state is not WebSocketState.CLOSED:
        ws.transport.abort()


@dataclass(slots=True)
class RelayConfig:
    """How to run a relay. ``crdt-sync serve`` flags map one to one onto these fields.

    Attributes:
        host: interface to bind.
        port: TCP port; 0 picks a free one (see :attr:`Relay.port`).
        data_dir: directory of the SQLite database (ignored when a storage is passed).
        verifier: token check (``--verifier``, else HMAC tokens under ``--secret``).
        validator: optional validation hook (``--validator``).
        durable: ``synchronous=FULL`` (power-loss durable) instead of ``NORMAL``.
        early_fanout: send accepted updates to subscribers before their commit (lower
            latency); off by default: see docs/relay.md for the case it gives up.
        max_frame: largest frame a client may send (bytes); websockets itself cuts messages
            over twice this (close 1009) before they are even buffered whole.
        max_items: most items per received frame, and the batch size of sent frames.
        rate_limit: messages per second per connection (burst: twice that); 0 disables.
        state_cache_bytes: memory for merged record states kept to answer catch-ups without
            reading the database (ignored when a storage is passed); 0 disables.
        forget_origins_after: changes of a tenant after which a change row forgets which
            replica made it (see :class:`~crdt_sync.server.storage.SQLiteRelayStorage`); 0
            never (ignored when a storage is passed).
        send_queue_frames: frames a connection may have queued before it counts as too slow.
        send_queue_bytes: bytes a connection may have queued before it counts as too slow.
        ping_interval: websocket-level keepalive ping interval (seconds; None disables).
        ping_timeout: websocket-level pong timeout (seconds).
        shutdown_timeout: longest a graceful shutdown waits for commits and sends.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("./relay-data")
    verifier: Verifier | None = None
    validator: Validator | None = None
    durable: bool = False
    early_fanout: bool = False
    max_frame: int = DEFAULT_MAX_FRAME
    max_items: int = DEFAULT_MAX_ITEMS
    rate_limit: float = DEFAULT_RATE
    state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES
    forget_origins_after: int = DEFAULT_FORGET_ORIGINS_AFTER
    send_queue_frames: int = 4096
    send_queue_bytes: int = 64 * 1024 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    shutdown_timeout: float = 10.0


_CLOSE = b""  # marker on a send queue: close the websocket after what precedes


@dataclass(eq=False, slots=True)
class _Connection:
    """One client connection: its websocket, protocol core, grant and send queue."""

    ws: ServerConnection
    protocol: ServerProtocol
    grant: Grant | None = None
    replica: str = ""
    subscribed: set[str] = field(default_factory=set)
    catchups: deque[int] = field(default_factory=deque)
    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = 1000
    too_slow: bool = False
    expiry: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class _Accepted:
    """Updates accepted (decoded, validated) and submitted to the group commit, until fanned out.

    Attributes:
        tenant: whose records they are.
        origin: the connection (or Yjs link) that sent them: never sent back to it.
        items: the updates, in push order.
        early: ``(subscriber, collection)`` pairs that got the early copy (sent before the
            commit); at commit time every other current subscriber gets a late copy.
    """

    tenant: str
    origin: object
    items: list[PushItem]
    early: set[tuple[_Connection, str]] = field(default_factory=set)


class Relay:
    """A running relay (see the module docstring).

    Args:
        config: what to serve and how.
        storage: the storage to use; defaults to :class:`SQLiteRelayStorage` in
            ``config.data_dir``. The relay opens and closes it.
    """

    def __init__(self, config: RelayConfig, storage: RelayStorage | None = None) -> None:
        if config.verifier is None:
            raise ValueError("RelayConfig.verifier is required (e.g. tokens.secret_verifier)")
        self.config = config
        self.verifier: Verifier = config.verifier
        self.storage: RelayStorage = storage or SQLiteRelayStorage(
            config.data_dir,
            durable=config.durable,
            state_cache_bytes=config.state_cache_bytes,
            forget_origins_after=config.forget_origins_after,
        )
        self.metrics = RelayMetrics()
        self.metrics.watch_storage(self.storage.numbers)
        self._server: Server | None = None
        self._connections: set[_Connection] = set()
        # tenant -> collection -> connections subscribed to it
        self._subscriptions: dict[str, dict[str, set[_Connection]]] = {}
        self._early_pending: list[_Accepted] = []  # accepted, early copies not yet queued
        self._acks_pending: dict[_Connection, list[int]] = {}  # committed, ack not yet queued
        self._fan_out_pending: list[tuple[_Accepted, list[int]]] = []  # committed, seqs known
        # What the relay has of each record, for the dependency check (``blocked``).
        self._clocks = RecordClocks()
        #: Records open on Yjs connections (y-websocket, Hocuspocus) and their awareness.
        self.yjs_rooms = YjsRooms()
        self._yjs_links: set[Link] = set()
        self._awareness_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._busy = 0  # frames being handled + writes waiting for their commit callback
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the storage and start listening."""
        await self.storage.open()
        self._server = await serve(
            self._handle_connection,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=max(2 * self.config.max_frame, self.config.max_frame + 65536),
            compression=None,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=5,
        )
        self._expire_awareness()

    def _expire_awareness(self) -> None:
        """Every few seconds: drop Yjs awareness states not renewed in time (as peers do)."""
        loop = asyncio.get_running_loop()
        self.yjs_rooms.expire_awareness(loop.time())
        self._awareness_timer = loop.call_later(AWARENESS_CHECK_INTERVAL, self._expire_awareness)

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with ``port=0``)."""
        if self._server is None:
            raise InvalidState("relay not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``ws://host:port`` of the relay."""
        return f"ws://{self.config.host}:{self.port}"

    async def shutdown(self) -> None:
        """Graceful shutdown: nothing acknowledged is lost, nothing submitted is dropped.

        Stops accepting connections and frames, waits (up to ``shutdown_timeout``) until every
        frame being handled is done and every submitted write is committed and acked, sends
        ``error going_away`` and closes each connection with 1001, then closes the storage.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._awareness_timer is not None:
            self._awareness_timer.cancel()
        server = self._server
        if server is not None:
            server.server.close()  # stop accepting new TCP connections
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.shutdown_timeout)
        except TimeoutError:
            log.warning("shutdown: %d operations still in flight after timeout", self._busy)
        for conn in list(self._connections):
            if conn.protocol.state is State.OPEN or conn.protocol.state is State.CONNECTING:
                conn.protocol.fail("going_away", "the relay is shutting down")
                self._flush(conn)
        for link in list(self._yjs_links):
            link.close(1001, "the relay is shutting down")
        if server is not None:
            server.close(close_connections=False)
            try:
                await asyncio.wait_for(server.wait_closed(), self.config.shutdown_timeout)
            except TimeoutError:
                server.close(close_connections=True)
                await server.wait_closed()
        await self.storage.close()

    # -- HTTP endpoints -------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            if self._stopping:
                return connection.respond(503, "shutting down\n")
            if not self.storage.healthy:
                return connection.respond(503, "storage unavailable\n")
            return connection.respond(200, "ok\n")
        if path == "/metrics":
            body = self.metrics.render()
            headers = Headers(
                [
                    ("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ]
            )
            return Response(200, "OK", headers, body)
        if self._stopping:
            return connection.respond(503, "shutting down\n")
        yjs = is_yjs_path(path) or is_hocuspocus_path(path)
        if yjs and self.config.ping_interval is not None:
            # The reference servers ping every 30 s (websockets reads this at handshake end).
            connection.ping_interval = PING_INTERVAL
        return None

    # -- one connection -------------------------------------------------------------------

    async def _handle_connection(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        if is_yjs_path(path.split("?", 1)[0]):
            await self._serve_yjs(YjsConnection(self, ws))
            return
        if is_hocuspocus_path(path.split("?", 1)[0]):
            await self._serve_yjs(HocuspocusConnection(self, ws))
            return
        loop = asyncio.get_running_loop()
        rate = self.config.rate_limit or None
        conn = _Connection(
            ws,
            ServerProtocol(
                max_frame=self.config.max_frame,
                max_items=self.config.max_items,
                rate=rate,
                now=loop.time(),
            ),
        )
        self._connections.add(conn)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        sender = asyncio.create_task(self._sender(conn))
        try:
            async for message in ws:
                if self._stopping or conn.too_slow or conn.protocol.state >= State.CLOSING:
                    # Drained, not handled (so never acked: the client re-sends it). Reading
                    # on lets the closing handshake through behind a flooding client.
                    continue
                await self._receive(conn, message)
        except WebSocketClosed:
            pass
        finally:
            if conn.expiry is not None:
                conn.expiry.cancel()
            self._unsubscribe(conn)
            if self._stopping or conn.protocol.state >= State.CLOSING:
                # Let the sender deliver what is queued (acks, error frames), then close.
                with contextlib.suppress(asyncio.TimeoutError, WebSocketClosed):
                    await asyncio.wait_for(asyncio.shield(sender), self.config.shutdown_timeout)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketClosed):
                await sender
            conn.protocol.receive_eof()
            self._connections.discard(conn)
            self.metrics.connections.dec()

    async def _serve_yjs(self, link: Link) -> None:
        self._yjs_links.add(link)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        try:
            await link.run()
        finally:
            self._yjs_links.discard(link)
            self.metrics.connections.dec()

    async def _sender(self, conn: _Connection) -> None:
        ws = conn.ws
        try:
            while True:
                while not conn.queue:
                    conn.wakeup.clear()
                    await conn.wakeup.wait()
                frame = conn.queue.popleft()
                conn.queued_bytes -= len(frame)
                if frame is _CLOSE or not frame:
                    await ws.close(conn.close_code)
                    return
                await ws.send(frame)
        except WebSocketClosed:
            return

    def _flush(self, conn: _Connection) -> None:
        """Move the core's output to the send queue; never waits (a slow peer is cut off)."""
        for data in conn.protocol.data_to_send():
            if conn.too_slow:
                continue
            if not data:
                code = conn.protocol.close_exc.code
                conn.close_code = _CLOSE_CODES.get(code, _POLICY_VIOLATION)
                self.metrics.errors.labels(code).inc()
                conn.queue.append(_CLOSE)
                conn.wakeup.set()
                continue
            self.metrics.frame_out(message_type(data), len(data))
            conn.queue.append(data)
            conn.queued_bytes += len(data)
            if (
                len(conn.queue) > self.config.send_queue_frames
                or conn.queued_bytes > self.config.send_queue_bytes
            ):
                self._cut_off_slow(conn)
                return
            conn.wakeup.set()

    def _cut_off_slow(self, conn: _Connection) -> None:
        log.warning("disconnecting replica %r: its send queue is full", conn.replica)
        conn.too_slow = True
        conn.queue.clear()
        conn.queued_bytes = 0
        self.metrics.errors.labels("too_slow").inc()
        self._unsubscribe(conn)
        conn.close_code = _TRY_AGAIN_LATER
        conn.queue.append(_CLOSE)
        conn.wakeup.set()
        # The sender may be stuck in a send the peer never reads: then drop the TCP link.
        asyncio.get_running_loop().call_later(_SLOW_ABORT_AFTER, _abort, conn.ws)

    async def _receive(self, conn: _Connection, message: bytes | str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        size = len(message)
        self.metrics.frame_in(message_type(message), size)
        self._enter()
        try:
            conn.protocol.receive_data(message, now=started)
            self._flush(conn)
            for event in conn.protocol.events_received():
                await self._dispatch(conn, event, started)
                self._flush(conn)
        except Exception:
            log.exception("internal error handling a frame from replica %r", conn.replica)
            if conn.protocol.state < State.CLOSING:
                conn.protocol.fail("internal", "internal relay error")
            self._flush(conn)
        finally:
            self._leave()

    async def _dispatch(self, conn: _Connection, event: ServerEvent, started: float) -> None:
        if conn.protocol.state is not State.OPEN and not isinstance(event, HelloReceived):
            return
        match event:
            case HelloReceived():
                await self._on_hello(conn, event, started)
            case PushReceived(items):
                await self._on_push(conn, items, started)
            case Subscribed(collections, cursor):
                await self._on_subscribe(conn, collections, cursor, started)
            case StateVectorsReceived(items, done):
                await self._on_state_vectors(conn, items, done, started)
            case _:
                pass  # pongs and non-fatal errors from the client need no action

    # -- handshake ------------------------------------------------------------------------

    async def verify_token(self, token: str) -> Grant:
        """Run the verifier on ``token`` (any endpoint).

        Raises:
            AuthError: code ``bad_token`` or ``token_expired``; a verifier failing with any
                other exception counts as ``bad_token`` (logged).
        """
        try:
            result: Grant | Awaitable[Grant] = self.verifier(token)
            grant = await result if inspect.isawaitable(result) else result
            if not isinstance(grant, Grant):
                raise TypeError(f"verifier returned {type(grant).__name__}, not Grant")
        except AuthError as exc:
            code = exc.code if exc.code in ("bad_token", "token_expired") else "bad_token"
            raise AuthError(code, exc.reason or code) from exc
        except Exception as exc:
            log.exception("token verifier failed")
            raise AuthError("bad_token", "token could not be verified") from exc
        return grant

    async def _on_hello(self, conn: _Connection, event: HelloReceived, started: float) -> None:
        try:
            grant = await self.verify_token(event.token)
        except AuthError as exc:
            conn.protocol.refuse(exc.code, exc.reason)
            return
        if conn.protocol.state is not State.CONNECTING:
            return
        conn.grant = grant
        conn.replica = event.replica
        conn.protocol.accept(grant.tenant, sorted(grant.collections))
        remaining = grant.expires_at - time.time()
        if remaining < 1e9:
            loop = asyncio.get_running_loop()
            conn.expiry = loop.call_later(max(0.0, remaining), self._expire, conn)
        self.metrics.observe_latency("hello", loop_time() - started)

    def _expire(self, conn: _Connection) -> None:
        if conn.protocol.state is State.OPEN:
            conn.protocol.fail("token_expired", "the token expired; reconnect with a fresh one")
            self._unsubscribe(conn)
            self._flush(conn)

    # -- upload ---------------------------------------------------------------------------

    async def _on_push(self, conn: _Connection, items: Sequence[PushItem], started: float) -> None:
        assert conn.grant is not None
        grant = conn.grant
        tenant = grant.tenant
        refused: list[tuple[int, str, str]] = []
        readable: list[tuple[PushItem, UpdateClocks]] = []
        for item in items:
            try:
                readable.append((item, _read_clocks(item.update)))
            except UpdateRejected as exc:
                refused.append((item.seq, "invalid_update", exc.reason))
        states, vectors = await self._states_and_vectors(
            tenant, [(item.collection, item.record_id, clocks) for item, clocks in readable]
        )
        accepted: list[tuple[PushItem, UpdateClocks]] = []
        validator = self.config.validator
        for item, clocks in readable:
            key = (item.collection, item.record_id)
            vector = vectors.get(key, {})
            refusal = _blocked(clocks, vector)
            if refusal is None and validator is not None:
                refusal = await self._validate(
                    validator, grant, item.collection, item.record_id, item.update, states.get(key)
                )
            if refusal is not None:
                refused.append((item.seq, refusal.code, refusal.reason))
                continue
            self._clocks.accept((tenant, *key), clocks)
            clocks.extend(vector)  # the later entries of the push may build on this one
            accepted.append((item, clocks))
        if refused:
            refused.sort()
            for _, code, _ in refused:
                self.metrics.rejects.labels(code).inc()
            if conn.protocol.state is State.OPEN:
                conn.protocol.reject(refused)
        if not accepted:
            return
        write = _Accepted(tenant, conn, [item for item, _ in accepted])
        # Queued before the write wakes the storage writer: the early copies go out first.
        if self.config.early_fanout:
            self._fan_out_early(write)
        try:
            future = self._submit(tenant, conn.replica, write.items)
        except InvalidState:  # shutting down: not stored, not acked; the client re-sends
            self._settled(tenant, accepted, None)
            with contextlib.suppress(ValueError):
                self._early_pending.remove(write)  # and not fanned out either
            return
        self._enter()

        def committed(done: asyncio.Future[list[int]]) -> None:
            self._settled(tenant, accepted, done)
            self._committed(conn, write, done, started)

        future.add_done_callback(committed)

    async def _states_and_vectors(
        self, tenant: str, updates: Sequence[tuple[str, str, UpdateClocks]]
    ) -> tuple[dict[tuple[str, str], bytes], dict[tuple[str, str], dict[int, int]]]:
        """What checking ``(collection, record_id, clocks)`` updates takes: the committed states
        of their records if there is a validator, and the state vectors (:class:`RecordClocks`)
        of the records of the updates that need clocks they do not carry themselves."""
        vectors: dict[tuple[str, str], dict[int, int]] = {}
        load: dict[tuple[str, str], tuple[UpdateClocks, ...]] = {}
        for collection, record_id, clocks in updates:
            key = (collection, record_id)
            if key in vectors or key in load or clocks.missing({}) is None:
                continue
            vector = self._clocks.get((tenant, *key))
            if vector is None:  # loaded from the state, with what is committed meanwhile
                load[key] = self._clocks.uncommitted((tenant, *key))
            else:
                vectors[key] = vector
        wanted = list(load)
        if self.config.validator is not None:
            wanted = list(dict.fromkeys([(c, r) for c, r, _ in updates]))
        states = await self.storage.get_states(tenant, wanted) if wanted else {}
        for key, before in load.items():
            vectors[key] = self._clocks.load((tenant, *key), states.get(key), before)
        return states, vectors

    def _settled(
        self,
        tenant: str,
        accepted: Sequence[tuple[PushItem, UpdateClocks]],
        done: asyncio.Future[list[int]] | None,
    ) -> None:
        """The commit of accepted updates completed (``done``), or they were not submitted."""
        stored = done is not None and not done.cancelled() and done.exception() is None
        for item, clocks in accepted:
            self._clocks.settled((tenant, item.collection, item.record_id), clocks, stored=stored)

    async def _validate(
        self,
        validator: Validator,
        grant: Grant,
        collection: str,
        record_id: str,
        update: bytes,
        state: bytes | None,
    ) -> UpdateRejected | None:
        """The validator's refusal of an update (``state``: the record's committed state)."""
        try:
            outcome = validator(collection, record_id, update, state, grant)
            if inspect.isawaitable(outcome):
                await outcome
        except UpdateRejected as exc:
            return exc
        except Exception:
            log.exception("validator failed on %s/%s", collection, record_id)
            return UpdateRejected("validation failed")
        return None

    async def record_state(self, tenant: str, collection: str, record_id: str) -> bytes | None:
        """The record's committed state (a Yjs v1 update), or ``None`` if it has none."""
        states = await self.storage.get_states(tenant, [(collection, record_id)])
        return states.get((collection, record_id))

    async def submit_record_update(
        self,
        grant: Grant,
        replica: str,
        origin: object,
        collection: str,
        record_id: str,
        update: bytes,
    ) -> asyncio.Future[int]:
        """Validate one update from a Yjs endpoint and submit it to the group commit.

        The caller checked ``grant.allows(collection)``. Returns a future that completes with
        the commit's sequence number once the update is durable (the fan-out to native
        subscribers and Yjs rooms is then scheduled), or fails if the commit failed.

        Raises:
            UpdateRejected: not a Yjs v1 update, or refused by the validation hook;
                :class:`UpdateBlocked` if it depends on updates the relay does not have.
            InvalidState: the relay is shutting down (nothing stored).
        """
        if self._stopping:
            raise InvalidState("the relay is shutting down")
        try:
            clocks = _read_clocks(update)
        except UpdateRejected:
            self.metrics.rejects.labels("invalid_update").inc()
            raise
        key = (collection, record_id)
        states, vectors = await self._states_and_vectors(
            grant.tenant, [(collection, record_id, clocks)]
        )
        state = states.get(key)
        refusal = _blocked(clocks, vectors.get(key, {}))
        validator = self.config.validator
        if refusal is None and validator is not None:
            refusal = await self._validate(validator, grant, collection, record_id, update, state)
        if refusal is not None:
            self.metrics.rejects.labels(refusal.code).inc()
            raise refusal
        item = PushItem(0, collection, record_id, update)
        self._clocks.accept((grant.tenant, *key), clocks)
        try:
            stored = self._submit(grant.tenant, replica, [item])
        except BaseException:
            self._settled(grant.tenant, [(item, clocks)], None)
            raise
        write = _Accepted(grant.tenant, origin, [item])  # no early copies: all go at commit
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enter()

        def committed(done: asyncio.Future[list[int]]) -> None:
            self._settled(grant.tenant, [(item, clocks)], done)
            try:
                if done.cancelled():
                    result.cancel()
                    return
                exc = done.exception()
                if exc is not None:
                    log.error("commit failed for %s: %s", replica, exc)
                    result.set_exception(exc)
                    return
                seqs = done.result()
                self.metrics.updates_applied.inc()
                self._fan_out_soon(write, seqs)
                result.set_result(seqs[0])
            finally:
                self._leave()

        stored.add_done_callback(committed)
        return result

    def _submit(
        self, tenant: str, replica: str, items: Sequence[PushItem]
    ) -> asyncio.Future[list[int]]:
        rows = [(i.collection, i.record_id, i.update) for i in items]
        return self.storage.submit(tenant, replica, rows)

    def _committed(
        self,
        conn: _Connection,
        write: _Accepted,
        done: asyncio.Future[list[int]],
        started: float,
    ) -> None:
        try:
            if done.cancelled() or done.exception() is not None:
                # The early copies are out, but no seq and so no cursor ever covers these
                # updates; the pusher gets no ack and re-sends them.
                exc = None if done.cancelled() else done.exception()
                log.error("commit failed for replica %r: %s", conn.replica, exc)
                if conn.protocol.state is State.OPEN:
                    conn.protocol.fail("internal", "the relay could not store the updates")
                    self._flush(conn)
                return
            seqs = done.result()
            items = write.items
            self.metrics.updates_applied.inc(len(items))
            if conn.protocol.state is State.OPEN:
                self._ack_soon(conn, [i.seq for i in items])
                self.metrics.observe_latency("push", loop_time() - started)
            self._fan_out_soon(write, seqs)
        finally:
            self._leave()

    def _ack_soon(self, conn: _Connection, seqs: list[int]) -> None:
        """Queue committed seqs for one ``ack`` per connection per loop iteration.

        The commit callbacks of one group commit run in the same iteration: a connection that
        pushed many frames gets one ``ack`` for all of them.
        """
        pending = self._acks_pending
        if not pending:
            self._enter()  # a graceful shutdown waits for these acks too
            asyncio.get_running_loop().call_soon(self._flush_acks)
        pending.setdefault(conn, []).extend(seqs)

    def _flush_acks(self) -> None:
        pending, self._acks_pending = self._acks_pending, {}
        try:
            for conn, seqs in pending.items():
                if conn.protocol.state is State.OPEN:
                    conn.protocol.ack(seqs)
                    self.metrics.acks.inc(len(seqs))
                    self._flush(conn)
        finally:
            self._leave()

    def _fan_out_early(self, write: _Accepted) -> None:
        """Queue accepted (not yet committed) updates for their early copies.

        Sent with cursor None: their seqs are not known yet. One flush per loop iteration,
        so each subscriber gets one frame for all pushes handled in that iteration.
        """
        if write.tenant not in self._subscriptions:
            return
        self._early_pending.append(write)
        if len(self._early_pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush_early)

    def _flush_early(self) -> None:
        pending, self._early_pending = self._early_pending, []
        outgoing: dict[_Connection, list[tuple[str, str, bytes]]] = {}
        for write in pending:
            by_collection = self._subscriptions.get(write.tenant)
            if not by_collection:
                continue
            for item in write.items:
                for peer in by_collection.get(item.collection, ()):
                    if peer is write.origin:
                        continue
                    outgoing.setdefault(peer, []).append(
                        (item.collection, item.record_id, item.update)
                    )
                    write.early.add((peer, item.collection))
        for peer, updates in outgoing.items():
            if peer.protocol.state is State.OPEN and not peer.too_slow:
                peer.protocol.send_updates(updates, None)
                self._flush(peer)

    def _fan_out_soon(self, write: _Accepted, seqs: list[int]) -> None:
        """Queue a commit's updates for the commit-time fan-out; one flush per loop iteration.

        The commit callbacks of one group commit run in the same loop iteration, so each
        subscriber gets one frame per group commit, not one per pusher.
        """
        tenant = write.tenant
        if tenant not in self._subscriptions and not self.yjs_rooms.has_tenant(tenant):
            return
        self._fan_out_pending.append((write, seqs))
        if len(self._fan_out_pending) == 1:
            asyncio.get_running_loop().call_soon(self._fan_out)

    def _fan_out(self) -> None:
        """Commit-time fan-out: late copies, live cursors, Yjs rooms.

        Every subscriber of a committed update's collection that did not get its early copy
        (it subscribed after the early fan-out) gets it now. Every subscriber that got any of
        these updates, early or now, then gets the newest committed seq among them as its
        cursor: on the frame of its late copies, else on a cursor-only ``updates`` frame.
        Commits complete in seq order and each one's updates reached every subscriber by now,
        so such a cursor only ever names changes the subscriber has received.
        """
        if self._early_pending:
            self._flush_early()  # early copies always precede the cursor that covers them
        pending, self._fan_out_pending = self._fan_out_pending, []
        late: dict[_Connection, list[tuple[str, str, bytes]]] = {}
        cursors: dict[_Connection, int] = {}
        to_rooms: dict[tuple[str, str, str], list[bytes]] = {}
        for write, seqs in pending:  # in commit (seq) order
            tenant = write.tenant
            if self.yjs_rooms.has_tenant(tenant):
                for item in write.items:
                    key = (tenant, item.collection, item.record_id)
                    to_rooms.setdefault(key, []).append(item.update)
            by_collection = self._subscriptions.get(tenant)
            if not by_collection:
                continue
            early = write.early
            for item, seq in zip(write.items, seqs, strict=True):
                for peer in by_collection.get(item.collection, ()):
                    if peer is write.origin:
                        continue
                    if (peer, item.collection) not in early:
                        late.setdefault(peer, []).append(
                            (item.collection, item.record_id, item.update)
                        )
                    cursors[peer] = seq
        for peer, cursor in cursors.items():
            if peer.protocol.state is State.OPEN and not peer.too_slow:
                updates = late.get(peer)
                if updates:
                    peer.protocol.send_updates(updates, cursor)
                else:
                    peer.protocol.send_cursor(cursor)
                self._flush(peer)
        for key, room_updates in to_rooms.items():
            # To every Yjs connection of the record, the sender included: the updates of one
            # group commit as one Update message (merged in bounded chunks).
            for start in range(0, len(room_updates), _MERGE_CHUNK):
                chunk = room_updates[start : start + _MERGE_CHUNK]
                merged = chunk[0] if len(chunk) == 1 else merge_updates(*chunk)
                self.yjs_rooms.deliver_update(key, merged)

    # -- download -------------------------------------------------------------------------

    async def _on_subscribe(
        self, conn: _Connection, collections: Sequence[str], cursor: int | None, started: float
    ) -> None:
        assert conn.grant is not None
        tenant = conn.grant.tenant
        by_collection = self._subscriptions.setdefault(tenant, {})
        for name in collections:
            by_collection.setdefault(name, set()).add(conn)
            conn.subscribed.add(name)
        # Registered first: anything committed after `head` reaches us by fan-out.
        head = await self.storage.head(tenant)
        if cursor is not None and cursor > head:
            cursor = None  # the relay's data is older than the client's cursor: list all
        changed = await self.storage.changed_since(tenant, collections, cursor, conn.replica)
        if conn.protocol.state is not State.OPEN:
            return
        if changed:
            conn.catchups.append(head)
            conn.protocol.send_changed(changed, head, done=True)
        else:
            conn.protocol.send_synced(head)
        self.metrics.observe_latency("sub", loop_time() - started)

    async def _on_state_vectors(
        self,
        conn: _Connection,
        items: Sequence[StateVectorItem],
        done: bool,
        started: float,
    ) -> None:
        assert conn.grant is not None
        tenant = conn.grant.tenant
        states = await self.storage.get_states(tenant, [(i.collection, i.record_id) for i in items])
        diffs: list[tuple[str, str, bytes]] = []
        for item in items:
            state = states.get((item.collection, item.record_id))
            if state is None:
                continue
            vector = item.state_vector or EMPTY_STATE_VECTOR
            try:
                diff = get_update(state, vector)
            except ValueError:
                diff = state  # an unreadable state vector gets the whole record
            diffs.append((item.collection, item.record_id, diff))
        if conn.protocol.state is not State.OPEN:
            return
        if diffs:
            conn.protocol.send_updates(diffs, None)
        if done:
            cursor = conn.catchups.popleft() if conn.catchups else await self.storage.head(tenant)
            if conn.protocol.state is State.OPEN:
                conn.protocol.send_synced(cursor)
        self.metrics.observe_latency("sv", loop_time() - started)

    def _unsubscribe(self, conn: _Connection) -> None:
        if conn.grant is None or not conn.subscribed:
            return
        by_collection = self._subscriptions.get(conn.grant.tenant, {})
        for name in conn.subscribed:
            peers = by_collection.get(name)
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del by_collection[name]
        if not by_collection:
            self._subscriptions.pop(conn.grant.tenant, None)
        conn.subscribed.clear()

    # -- in-flight accounting (graceful shutdown waits for zero) --------------------------

    def _enter(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()


def _read_clocks(update: bytes) -> UpdateClocks:
    """What a pushed update carries and needs.

    Raises:
        UpdateRejected: not a Yjs v1 update (pycrdt cannot decode it), or one whose structs
            the relay cannot read (content types beyond Yjs', such as Yrs' move extension).
    """
    try:
        get_state(update)
    except ValueError:
        raise UpdateRejected("not a Yjs v1 update") from None
    try:
        return read_update_clocks(update)
    except InvalidMessage as exc:
        raise UpdateRejected(f"a Yjs v1 update the relay cannot read: {exc}") from None


def _blocked(clocks: UpdateClocks, vector: dict[int, int]) -> UpdateRejected | None:
    """The refusal of an update that needs clocks the relay does not have (``vector``: what it
    has of the record, see :class:`~crdt_sync.server.record_clocks.RecordClocks`)."""
    gap = clocks.missing(vector)
    if gap is None:
        return None
    return UpdateBlocked(
        "an earlier update of this record was refused or has not reached the relay: this one "
        f"builds on it and waits for it (clocks {gap.have}..{gap.needed - 1} of Yjs client "
        f"{gap.client} are missing)"
    )


def loop_time() -> float:
    """The running loop's clock (the one the protocol cores are given as ``now``)."""
    return asyncio.get_running_loop().time()


async def serve_until_signalled(config: RelayConfig, storage: RelayStorage | None = None) -> None:
    """Run a relay until SIGTERM or SIGINT, then shut it down gracefully.

    Prints ``crdt-sync relay listening on ws://HOST:PORT`` to stdout (flushed) once listening.
    """
    relay = Relay(config, storage)
    await relay.start()
    # What startup made (modules, classes, the loop) lives as long as the process: keep it
    # out of the garbage collector's generations so collections stay short (measured: the
    # longest full collection during a benchmark 30 -> 15 ms, their total 150 -> 29 ms).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"crdt-sync relay listening on {relay.url}", flush=True)
    log.info("relay listening on %s (data in %s)", relay.url, config.data_dir)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await relay.shutdown()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("relay stopped")
        sys.stdout.flush()
