"""One websocket to the relay, pumping a sans-I/O :class:`~crdt_sync.protocol.ClientProtocol`.

The asyncio driver of the protocol core, the way websockets' asyncio connection drives its
sans-I/O ``Protocol``: a reader task feeds every received message to
``protocol.receive_data(message, now)``, sends what ``data_to_send()`` returns, and queues the
events; the owner (:mod:`crdt_sync.client.sync_run`) takes them one at a time with
:meth:`Connection.next` and issues commands followed by :meth:`Connection.flush`.

Heartbeat: a task pings every ``heartbeat_interval`` seconds and declares the link dead once
nothing at all was received for ``dead_after`` seconds (the relay answers pings, so a live
link is never silent that long). A dead link is aborted at the TCP level (a stalled link
could block a graceful close forever), so a dead link is noticed within ``dead_after`` plus one
heartbeat tick. The same clock bounds the handshake: no ``welcome`` within ``dead_after``
is a dead link too.

:meth:`Connection.next` returns :data:`CLOSED` once the connection ended (for any reason);
:attr:`Connection.close_code` then says why (the fatal error code sent or received,
``connection_lost``, or ``heartbeat_timeout``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed

from crdt_sync.errors import InvalidState
from crdt_sync.protocol import ClientEvent, ClientProtocol, State

__all__ = [
    "CLOSED",
    "HEARTBEAT_TIMEOUT",
    "WAKE",
    "Connection",
    "Inbox",
    "Signal",
    "heartbeat_bound",
]

log = logging.getLogger("crdt_sync.client")

#: Close code recorded when the heartbeat declared the link dead.
HEARTBEAT_TIMEOUT: Final = "heartbeat_timeout"


class Signal(enum.Enum):
    """Non-protocol items :meth:`Connection.next` may return."""

    CLOSED = "closed"
    """The connection ended; nothing more will come."""
    WAKE = "wake"
    """Someone called :meth:`Connection.wake` (e.g. a local edit is waiting to be pushed)."""


CLOSED: Final = Signal.CLOSED
WAKE: Final = Signal.WAKE


class Inbox:
    """What :meth:`Connection.next` returns, in order: events received and coalesced
    :data:`WAKE` signals, then :data:`CLOSED`, forever."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[ClientEvent | Signal] = asyncio.Queue()
        self._ended = False
        self._wake_pending = False

    def put(self, item: ClientEvent | Signal) -> None:
        """Queue an event, or :data:`CLOSED` once the connection ended."""
        self._queue.put_nowait(item)

    async def next(self) -> ClientEvent | Signal:
        """The next event, a :data:`WAKE`, or :data:`CLOSED` (then forever)."""
        if self._ended:
            return CLOSED
        item = await self._queue.get()
        if item is CLOSED:
            self._ended = True
        elif item is WAKE:
            self._wake_pending = False
        return item

    def wake(self) -> None:
        """Make :meth:`next` return :data:`WAKE` (coalesced with a pending one)."""
        if not self._ended and not self._wake_pending:
            self._wake_pending = True
            self._queue.put_nowait(WAKE)

    @property
    def idle(self) -> bool:
        """Whether nothing is waiting to be returned by :meth:`next`."""
        return self._queue.empty()


class Connection:
    """A websocket joined to a :class:`ClientProtocol`. Create with :meth:`open`.

    Args:
        ws: the open websocket.
        protocol: the protocol core (``hello`` already queued).
        heartbeat_interval: seconds between pings.
        dead_after: seconds without receiving anything after which the link is dead.
    """

    def __init__(
        self,
        ws: ClientConnection,
        protocol: ClientProtocol,
        *,
        heartbeat_interval: float,
        dead_after: float,
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self._inbox = Inbox()
        self._send_lock = asyncio.Lock()
        self._dead = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Bytes of websocket messages received and sent (payloads only).
        self.bytes_received = 0
        self.bytes_sent = 0

    @classmethod
    async def open(
        cls,
        url: str,
        replica_id: str,
        token: str,
        *,
        heartbeat_interval: float,
        dead_after: float,
        open_timeout: float,
    ) -> Connection:
        """Open the websocket, send ``hello`` and start the reader and heartbeat tasks.

        Raises:
            OSError, TimeoutError, websockets.exceptions.InvalidHandshake,
            websockets.exceptions.InvalidURI: the websocket could not be opened.
        """
        ws = await connect(
            url,
            max_size=None,
            compression=None,
            ping_interval=None,
            open_timeout=open_timeout,
            close_timeout=min(2.0, dead_after),
            proxy=None,
        )
        loop = asyncio.get_running_loop()
        protocol = ClientProtocol(replica_id, token, now=loop.time())
        connection = cls(ws, protocol, heartbeat_interval=heartbeat_interval, dead_after=dead_after)
        connection._spawn(connection._read())
        connection._heartbeat_task = connection._spawn(connection._heartbeat())
        await connection.flush()
        return connection

    # -- for the owner --------------------------------------------------------------------

    async def next(self) -> ClientEvent | Signal:
        """The next event received, a :data:`WAKE`, or :data:`CLOSED` (then forever)."""
        return await self._inbox.next()

    def wake(self) -> None:
        """Make :meth:`next` return :data:`WAKE` (coalesced with a pending one)."""
        self._inbox.wake()

    @property
    def close_code(self) -> str:
        """Why the connection ended (only meaningful after :data:`CLOSED`)."""
        if self._dead:
            return HEARTBEAT_TIMEOUT
        try:
            return self.protocol.close_exc.code
        except InvalidState:
            return "connection_lost"

    async def flush(self) -> None:
        """Send what the protocol core queued, in order; ``b""`` closes the websocket.

        A closed websocket is not an error here: the reader reports the end.
        """
        async with self._send_lock:
            for data in self.protocol.data_to_send():
                if not data:
                    self._spawn(self._close_ws())
                    return
                try:
                    await self.ws.send(data)
                except WebSocketClosed:
                    return
                self.bytes_sent += len(data)

    def flush_soon(self) -> None:
        """Send what the protocol queued from a background task (never blocks the caller)."""
        self._spawn(self.flush())

    async def close(self, code: str = "going_away", reason: str = "") -> None:
        """Close gracefully (fatal ``error`` frame, then the close handshake).

        Returns once the reader saw the end; a link that does not close within
        ``dead_after`` seconds is aborted.
        """
        if self.protocol.state < State.CLOSING:
            self.protocol.close(code, reason)
        self.flush_soon()
        try:
            async with asyncio.timeout(self.dead_after):
                await self.ws.wait_closed()
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once (no close handshake)."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    async def wait_ended(self) -> None:
        """Wait until the background tasks finished (after the connection ended)."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- background tasks ----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _close_ws(self) -> None:
        try:
            async with asyncio.timeout(self.dead_after):
                await self.ws.close()
        except TimeoutError:
            self.abort()
        except Exception:  # pragma: no cover - defensive: closing must not raise
            log.debug("error while closing the websocket", exc_info=True)
            self.abort()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.ws:
                data = message if isinstance(message, str) else bytes(message)
                self.bytes_received += len(data)
                self.protocol.receive_data(data, loop.time())
                for event in self.protocol.events_received():
                    self._inbox.put(event)
                await self.flush()
        except WebSocketClosed:
            pass
        except Exception:
            log.exception("sync connection reader failed")
            self.abort()
        finally:
            self.protocol.receive_eof()
            self._inbox.put(CLOSED)
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(self.heartbeat_interval, self.dead_after / 4)
        next_ping = loop.time() + self.heartbeat_interval
        while self.protocol.state < State.CLOSED:
            await asyncio.sleep(tick)  # a periodic timer, not a wait for a condition
            now = loop.time()
            if self.protocol.state >= State.CLOSED:
                return
            if self.protocol.idle_for(now) > self.dead_after:
                log.info("sync link silent for %.1f s: declaring it dead", self.dead_after)
                self._dead = True
                self.abort()
                return
            if now >= next_ping and self.protocol.state is State.OPEN:
                self.protocol.ping(now)
                self.flush_soon()
                next_ping = now + self.heartbeat_interval


def heartbeat_bound(heartbeat_interval: float, dead_after: float) -> float:
    """The longest a dead link goes unnoticed: ``dead_after`` plus one heartbeat tick."""
    return dead_after + min(heartbeat_interval, dead_after / 4)
