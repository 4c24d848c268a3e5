"""A real TCP proxy on 127.0.0.1 that can drop, stall and cut connections, for e2e tests.

``async with TcpProxy(target_port) as proxy:`` listens on a free port (``proxy.port``,
``proxy.url`` as ``ws://``) and forwards every accepted connection to the target. Faults:

- :meth:`TcpProxy.cut`: abort every current connection at once (both sides see a reset);
- :meth:`TcpProxy.stall`: current connections stay open but everything sent on them from now
  on is silently dropped (a black hole: no FIN, no RST, like a dead NAT or radio link);
- ``proxy.refuse = True``: new connections are accepted then closed at once;
- :meth:`TcpProxy.chaos`: for each chunk forwarded, with the given probabilities (drawn from a
  seeded ``random.Random``), cut or stall the connection carrying it;
  :meth:`TcpProxy.calm` stops it.

Counters (``accepted``, ``cuts``, ``stalls``) tell a test what actually happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client side and the target side."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter
    stalled: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.target):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()


class TcpProxy:
    """A fault-injecting TCP proxy to ``target_host:target_port``.

    Args:
        target_port: where to forward.
        target_host: the target's address.
        seed: seeds the random source of :meth:`chaos`.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", seed: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.refuse = False
        self.cut_probability = 0.0
        self.stall_probability = 0.0
        self.accepted = 0
        self.cuts = 0
        self.stalls = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` of the proxy."""
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        tasks = [t for link in self._links for t in link.tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- faults ---------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many connections are open now."""
        return len(self._links)

    def cut(self) -> int:
        """Abort every current connection; returns how many."""
        links = list(self._links)
        for link in links:
            link.abort()
        self.cuts += len(links)
        return len(links)

    def stall(self) -> int:
        """Black-hole every current connection (data is dropped, nothing is closed)."""
        links = [link for link in self._links if not link.stalled]
        for link in links:
            link.stalled = True
        self.stalls += len(links)
        return len(links)

    def chaos(self, cut_probability: float, stall_probability: float) -> None:
        """Cut or stall the connection of each forwarded chunk with these probabilities."""
        self.cut_probability = cut_probability
        self.stall_probability = stall_probability

    def calm(self) -> None:
        """Stop :meth:`chaos` (connections already stalled stay stalled)."""
        self.chaos(0.0, 0.0)

    # -- forwarding -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            writer.transport.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, target_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, target_writer)),
            asyncio.create_task(self._pump(link, target_reader, writer)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            link.abort()

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                data = await source.read(CHUNK)
                if not data:
                    break
                if link.stalled:
                    continue
                roll = self.rng.random()
                if roll < self.cut_probability:
                    self.cuts += 1
                    link.abort()
                    break
                if roll < self.cut_probability + self.stall_probability:
                    self.stalls += 1
                    link.stalled = True
                    continue
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.stalled:
                link.abort()
            with contextlib.suppress(Exception):
                sink.close()
