"""The pycrdt-websocket side of the sync benchmark (runs in its own venv, not ours).

``benchmarks/bench_sync.py`` creates ``benchmarks/.venv-peers`` (pycrdt-websocket 0.16.5,
pycrdt-store, the same pycrdt as ours, websockets) and runs this file there as subprocesses:

- ``server --port 0 [--store DB]``: a pycrdt-websocket ``WebsocketServer`` (rooms kept while
  the process lives: ``auto_clean_rooms=False``; with ``--store``, every room gets a pycrdt-store
  ``SQLiteYStore`` in DB and loads it when it opens) behind a ``websockets`` server. Prints
  ``peer listening on ws://HOST:PORT`` once ready; SIGTERM stops it.
- ``client --url URL --workload W ...``: runs one client-side workload (both replicas in this
  process, like ours) and prints one JSON line with the measurements.
- ``idle --url URL --count N``: opens N synced connections (one room each), prints
  ``ready N``, holds them until its stdin closes (or ``--hold`` seconds pass).

Clients are ``pycrdt.Provider`` over :class:`WebsocketsChannel`, a small adapter from a
``websockets`` connection to pycrdt's ``Channel`` interface. pycrdt-websocket syncs ONE document
per websocket (the room is the URL path), so a replica with N records holds N sockets.

This module imports nothing from crdt_sync: that package is not installed in the peer venv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pycrdt import Doc, Map, Provider, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

READY_PREFIX = "peer listening on "


class WebsocketsChannel:
    """pycrdt's ``Channel`` over a ``websockets`` connection; counts payload bytes and frames."""

    def __init__(
        self,
        ws: ClientConnection | ServerConnection,
        path: str,
        received: asyncio.Event | None = None,
    ) -> None:
        self._ws = ws
        self._path = path
        self._received = received
        self._lock = asyncio.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.frames_received = 0

    @property
    def path(self) -> str:
        """The room (URL path)."""
        return self._path

    def __aiter__(self) -> WebsocketsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        """Send one message (serialized: providers and rooms send from several tasks)."""
        async with self._lock:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(message)
                self.bytes_sent += len(message)
                self.frames_sent += 1

    async def recv(self) -> bytes:
        """Receive one message."""
        message = await self._ws.recv()
        data = message.encode() if isinstance(message, str) else bytes(message)
        self.bytes_received += len(data)
        self.frames_received += 1
        if self._received is not None:
            self._received.set()
        return data


# ------------------------------------------------------------------------------ server


async def run_server(host: str, port: int, store: str | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    from pycrdt.websocket import WebsocketServer, YRoom

    if store is None:
        server: Any = WebsocketServer(auto_clean_rooms=False)
    else:
        from pycrdt.store import SQLiteYStore, YDocNotFound

        store_class = type("BenchYStore", (SQLiteYStore,), {"db_path": store})
        # Create the database once: rooms opening at the same time would race to create it.
        first = store_class(path="__init__")
        async with first:
            assert first.db_initialized is not None
            await first.db_initialized.wait()

        class StoredServer(WebsocketServer):  # type: ignore[misc]
            async def get_room(self, name: str) -> Any:
                if name not in self.rooms:
                    ystore = store_class(path=name)
                    room = YRoom(ready=False, ystore=ystore, log=self.log)
                    self.rooms[name] = room
                    await self.start_room(room)
                    await ystore.started.wait()
                    with contextlib.suppress(YDocNotFound):
                        await ystore.apply_updates(room.ydoc)
                    room.ready = True
                room = self.rooms[name]
                await self.start_room(room)
                await room.ready_event.wait()
                return room

        server = StoredServer(auto_clean_rooms=False)

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        await server.serve(WebsocketsChannel(ws, ws.request.path))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with (
        server,
        serve(handler, host, port, compression=None, max_size=None, ping_interval=None) as ws,
    ):
        bound = ws.sockets[0].getsockname()[1]
        print(f"{READY_PREFIX}ws://{host}:{bound}", flush=True)
        await stop.wait()


# ------------------------------------------------------------------------------ clients


class Replica:
    """One pycrdt-websocket client: a Doc per record, each with its own socket and Provider."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.docs: dict[str, Doc[Any]] = {}
        self.channels: dict[str, WebsocketsChannel] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sockets: dict[str, ClientConnection] = {}
        self._providers: dict[str, Provider] = {}
        self.changed = asyncio.Event()
        self.received = asyncio.Event()  # set on every message received, on any channel
        self.dirty: set[str] = set()
        self._watch: Callable[[str], None] | None = None

    def doc(self, room: str) -> Doc[Any]:
        """The record's document (created empty, observed for changes)."""
        if room not in self.docs:
            doc: Doc[Any] = Doc()
            doc.observe(lambda _event, room=room: self._on_change(room))
            self.docs[room] = doc
        return self.docs[room]

    def _on_change(self, room: str) -> None:
        self.dirty.add(room)
        self.changed.set()
        if self._watch is not None:
            self._watch(room)

    async def connect(self, room: str) -> Provider:
        """Open the record's socket and start its Provider (returns once started)."""
        doc = self.doc(room)
        ws = await connect(
            f"{self.url}/{room}", compression=None, max_size=None, ping_interval=None
        )
        channel = WebsocketsChannel(ws, room, self.received)
        provider = Provider(doc, channel)
        self._sockets[room] = ws
        self.channels[room] = channel
        self._providers[room] = provider
        self._tasks[room] = asyncio.create_task(provider.start())
        await provider.started.wait()
        return provider

    async def connect_all(self, rooms: list[str], *, synced: bool = True) -> None:
        """Connect every room (concurrently, bounded) and wait for each first sync."""
        limit = asyncio.Semaphore(64)

        async def one(room: str) -> None:
            async with limit:
                provider = await self.connect(room)
                if synced:
                    await provider.synced.wait()

        await asyncio.gather(*(one(room) for room in rooms))

    async def disconnect_all(self) -> None:
        """Go offline: stop every provider and close every socket."""
        for room, provider in list(self._providers.items()):
            with contextlib.suppress(Exception):
                await provider.stop()
            await self._sockets[room].close()
            task = self._tasks.pop(room)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._providers.clear()
        self._sockets.clear()

    async def until_received(self, done: Callable[[], bool], within: float) -> None:
        """Wait until ``done()`` (re-checked after every message received on any channel)."""
        async with asyncio.timeout(within):
            while not done():
                self.received.clear()
                if done():
                    return
                await self.received.wait()

    def wire_bytes(self) -> tuple[int, int]:
        """(payload bytes, frames) sent plus received over every channel so far."""
        size = sum(c.bytes_sent + c.bytes_received for c in self.channels.values())
        frames = sum(c.frames_sent + c.frames_received for c in self.channels.values())
        return size, frames

    async def until(self, done: Callable[[], bool], within: float) -> None:
        """Wait until ``done()`` (re-checked after every change of any document)."""
        async with asyncio.timeout(within):
            while not done():
                self.changed.clear()
                if done():
                    return
                await self.changed.wait()


def _room(prefix: str, i: int) -> str:
    return f"{prefix}/rec-{i}"


def _text(doc: Doc[Any]) -> Text:
    fields: Map[Any] = doc.get("fields", type=Map)
    if "body" not in fields:
        fields["body"] = Text()
    value = fields["body"]
    assert isinstance(value, Text)
    return value


async def throughput(url: str, records: int, edits: int, prefix: str) -> dict[str, Any]:
    """A inserts one character at a time (round-robin over ``records`` records) until B has all.

    Timed from A's first edit to B holding every character; A yields to the event loop after
    each edit (as an app would between keystrokes).
    """
    a, b = Replica(url, "a"), Replica(url, "b")
    rooms = [_room(prefix, i) for i in range(records)]
    await a.connect_all(rooms)
    await b.connect_all(rooms)
    texts = [_text(a.doc(room)) for room in rooms]
    per_room = {room: 0 for room in rooms}
    for i in range(edits):
        per_room[rooms[i % records]] += 1
    complete: set[str] = set()

    def done() -> bool:
        for room in list(b.dirty):
            b.dirty.discard(room)
            fields: Map[Any] = b.docs[room].get("fields", type=Map)
            body = fields.get("body")
            if body is not None and len(body) >= per_room[room]:
                complete.add(room)
        return len(complete) == records

    b.dirty.clear()
    started = time.perf_counter()
    for i in range(edits):
        text = texts[i % records]
        text.insert(len(text), "x")
        await asyncio.sleep(0)
    produced = time.perf_counter()
    await b.until(done, within=600)
    elapsed = time.perf_counter() - started
    ok = all(str(b.docs[r].get("fields", type=Map)["body"]) == "x" * per_room[r] for r in rooms)
    await a.disconnect_all()
    await b.disconnect_all()
    return {
        "edits": edits,
        "records": records,
        "seconds": elapsed,
        "edits_per_s": edits / elapsed,
        "produce_seconds": produced - started,
        "complete": ok,
    }


async def latency(url: str, samples: int, prefix: str) -> dict[str, Any]:
    """One character on A, wait for B's document to change; one at a time."""
    a, b = Replica(url, "a"), Replica(url, "b")
    room = _room(prefix, 0)
    await a.connect(room)
    await (await b.connect(room)).synced.wait()
    text = _text(a.doc(room))
    await b.until(lambda: "body" in b.doc(room).get("fields", type=Map), within=60)
    seen: asyncio.Future[float] | None = None

    def watch(_room: str) -> None:
        if seen is not None and not seen.done():
            seen.set_result(time.perf_counter())

    b._watch = watch
    loop = asyncio.get_running_loop()
    # Warm up (and make sure the record exists on both sides).
    for _ in range(20):
        seen = loop.create_future()
        text.insert(len(text), "w")
        await asyncio.wait_for(seen, 10)
    values: list[float] = []
    for _ in range(samples):
        seen = loop.create_future()
        started = time.perf_counter()
        text.insert(len(text), "x")
        values.append(await asyncio.wait_for(seen, 10) - started)
    fields: Map[Any] = b.docs[room].get("fields", type=Map)
    ok = str(fields["body"]) == str(text) and str(text).endswith("w" * 20 + "x" * samples)
    await a.disconnect_all()
    await b.disconnect_all()
    return {"samples": values, "complete": ok}


async def catchup(
    url: str, records: int, remote: int, local: int, prefix: str, runs: int
) -> dict[str, Any]:
    """C caches ``records`` records, goes offline; ``remote`` change on W, ``local`` on C.

    Timed from C reconnecting (one socket per cached record, as y-websocket clients do) until
    C holds every remote change and W (online) holds every local change of C. Bytes are the
    payload bytes C sent and received during the reconnect.
    """
    w, c = Replica(url, "w"), Replica(url, "c")
    rooms = [_room(prefix, i) for i in range(records)]
    # W creates the records (and waits for the server's echo of each: it has them), then
    # keeps only the sockets of the records it changes or watches (a process may hold only so
    # many sockets); C downloads every record (its cache).
    await w.connect_all(rooms)
    created = {r: w.channels[r].frames_received for r in rooms}
    for i, room in enumerate(rooms):
        fields: Map[Any] = w.doc(room).get("fields", type=Map)
        fields["title"] = f"Job {i}"
        fields["status"] = "open"
    await w.until_received(
        lambda: all(w.channels[r].frames_received > created[r] for r in rooms), within=600
    )
    remote_rooms = rooms[:remote]
    local_rooms = rooms[records - local :] if local else []
    await w.disconnect_all()
    w.channels.clear()
    await w.connect_all(remote_rooms + local_rooms)
    await c.connect_all(rooms)
    await c.until(
        lambda: all(c.docs[r].get("fields", type=Map).get("status") == "open" for r in rooms),
        within=600,
    )
    timings: list[float] = []
    sizes: list[int] = []
    frames: list[int] = []
    ok = True
    for run in range(runs):
        await c.disconnect_all()
        # Remote changes on W: wait until the server echoed each back (it has applied them).
        marker = f"remote-{run}"
        before = {r: w.channels[r].frames_received for r in remote_rooms}
        for room in remote_rooms:
            w.doc(room).get("fields", type=Map)["status"] = marker
        await w.until_received(
            lambda before=before: all(
                w.channels[r].frames_received > before[r] for r in remote_rooms
            ),
            within=600,
        )
        local_marker = f"local-{run}"
        for room in local_rooms:
            c.doc(room).get("fields", type=Map)["note"] = local_marker
        c.channels.clear()
        w.dirty.clear()

        def c_done(marker: str = marker) -> bool:
            return all(
                c.docs[r].get("fields", type=Map).get("status") == marker for r in remote_rooms
            )

        def w_done(local_marker: str = local_marker) -> bool:
            return all(
                w.docs[r].get("fields", type=Map).get("note") == local_marker for r in local_rooms
            )

        started = time.perf_counter()
        await c.connect_all(rooms, synced=False)
        await c.until(c_done, within=600)
        await w.until(w_done, within=600)
        timings.append(time.perf_counter() - started)
        size, count = c.wire_bytes()
        sizes.append(size)
        frames.append(count)
        ok = ok and c_done() and w_done()
    await c.disconnect_all()
    await w.disconnect_all()
    return {
        "records": records,
        "remote": remote,
        "local": local,
        "seconds": timings,
        "bytes": sizes,
        "frames": frames,
        "complete": ok,
    }


async def idle(url: str, count: int, hold: float) -> None:
    """Open ``count`` synced connections (one room each), print ``ready``, hold them."""
    replica = Replica(url, "idle")
    rooms = [f"idle/rec-{i}" for i in range(count)]
    await replica.connect_all(rooms)
    print(f"ready {count}", flush=True)
    loop = asyncio.get_running_loop()
    closed = loop.run_in_executor(None, sys.stdin.read)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closed, hold)
    await replica.disconnect_all()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--store", help="SQLiteYStore database file (default: in memory)")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--workload", required=True, choices=["throughput", "latency", "catchup"])
    c.add_argument("--records", type=int, default=1)
    c.add_argument("--edits", type=int, default=1000)
    c.add_argument("--samples", type=int, default=200)
    c.add_argument("--remote", type=int, default=100)
    c.add_argument("--local", type=int, default=0)
    c.add_argument("--runs", type=int, default=1)
    c.add_argument("--prefix", default="bench")
    i = sub.add_parser("idle")
    i.add_argument("--url", required=True)
    i.add_argument("--count", type=int, required=True)
    i.add_argument("--hold", type=float, default=120.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.command == "server":
        asyncio.run(run_server(args.host, args.port, args.store))
        return 0
    if args.command == "idle":
        asyncio.run(idle(args.url, args.count, args.hold))
        return 0
    work: Callable[[], Awaitable[dict[str, Any]]]
    if args.workload == "throughput":
        work = lambda: throughput(args.url, args.records, args.edits, args.prefix)  # noqa: E731
    elif args.workload == "latency":
        work = lambda: latency(args.url, args.samples, args.prefix)  # noqa: E731
    else:
        work = lambda: catchup(  # noqa: E731
            args.url, args.records, args.remote, args.local, args.prefix, args.runs
        )
    print(json.dumps(asyncio.run(work())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
