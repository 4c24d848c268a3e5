"""The native endpoint: one sans-I/O :class:`~crdt_sync.protocol.ServerProtocol` per websocket.

Theory of operation
===================

Everything the protocol decides (handshake order, limits, grant checks on ``push``/``sub``/
``sv``, batching) happens in the protocol core. This module is its driver: it feeds each
websocket message to ``receive_data(message, now)``, queues what ``data_to_send()`` returns on
the connection's :class:`~crdt_sync.server.outbound.Outbound`, and acts on the events:

- ``HelloReceived``: :meth:`Gateway.verify_token <crdt_sync.server.gateway.Gateway.
  verify_token>`; ``accept(tenant, collections)`` or ``refuse(bad_token|token_expired)``. A
  connection is failed with ``token_expired`` when its token expires.
- ``PushReceived`` (entries outside the grant were already rejected ``forbidden`` by the core):
  the gateway admits the entries (``invalid_update``, ``blocked``, ``rejected`` are answered
  with one ``reject``) and submits the rest to the group commit; they are acked from the
  commit's callback, i.e. only once durable, one ``ack`` per connection per loop iteration.
  The fan-out to the other subscribers is :mod:`~crdt_sync.server.fanout`'s.
- ``Subscribed``: subscribe first (live fan-out starts), then read the tenant's committed head
  and list the records changed by other replicas since the cursor (``changed``, cursor = that
  head), or ``synced`` at once if there are none. A cursor ahead of the relay's head (a relay
  whose data was reset) is treated as ``None``.
  With subscriptions or a record-level grant, :mod:`~crdt_sync.server.catch_up` decides what
  is listed, and what is dropped (``drop``, sent first); ``synced`` carries the evaluation
  time ``at``, and the selections filter the live fan-out.
- ``StateVectorsReceived``: answer ``updates`` with the diffs of the committed states (none for
  a record outside the grant's record-level access); after the ``done`` one, ``synced`` with
  the catch-up's cursor.

While the relay shuts down (:meth:`NativeEndpoint.stop`), frames are read and dropped (never
acked: the client re-sends them), then :meth:`NativeEndpoint.going_away` fails every
connection with ``going_away``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.frames import CloseCode

from crdt_sync.codec import message_type
from crdt_sync.errors import AuthError, InvalidQuery, InvalidState
from crdt_sync.messages import PushItem, RecordKey, RemovedItem, StateVectorItem
from crdt_sync.protocol import (
    HelloReceived,
    PushReceived,
    ServerEvent,
    ServerProtocol,
    State,
    StateVectorsReceived,
    Subscribed,
)
from crdt_sync.query import to_wire
from crdt_sync.subscriptions import Selection, Subscription

from .catch_up import catch_up
from .config import RelayConfig
from .fanout import Delivery, Fanout
from .gateway import Gateway, InFlight, missing_from
from .metrics import RelayMetrics
from .outbound import Outbound
from .record_access import readable, resolved_scope, selection_for
from .storage import RelayStorage
from .tokens import Grant

log = logging.getLogger(__name__)

# Close codes of the core's fatal errors; any other code closes with 1008.
_CLOSE_CODES = {
    "going_away": CloseCode.GOING_AWAY,
    "too_big": CloseCode.MESSAGE_TOO_BIG,
    "internal": CloseCode.INTERNAL_ERROR,
}


class NativeConnection:
    """One replica's connection: its protocol core, grant, subscriptions and send queue.

    It is a :class:`~crdt_sync.server.fanout.Subscriber` of the collections it subscribed to.
    """

    __slots__ = (
        "catchups",
        "expiry",
        "fanout",
        "grant",
        "metrics",
        "outbound",
        "protocol",
        "replica",
        "subscribed",
    )

    def __init__(
        self,
        ws: ServerConnection,
        protocol: ServerProtocol,
        config: RelayConfig,
        metrics: RelayMetrics,
        fanout: Fanout,
    ) -> None:
        self.protocol = protocol
        self.metrics = metrics
        self.fanout = fanout
        self.outbound = Outbound(
            ws, config, metrics, peer="replica ''", on_too_slow=self.unsubscribe
        )
        self.grant: Grant | None = None
        self.replica = ""
        #: collections subscribed to (fan-out)
        self.subscribed: set[str] = set()
        #: cursors (and evaluation times) of the catch-ups answered with ``changed`` and not
        #: yet ``synced``
        self.catchups: deque[tuple[int, int | None]] = deque()
        self.expiry: asyncio.TimerHandle | None = None

    @property
    def too_slow(self) -> bool:
        """Whether the replica was cut off for reading too slowly."""
        return self.outbound.too_slow

    def flush(self) -> None:
        """Move the core's output to the send queue; never waits."""
        for data in self.protocol.data_to_send():
            if self.outbound.too_slow:
                continue
            if data:
                self.outbound.send(data, _frame_label(data))
                continue
            code = self.protocol.close_exc.code
            self.metrics.errors.labels(code).inc()
            self.outbound.close(_CLOSE_CODES.get(code, CloseCode.POLICY_VIOLATION))

    def subscribe(
        self, collections: Sequence[str], selections: dict[str, Selection] | None = None
    ) -> None:
        """Receive the fan-out of ``collections`` from now on (of the records in
        ``selections`` for the collections it names)."""
        assert self.grant is not None
        self.fanout.subscribe(self.grant.tenant, collections, self, selections)
        self.subscribed.update(collections)

    def dropped(self, keys: list[tuple[str, str]]) -> None:
        """See :meth:`crdt_sync.server.fanout.FilteredSubscriber.dropped`."""
        if self.protocol.state is not State.OPEN or self.outbound.too_slow:
            return
        self.protocol.send_dropped(keys)
        self.flush()

    def unsubscribe(self) -> None:
        """Receive no fan-out anymore (closing, token expired, too slow)."""
        if self.grant is not None and self.subscribed:
            self.fanout.unsubscribe(self.grant.tenant, self.subscribed, self)
            self.subscribed.clear()

    def deliver_removed(self, items: list[RemovedItem]) -> None:
        """See :meth:`crdt_sync.server.fanout.Subscriber.deliver_removed`."""
        if self.protocol.state is not State.OPEN or self.outbound.too_slow:
            return
        self.protocol.send_removed(items)
        self.flush()

    def deliver(self, updates: list[Delivery], cursor: int | None) -> None:
        """See :meth:`crdt_sync.server.fanout.Subscriber.deliver`."""
        if self.protocol.state is not State.OPEN or self.outbound.too_slow:
            return
        if updates:
            self.protocol.send_updates(updates, cursor)
        else:
            assert cursor is not None
            self.protocol.send_cursor(cursor)
        self.flush()


class NativeEndpoint:
    """The native connections of one relay (see the module docstring).

    Args:
        config: limits, early fan-out, shutdown timeout.
        storage: read for catch-ups (heads, changed records, states).
        gateway: tokens, admission and submission of pushed entries.
        fanout: where connections subscribe.
        metrics: the relay's metrics.
        inflight: frames being handled and acks not yet queued, which shutdown waits for.
    """

    def __init__(
        self,
        config: RelayConfig,
        storage: RelayStorage,
        gateway: Gateway,
        fanout: Fanout,
        metrics: RelayMetrics,
        inflight: InFlight,
    ) -> None:
        self.config = config
        self.storage = storage
        self.gateway = gateway
        self.fanout = fanout
        self.metrics = metrics
        #: The open connections.
        self.connections: set[NativeConnection] = set()
        self._inflight = inflight
        self._acks_pending: dict[NativeConnection, list[int]] = {}  # committed, not yet acked
        self._stopping = False

    def stop(self) -> None:
        """The relay is shutting down: frames are read and dropped from now on."""
        self._stopping = True

    def going_away(self) -> None:
        """Fail every connection not closing yet with ``going_away`` (after :meth:`stop`)."""
        for conn in list(self.connections):
            if conn.protocol.state is State.OPEN or conn.protocol.state is State.CONNECTING:
                conn.protocol.fail("going_away", "the relay is shutting down")
                conn.flush()

    # -- one connection -------------------------------------------------------------------

    async def serve(self, ws: ServerConnection) -> None:
        """Serve one websocket until it closes."""
        loop = asyncio.get_running_loop()
        config = self.config
        protocol = ServerProtocol(
            max_frame=config.max_frame,
            max_items=config.max_items,
            rate=config.rate_limit or None,
            now=loop.time(),
        )
        conn = NativeConnection(ws, protocol, config, self.metrics, self.fanout)
        self.connections.add(conn)
        conn.outbound.start()
        try:
            async for message in ws:
                if self._stopping or conn.too_slow or protocol.state >= State.CLOSING:
                    # Drained, not handled (so never acked: the client re-sends it). Reading
                    # on lets the closing handshake through behind a flooding client.
                    continue
                await self._receive(conn, message)
        except WebSocketClosed:
            pass
        finally:
            if conn.expiry is not None:
                conn.expiry.cancel()
            conn.unsubscribe()
            # Let the sender deliver what is queued (acks, error frames), then close.
            await conn.outbound.finish(drain=self._stopping or protocol.state >= State.CLOSING)
            protocol.receive_eof()
            self.connections.discard(conn)

    async def _receive(self, conn: NativeConnection, message: bytes | str) -> None:
        started = asyncio.get_running_loop().time()
        self.metrics.frame_in(_frame_label(message), len(message))
        self._inflight.enter()
        try:
            conn.protocol.receive_data(message, now=started)
            conn.flush()
            for event in conn.protocol.events_received():
                await self._dispatch(conn, event, started)
                conn.flush()
        except Exception:
            log.exception("internal error handling a frame from replica %r", conn.replica)
            if conn.protocol.state < State.CLOSING:
                conn.protocol.fail("internal", "internal relay error")
            conn.flush()
        finally:
            self._inflight.leave()

    async def _dispatch(self, conn: NativeConnection, event: ServerEvent, started: float) -> None:
        if conn.protocol.state is not State.OPEN and not isinstance(event, HelloReceived):
            return
        match event:
            case HelloReceived():
                await self._on_hello(conn, event, started)
            case PushReceived(items):
                await self._on_push(conn, items, started)
            case Subscribed(collections, cursor, subscriptions, since):
                await self._on_subscribe(conn, collections, cursor, subscriptions, since, started)
            case StateVectorsReceived(items, done):
                await self._on_state_vectors(conn, items, done, started)
            case _:
                pass  # pongs and non-fatal errors from the client need no action

    def _latency(self, kind: str, started: float) -> None:
        self.metrics.observe_latency(kind, asyncio.get_running_loop().time() - started)

    # -- handshake ------------------------------------------------------------------------

    async def _on_hello(self, conn: NativeConnection, event: HelloReceived, started: float) -> None:
        try:
            grant = await self.gateway.verify_token(event.token)
        except AuthError as exc:
            conn.protocol.refuse(exc.code, exc.reason)
            return
        if conn.protocol.state is not State.CONNECTING:
            return
        conn.grant = grant
        conn.replica = event.replica
        conn.outbound.peer = f"replica {event.replica!r}"
        scopes = [(c, to_wire(f)) for c, f in sorted(grant.scopes.items())]
        conn.protocol.accept(
            grant.tenant,
            sorted(grant.collections),
            scopes,
            cache_max_age=self.config.cache_max_age_for(grant.tenant),
        )
        remaining = grant.expires_at - time.time()
        if remaining < 1e9:
            loop = asyncio.get_running_loop()
            conn.expiry = loop.call_later(max(0.0, remaining), self._expire, conn)
        self._latency("hello", started)

    def _expire(self, conn: NativeConnection) -> None:
        if conn.protocol.state is State.OPEN:
            conn.protocol.fail("token_expired", "the token expired; reconnect with a fresh one")
            conn.unsubscribe()
            conn.flush()

    # -- upload ---------------------------------------------------------------------------

    async def _on_push(
        self, conn: NativeConnection, items: Sequence[PushItem], started: float
    ) -> None:
        assert conn.grant is not None
        admission = await self.gateway.admit(conn.grant, items)
        if admission.removed and conn.protocol.state is State.OPEN:
            # Before the ``deleted`` rejects: the replica settles its edits of these records.
            conn.protocol.send_removed(admission.removed)
        if admission.refused and conn.protocol.state is State.OPEN:
            conn.protocol.reject(admission.refused)
        if not admission.accepted:
            return
        seqs = [item.seq for item, _ in admission.accepted]

        def committed(done: asyncio.Future[list[int]]) -> None:
            if conn.protocol.state is not State.OPEN:
                return
            if done.cancelled() or done.exception() is not None:
                conn.protocol.fail("internal", "the relay could not store the updates")
                conn.flush()
                return
            self._ack_soon(conn, seqs)
            self._latency("push", started)

        try:
            self.gateway.submit(
                admission,
                conn.replica,
                conn,
                early=self.config.early_fanout,
                on_commit=committed,
            )
        except InvalidState:  # shutting down: not stored, not acked; the client re-sends
            return

    def _ack_soon(self, conn: NativeConnection, seqs: list[int]) -> None:
        """Queue committed seqs for one ``ack`` per connection per loop iteration.

        The commit callbacks of one group commit run in the same iteration: a connection that
        pushed many frames gets one ``ack`` for all of them.
        """
        pending = self._acks_pending
        if not pending:
            self._inflight.enter()  # a graceful shutdown waits for these acks too
            asyncio.get_running_loop().call_soon(self._flush_acks)
        pending.setdefault(conn, []).extend(seqs)

    def _flush_acks(self) -> None:
        pending, self._acks_pending = self._acks_pending, {}
        try:
            for conn, seqs in pending.items():
                if conn.protocol.state is State.OPEN:
                    conn.protocol.ack(seqs)
                    self.metrics.acks.inc(len(seqs))
                    conn.flush()
        finally:
            self._inflight.leave()

    # -- download -------------------------------------------------------------------------

    async def _on_subscribe(
        self,
        conn: NativeConnection,
        collections: Sequence[str],
        cursor: int | None,
        subscriptions: tuple[Subscription, ...] | None,
        since: int | None,
        started: float,
    ) -> None:
        grant = conn.grant
        assert grant is not None
        tenant = grant.tenant
        now = self.config.clock()
        try:
            # What the selections hold now also filters the live fan-out from now on.
            live = {
                c: s.resolve(now, grant.claims)
                for c in collections
                if (s := selection_for(grant, c, subscriptions)).filtered
            }
        except InvalidQuery as exc:  # a grant filter needs a claim the token lacks
            conn.protocol.fail("forbidden", str(exc))
            return
        conn.subscribe(collections, live)
        # Subscribed first: anything committed after `head` reaches us by fan-out.
        head = await self.storage.head(tenant)
        if cursor is not None and cursor > head:
            cursor = None  # the relay's data is older than the client's cursor: list all
        plan = await catch_up(
            self.storage,
            grant,
            conn.replica,
            tuple(collections),
            cursor,
            subscriptions,
            since,
            now,
        )
        # Records purged since the cursor (a replica with no cursor has none of them).
        removed = (
            await self.storage.removed_since(tenant, collections, cursor)
            if cursor is not None
            else []
        )
        if conn.protocol.state is not State.OPEN:
            return
        at = plan.at if subscriptions is not None or plan.live else None
        if removed:
            conn.protocol.send_removed(removed)
        if plan.dropped:
            conn.protocol.send_dropped(plan.dropped)
        if plan.changed:
            conn.catchups.append((head, at))
            conn.protocol.send_changed(plan.changed, head, done=True)
        else:
            conn.protocol.send_synced(head, at)
        self._latency("sub", started)

    async def _on_state_vectors(
        self,
        conn: NativeConnection,
        items: Sequence[StateVectorItem],
        done: bool,
        started: float,
    ) -> None:
        assert conn.grant is not None
        tenant = conn.grant.tenant
        hidden = await self._outside_access(conn, items)
        states = await self.storage.get_states(
            tenant,
            [
                (i.collection, i.record_id)
                for i in items
                if (i.collection, i.record_id) not in hidden
            ],
        )
        diffs: list[Delivery] = []
        for item in items:
            state = states.get((item.collection, item.record_id))
            if state is not None:
                diffs.append(
                    (item.collection, item.record_id, missing_from(state, item.state_vector))
                )
        if conn.protocol.state is not State.OPEN:
            return
        if diffs:
            conn.protocol.send_updates(diffs, None)
        if done:
            if conn.catchups:
                cursor, at = conn.catchups.popleft()
            else:
                cursor, at = await self.storage.head(tenant), None
            if conn.protocol.state is State.OPEN:
                conn.protocol.send_synced(cursor, at)
        self._latency("sv", started)

    async def _outside_access(
        self, conn: NativeConnection, items: Sequence[StateVectorItem]
    ) -> set[RecordKey]:
        """The records among ``items`` the connection's grant does not let it read."""
        assert conn.grant is not None
        now = self.config.clock()
        scopes = {
            c: scope
            for c in {i.collection for i in items}
            if (scope := resolved_scope(conn.grant, c, now)) is not None
        }
        if not scopes:
            return set()
        keys = [(i.collection, i.record_id) for i in items if i.collection in scopes]
        fields = await self.storage.fields(conn.grant.tenant, keys)
        return {
            RecordKey(*key)
            for key in keys
            if key in fields and not readable(scopes[key[0]], fields[key])
        }


def _frame_label(frame: bytes | str) -> str:
    """The metric label of a native frame: its message type, or ``"other"``."""
    return message_type(frame) or "other"
