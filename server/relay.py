"""The relay: its parts put together, the HTTP routes, and the lifecycle.

Theory of operation
===================

One websockets server on one port. :class:`Relay` builds the parts and routes each request:

- ``GET /healthz``: 200 ``ok``; 503 while shutting down or when the storage is not healthy.
- ``GET /metrics``: Prometheus text format (:mod:`~crdt_sync.server.metrics`).
- ``/yjs/<collection>/<record id>?token=...``: y-websocket
  (:mod:`~crdt_sync.server.yjs_endpoint`, docs/yjs.md).
- ``/hocuspocus``: Hocuspocus (:mod:`~crdt_sync.server.hocuspocus_endpoint`).
- any other path: the native protocol (:mod:`~crdt_sync.server.native_endpoint`,
  docs/protocol.md).

The parts, each in its own module, none of which imports this one:

- :class:`~crdt_sync.server.gateway.Gateway`: what every endpoint does with a token and an
  update (verify, admit: decode, dependency check, validation hook; submit to the group
  commit; read committed states);
- :class:`~crdt_sync.server.fanout.Fanout`: subscriptions, cursors, deliveries to native
  subscribers and Yjs rooms (:class:`~crdt_sync.server.yjs_rooms.YjsRooms`);
- :class:`~crdt_sync.server.outbound.Outbound`: every connection's bounded send queue and the
  slow-peer cut-off;
- the :class:`~crdt_sync.server.storage.RelayStorage` (SQLite by default).

Every committed update, from any endpoint, reaches the native subscribers of its collection
and the Yjs connections that have the record open.

Shutdown (:meth:`Relay.shutdown`, on SIGTERM/SIGINT): stop accepting, stop handling native
frames and refuse Yjs updates, let every submitted write commit and its ack be queued, send
``error going_away`` (native) and close with 1001, then close the storage.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from crdt_sync.errors import InvalidState

from .config import RelayConfig
from .fanout import Fanout
from .gateway import Gateway, InFlight
from .hocuspocus_endpoint import HocuspocusConnection, is_hocuspocus_path
from .metrics import RelayMetrics
from .native_endpoint import NativeEndpoint
from .purge import TombstonePurger
from .storage import RelayStorage, SQLiteRelayStorage
from .yjs_endpoint import YjsConnection, is_yjs_path
from .yjs_link import PING_INTERVAL, Link, LinkServices
from .yjs_rooms import AWARENESS_CHECK_INTERVAL, YjsRooms

__all__ = ["Relay", "RelayConfig", "serve_until_signalled"]

log = logging.getLogger(__name__)


class Relay:
    """A running relay (see the module docstring).

    Args:
        config: what to serve and how.
        storage: the storage to use; defaults to :class:`~crdt_sync.server.storage.
            SQLiteRelayStorage` in ``config.data_dir``. The relay opens and closes it.
    """

    def __init__(self, config: RelayConfig, storage: RelayStorage | None = None) -> None:
        if config.verifier is None:
            raise ValueError("RelayConfig.verifier is required (e.g. tokens.secret_verifier)")
        self.config = config
        self.storage: RelayStorage = storage or SQLiteRelayStorage(
            config.data_dir,
            durable=config.durable,
            state_cache_bytes=config.state_cache_bytes,
            forget_origins_after=config.forget_origins_after,
        )
        self.metrics = RelayMetrics()
        self.metrics.watch_storage(self.storage.numbers)
        #: Records open on Yjs connections (y-websocket, Hocuspocus) and their awareness.
        self.yjs_rooms = YjsRooms()
        self.fanout = Fanout(self.yjs_rooms, config.clock)
        # Frames being handled, writes waiting for their commit, acks not yet queued.
        self._inflight = InFlight()
        self.gateway = Gateway(
            self.storage,
            self.fanout,
            self.metrics,
            self._inflight,
            verifier=config.verifier,
            validator=config.validator,
            clock=config.clock,
        )
        self.native = NativeEndpoint(
            config, self.storage, self.gateway, self.fanout, self.metrics, self._inflight
        )
        #: Purges deleted records once their tombstone is ``tombstone_ttl`` old.
        self.purger = TombstonePurger(self.storage, self.gateway, self.fanout, config.tombstone_ttl)
        self._link_services = LinkServices(self.gateway, self.yjs_rooms, self.metrics, config)
        self._yjs_links: set[Link] = set()
        self._server: Server | None = None
        self._awareness_timer: asyncio.TimerHandle | None = None
        self._stopping = False

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
        self.purger.start()

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
        self.native.stop()
        self.gateway.close()
        await self.purger.stop()
        if self._awareness_timer is not None:
            self._awareness_timer.cancel()
        server = self._server
        if server is not None:
            server.server.close()  # stop accepting new TCP connections
        try:
            await asyncio.wait_for(self._inflight.idle(), self.config.shutdown_timeout)
        except TimeoutError:
            log.warning(
                "shutdown: %d operations still in flight after timeout", len(self._inflight)
            )
        self.native.going_away()
        for link in list(self._yjs_links):
            link.close(CloseCode.GOING_AWAY, "the relay is shutting down")
        if server is not None:
            server.close(close_connections=False)
            try:
                await asyncio.wait_for(server.wait_closed(), self.config.shutdown_timeout)
            except TimeoutError:
                server.close(close_connections=True)
                await server.wait_closed()
        await self.storage.close()

    # -- routing --------------------------------------------------------------------------

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

    async def _handle_connection(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request is not None else "/"
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        try:
            if is_yjs_path(path):
                await self._serve_link(YjsConnection(ws, self._link_services))
            elif is_hocuspocus_path(path):
                await self._serve_link(HocuspocusConnection(ws, self._link_services))
            else:
                await self.native.serve(ws)
        finally:
            self.metrics.connections.dec()

    async def _serve_link(self, link: Link) -> None:
        self._yjs_links.add(link)
        try:
            await link.run()
        finally:
            self._yjs_links.discard(link)


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
