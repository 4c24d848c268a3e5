"""A connection's output, for every endpoint: ONE bounded send queue and the slow-peer policy.

Acks, answers and fan-out never await a peer: they queue frames on the connection's
:class:`Outbound` and return; its own sender task writes them to the websocket in order. A
peer that reads too slowly makes its queue grow; past ``send_queue_frames`` frames or
``send_queue_bytes`` bytes (:class:`~crdt_sync.server.config.RelayConfig`) it is cut off:

- what is queued is dropped, the websocket is closed with 1013 (try again later: a replica
  catches up on reconnect, a Yjs client resyncs) and ``crdt_sync_errors_total{code="too_slow"}``
  counts it;
- if the closing handshake has not gone through after :data:`SLOW_ABORT_AFTER` seconds (the
  sender is stuck in a write the peer never reads), the TCP connection is aborted.

The other connections never notice: nothing waits for the slow one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.frames import CloseCode
from websockets.protocol import State as WebSocketState

from .config import RelayConfig
from .metrics import RelayMetrics

log = logging.getLogger(__name__)

#: Seconds a cut-off slow peer gets for the closing handshake before its TCP link is dropped.
SLOW_ABORT_AFTER = 1.0


class Outbound:
    """The send queue of one websocket (see the module docstring).

    Call :meth:`start` once the connection is accepted and :meth:`finish` when its reading
    ends. In between, :meth:`send` and :meth:`close` queue and never wait.

    Args:
        ws: the websocket.
        config: the queue bounds (``send_queue_frames``, ``send_queue_bytes``).
        metrics: counts frames sent and ``too_slow`` cut-offs.
        peer: who this is, for the log line of a cut-off (updated by the owner, e.g. once a
            replica said its id).
        too_slow_reason: the close reason sent with 1013.
        on_too_slow: called once after a cut-off (e.g. to drop the peer's subscriptions).
    """

    __slots__ = (
        "_close",
        "_config",
        "_metrics",
        "_on_too_slow",
        "_queue",
        "_queued_bytes",
        "_sender",
        "_too_slow_reason",
        "_wakeup",
        "peer",
        "too_slow",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        config: RelayConfig,
        metrics: RelayMetrics,
        *,
        peer: str,
        too_slow_reason: str = "",
        on_too_slow: Callable[[], None] | None = None,
    ) -> None:
        self.ws = ws
        self.peer = peer
        #: Whether the peer was cut off for reading too slowly.
        self.too_slow = False
        self._config = config
        self._metrics = metrics
        self._too_slow_reason = too_slow_reason
        self._on_too_slow = on_too_slow
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._sender: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        """Whether a close is decided: later frames are dropped, queued ones still go out."""
        return self._close is not None

    def send(self, frame: bytes, kind: str) -> None:
        """Queue ``frame`` (counted as a frame of message type ``kind``); never waits.

        Dropped once the connection is closing. A frame that overflows the queue cuts the
        peer off (see the module docstring).
        """
        if self._close is not None:
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self._metrics.frame_out(kind, len(frame))
        config = self._config
        if (
            len(self._queue) > config.send_queue_frames
            or self._queued_bytes > config.send_queue_bytes
        ):
            self._cut_off()
            return
        self._wakeup.set()

    def close(self, code: int, reason: str = "") -> None:
        """Close the websocket with ``code`` after the frames already queued (idempotent)."""
        if self._close is None:
            self._close = (code, reason)
            self._wakeup.set()

    def _cut_off(self) -> None:
        log.warning("disconnecting %s: its send queue is full", self.peer)
        self.too_slow = True
        self._queue.clear()
        self._queued_bytes = 0
        self._metrics.errors.labels("too_slow").inc()
        self.close(CloseCode.TRY_AGAIN_LATER, self._too_slow_reason)
        asyncio.get_running_loop().call_later(SLOW_ABORT_AFTER, self._abort)
        if self._on_too_slow is not None:
            self._on_too_slow()

    def _abort(self) -> None:
        """Drop the TCP connection at once (no closing handshake)."""
        if self.ws.state is not WebSocketState.CLOSED:
            self.ws.transport.abort()

    def start(self) -> None:
        """Start the sender task."""
        self._sender = asyncio.create_task(self._send_queued())

    async def _send_queued(self) -> None:
        ws = self.ws
        queue = self._queue
        try:
            while True:
                while not queue and self._close is None:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if queue:
                    frame = queue.popleft()
                    self._queued_bytes -= len(frame)
                    await ws.send(frame)
                    continue
                assert self._close is not None
                await ws.close(*self._close)
                return
        except WebSocketClosed:
            return

    async def finish(self, *, drain: bool) -> None:
        """The connection's reading ended: stop the sender task.

        Args:
            drain: first let it deliver what is queued and close (acks, error frames, the
                closing handshake), for up to ``shutdown_timeout`` seconds.
        """
        sender = self._sender
        if sender is None:
            return
        if drain:
            with contextlib.suppress(TimeoutError, WebSocketClosed):
                await asyncio.wait_for(asyncio.shield(sender), self._config.shutdown_timeout)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketClosed):
            await sender
