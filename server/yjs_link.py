"""What the two Yjs endpoints share: :class:`Link`, one Yjs websocket, and the record answers.

A link gets what it uses of the relay as :class:`LinkServices` (built once per relay).

A link is the asyncio driver of one y-websocket or Hocuspocus connection: it reads messages,
applies the rate limit (``--rate-limit``: close 1008 with a reason, since these protocols have
no error message), hands binary messages to :meth:`Link.handle` and sends through its
:class:`~crdt_sync.server.outbound.Outbound` (a reader too slow is cut off with 1013, "too
slow"). Subclasses are the endpoints (:mod:`~crdt_sync.server.yjs_endpoint`,
:mod:`~crdt_sync.server.hocuspocus_endpoint`); they reach the relay only through the
:class:`~crdt_sync.server.gateway.Gateway` and the :class:`~crdt_sync.server.yjs_rooms.YjsRooms`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass

from pycrdt import get_state
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.frames import CloseCode

from crdt_sync.rate_limit import TokenBucket
from crdt_sync.yjs.updates import EMPTY_STATE_VECTOR, EMPTY_UPDATE
from crdt_sync.yjs.y_websocket import close_reason

from .config import RelayConfig
from .gateway import Gateway, missing_from
from .metrics import RelayMetrics
from .outbound import Outbound
from .yjs_rooms import YjsRooms

log = logging.getLogger(__name__)

#: Websocket-level ping interval of the Yjs endpoints (the reference servers use 30 s).
PING_INTERVAL = 30.0
#: An awareness update with no state in it (the answer to a query when nobody is present).
EMPTY_AWARENESS = b"\x00"

_replica_ids = itertools.count(1)


def new_replica_id(kind: str) -> str:
    """A replica id for a Yjs connection: its commits count as "another replica's" for every
    native replica (``changed`` catch-up)."""
    return f"{kind}-{next(_replica_ids)}"


def answer_state_vector(state: bytes | None, state_vector: bytes) -> tuple[bytes, bytes]:
    """``(missing, server_state_vector)`` for a SyncStep1 carrying ``state_vector``."""
    if state is None:
        return EMPTY_UPDATE, EMPTY_STATE_VECTOR
    return missing_from(state, state_vector), get_state(state)


@dataclass(frozen=True, slots=True)
class LinkServices:
    """What a Yjs link uses of its relay.

    Attributes:
        gateway: token checks, record states, update submission.
        rooms: the records open on Yjs connections.
        metrics: the relay's metrics.
        config: the relay's configuration (rate limit, send queue bounds, shutdown timeout).
    """

    gateway: Gateway
    rooms: YjsRooms
    metrics: RelayMetrics
    config: RelayConfig


class Link:
    """A Yjs websocket: its send queue, rate limit and read loop, and the close decision.

    Subclasses implement :meth:`handle` (one received message), and may implement
    :meth:`start` and :meth:`cleanup`.
    """

    kind = "yjs"
    """The endpoint, as metric label and in logs."""

    def __init__(self, ws: ServerConnection, services: LinkServices) -> None:
        self.ws = ws
        self.gateway = services.gateway
        self.rooms = services.rooms
        self.metrics = metrics = services.metrics
        config = services.config
        self.outbound = Outbound(
            ws, config, metrics, peer=f"a {self.kind} client", too_slow_reason="too slow"
        )
        rate = config.rate_limit
        self._bucket = TokenBucket(rate) if rate else None

    @property
    def closing(self) -> bool:
        """Whether the link decided to close (received messages are then ignored)."""
        return self.outbound.closing

    def send(self, frame: bytes) -> None:
        """Queue ``frame``; never waits (see :class:`~crdt_sync.server.outbound.Outbound`)."""
        self.outbound.send(frame, self.kind)

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (idempotent)."""
        self.outbound.close(code, close_reason(reason))

    async def run(self) -> None:
        """Serve the websocket until it closes."""
        self.outbound.start()
        loop = asyncio.get_running_loop()
        try:
            await self.start()
            async for message in self.ws:
                if self.closing:
                    continue  # drained, not handled
                if isinstance(message, str):
                    self.close(CloseCode.UNSUPPORTED_DATA, "binary messages only")
                    continue
                self.metrics.frame_in(self.kind, len(message))
                if self._bucket is not None and not self._bucket.admit(loop.time()):
                    self._rate_limited()
                    continue
                try:
                    await self.handle(message)
                except Exception:
                    log.exception("internal error handling a %s message", self.kind)
                    self.close(CloseCode.INTERNAL_ERROR, "internal relay error")
        except WebSocketClosed:
            pass
        finally:
            self.cleanup()
            await self.outbound.finish(drain=self.closing)

    def credit_messages(self, count: int) -> None:
        """Let ``count`` more messages through the rate limit (a document's handshake)."""
        if self._bucket is not None:
            self._bucket.credit(count)

    def _rate_limited(self) -> None:
        """Over the relay's messages-per-second limit: close 1008 (its reason says why; the
        client's reconnect backoff then slows it down). Other connections are unaffected."""
        assert self._bucket is not None
        log.warning("disconnecting a %s client: over the rate limit", self.kind)
        self.metrics.errors.labels("rate_limited").inc()
        self.close(
            CloseCode.POLICY_VIOLATION,
            f"rate limited: more than {self._bucket.rate:g} messages per second",
        )

    async def start(self) -> None:
        """Called once before the first message is read."""

    async def handle(self, message: bytes) -> None:
        """Handle one binary message."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Called once when the websocket is done (leave rooms)."""
