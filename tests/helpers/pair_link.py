"""PairLink: a :class:`~crdt_sync.client.sync_run.SyncLink` over a :class:`ProtocolPair`.

The seam for running a real :class:`~crdt_sync.client.sync_run.SyncRun` without a socket: the
run drives the pair's :class:`~crdt_sync.protocol.ClientProtocol` as it drives a
:class:`~crdt_sync.client.connection.Connection` (``next()``, ``wake()``, ``flush()``,
``abort()``, ``close_code``; the same :class:`~crdt_sync.client.connection.Inbox`), and the
test plays the relay with the pair's sans-I/O :class:`~crdt_sync.protocol.ServerProtocol`.

As with :class:`ProtocolPair`, nothing reaches the client by itself: the test issues server
commands (``link.server.ack(...)``), then :meth:`PairLink.exchange` delivers them, waits until
the run handled everything and waits for its next item, and returns what the client sent
meanwhile (decoded). What the client sends reaches the server at once (``flush()``). No
sleeps: "the run handled everything" is the run waiting on an empty inbox.
"""

from __future__ import annotations

import asyncio

from crdt_sync.client.connection import CLOSED, Inbox, Signal

from crdt_sync.errors import InvalidState
from crdt_sync.messages import Message
from crdt_sync.protocol import (
    CONNECTION_LOST,
    ClientEvent,
    ClientProtocol,
    HelloReceived,
    ServerProtocol,
    State,
)
from helpers.protocol_pair import EOF, ProtocolPair

#: Seconds a test waits for the run at most (it takes milliseconds).
WAIT = 5.0


class PairLink:
    """The client's end of a :class:`ProtocolPair`, as a sync run's link.

    Create with :meth:`open`: ``hello`` is already on the server, which waits for the test's
    ``accept()`` (or :meth:`welcome`).
    """

    def __init__(self, pair: ProtocolPair) -> None:
        self.pair = pair
        self._inbox = Inbox()
        self._waiting = asyncio.Event()  # the run waits on an empty inbox
        self._sent: list[Message | str] = []

    @classmethod
    def open(cls, **server_options: object) -> PairLink:
        """A link whose ``hello`` reached the server (``server_options``: ServerProtocol's)."""
        pair = ProtocolPair.make(**server_options)  # type: ignore[arg-type]
        pair.client_to_server()
        assert [type(e) for e in pair.server_events()] == [HelloReceived]
        return cls(pair)

    @property
    def server(self) -> ServerProtocol:
        """The relay's end: issue its commands, then :meth:`exchange`."""
        return self.pair.server

    # -- SyncLink --------------------------------------------------------------------------

    @property
    def protocol(self) -> ClientProtocol:
        return self.pair.client

    async def next(self) -> ClientEvent | Signal:
        if self._inbox.idle:
            self._waiting.set()
        item = await self._inbox.next()
        self._waiting.clear()
        return item

    def wake(self) -> None:
        self._waiting.clear()
        self._inbox.wake()

    async def flush(self) -> None:
        sent = self.pair.client_to_server()
        self._sent.extend(sent)
        if EOF in sent:  # the client closed the transport
            self.drop()

    def abort(self) -> None:
        self.drop()

    @property
    def close_code(self) -> str:
        try:
            return self.protocol.close_exc.code
        except InvalidState:
            return CONNECTION_LOST

    # -- for the test ----------------------------------------------------------------------

    async def welcome(
        self, tenant: str = "acme", collections: tuple[str, ...] = ("jobs", "contacts")
    ) -> list[Message | str]:
        """The relay accepts the client: :meth:`exchange` after ``accept()``."""
        self.server.accept(tenant, collections)
        return await self.exchange()

    async def exchange(self) -> list[Message | str]:
        """:meth:`deliver`, then :meth:`settled`: what the client sent in answer."""
        self.deliver()
        return await self.settled()

    def deliver(self) -> None:
        """Deliver what the server queued to the client; the run gets the events."""
        self.pair.server_to_client()
        for event in self.pair.client_events():
            self._put(event)
        if self.protocol.state is State.CLOSED:
            self._put(CLOSED)

    async def settled(self) -> list[Message | str]:
        """Wait until the run waits for its next item; return (and forget) what the client
        sent since the last call. Call after something woke the run (a local edit...)."""
        async with asyncio.timeout(WAIT):
            await self._waiting.wait()
        sent, self._sent = self._sent, []
        return sent

    def drop(self) -> None:
        """The transport is lost: both ends see its end; the run's next item is CLOSED."""
        self.pair.client.receive_eof()
        self.pair.server.receive_eof()
        self._put(CLOSED)

    def _put(self, item: ClientEvent | Signal) -> None:
        self._waiting.clear()
        self._inbox.put(item)
