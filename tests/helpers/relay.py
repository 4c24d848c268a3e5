"""A real relay process for tests, and a small real websockets client speaking the protocol.

``start_relay(data_dir)`` runs ``python -m crdt_sync.server serve --port 0 --data DATA_DIR``
as a subprocess (cwd = the data dir's parent, so the checkout's ``crdt_sync/`` folder does not
shadow the installed package), waits for its ``crdt-sync relay listening on ws://...`` line
and returns a :class:`RelayProcess` (``url``, ``process``, ``secret``; ``stop()`` sends
SIGTERM, ``kill()`` SIGKILL; ``restart()`` starts a new process on the same data dir).

:class:`RelayClient` joins a :class:`~crdt_sync.protocol.ClientProtocol` to a websocket: every
command is sent at once, and ``next_event()`` / ``wait_for()`` wait (under a timeout, never a
sleep) for events; ``raw`` sends arbitrary bytes for malformed-input tests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from crdt_sync.server.tokens import mint
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed

from crdt_sync.protocol import (
    ChangedReceived,
    ClientEvent,
    ClientProtocol,
    ErrorReceived,
    SyncedReceived,
    UpdatesReceived,
)

DEFAULT_SECRET = "test-relay-secret"
READY_PREFIX = "crdt-sync relay listening on "
EVENT_TIMEOUT = 10.0

E = TypeVar("E")


@dataclass
class RelayProcess:
    """A relay subprocess started by :func:`start_relay`."""

    process: subprocess.Popen[str]
    url: str
    secret: str
    data_dir: Path
    log_path: Path
    args: tuple[str, ...] = ()
    port: int = 0
    reader: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        """``http://host:port`` (for ``/healthz`` and ``/metrics``)."""
        return "http" + self.url[len("ws") :]

    def token(self, tenant: str, collections: Iterable[str], ttl: float = 3600) -> str:
        """A token for this relay's secret."""
        return mint(self.secret, tenant, list(collections), ttl)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """HTTP GET ``path`` on the relay's port: ``(status, body)``."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout)
        self._release()
        return status

    def kill(self) -> None:
        """SIGKILL (no shutdown at all) and wait."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._release()

    def _release(self) -> None:
        if self.reader is not None:
            self.reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def restart(self, *, same_port: bool = False) -> RelayProcess:
        """A new relay process on the same data dir, secret and flags (this one must be dead)."""
        assert self.process.poll() is not None, "stop() or kill() the relay first"
        return start_relay(
            self.data_dir,
            secret=self.secret,
            args=self.args,
            port=self.port if same_port else 0,
        )

    def log(self) -> str:
        """The relay's stderr so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


#: Every relay process started, killed when the test process exits (a test that restarts a
#: relay, or a run stopped early, must not leave relays running).
_STARTED: list[subprocess.Popen[str]] = []


@atexit.register
def _kill_leftover_relays() -> None:
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


def start_relay(
    data_dir: Path,
    *,
    secret: str = DEFAULT_SECRET,
    args: Sequence[str] = (),
    port: int = 0,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> RelayProcess:
    """Start ``python -m crdt_sync.server serve`` on ``data_dir`` and wait until it listens.

    Args:
        data_dir: the relay's ``--data`` directory (created if missing).
        secret: the ``--secret``.
        args: more ``serve`` flags (``--durable``, ``--rate-limit 5``...).
        port: ``--port``; 0 picks a free one.
        env: extra environment variables.
        timeout: how long to wait for the listening line.

    Raises:
        RuntimeError: the process exited or did not print its line in time (with its log).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cwd = data_dir.parent
    log_path = cwd / f"{data_dir.name}-relay-{time.monotonic_ns()}.log"
    command = [
        sys.executable,
        "-m",
        "crdt_sync.server",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data",
        str(data_dir),
        "--secret",
        secret,
        *args,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CRDT_SYNC_SECRET", None)
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    _STARTED.append(process)
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(0.01, remaining))
        except queue.Empty:
            line = None
            remaining = -1
        if line is not None and line.startswith(READY_PREFIX):
            url = line[len(READY_PREFIX) :].strip()
            return RelayProcess(
                process,
                url,
                secret,
                data_dir,
                log_path,
                tuple(args),
                int(url.rsplit(":", 1)[1]),
                reader,
            )
        if line is None or remaining <= 0:
            with contextlib.suppress(Exception):
                process.kill()
                process.wait(5)
                reader.join(5)
                process.stdout.close()
            raise RuntimeError(
                f"relay did not start (exit {process.poll()}):\n{log_path.read_text()}"
            )


@dataclass
class RelayClient:
    """A replica's protocol core on a real websocket, for tests.

    Use :meth:`open` (an async context manager). Commands go through :attr:`protocol` and are
    sent with :meth:`flush` (the convenience methods flush by themselves).
    """

    ws: ClientConnection
    protocol: ClientProtocol
    events: list[ClientEvent] = field(default_factory=list)
    closed: bool = False

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, token: str, replica: str = "replica", *, welcome: bool = True
    ) -> Any:
        """Connect, send ``hello`` and (if ``welcome``) wait for the ``welcome``."""
        async with connect(url, max_size=None, compression=None) as ws:
            client = cls(ws, ClientProtocol(replica, token))
            await client.flush()
            if welcome:
                from crdt_sync.protocol import Welcomed

                await client.next_event(Welcomed)
            yield client

    async def flush(self) -> None:
        """Send what the core queued (``b""``: close the websocket)."""
        for data in self.protocol.data_to_send():
            if not data:
                await self.ws.close()
                return
            with contextlib.suppress(WebSocketClosed):
                await self.ws.send(data)

    async def raw(self, frame: bytes | str) -> None:
        """Send one websocket message as is (bypassing the core)."""
        await self.ws.send(frame)

    async def _receive_one(self) -> None:
        try:
            message = await self.ws.recv()
        except WebSocketClosed:
            self.closed = True
            self.protocol.receive_eof()
            raise
        self.protocol.receive_data(message, asyncio.get_running_loop().time())
        await self.flush()
        self.events.extend(self.protocol.events_received())

    async def wait_for(
        self, predicate: Callable[[ClientEvent], bool], within: float = EVENT_TIMEOUT
    ) -> ClientEvent:
        """Receive until an event matches ``predicate``; return it (and drop those before)."""

        async def scan() -> ClientEvent:
            while True:
                while self.events:
                    event = self.events.pop(0)
                    if predicate(event):
                        return event
                await self._receive_one()

        return await asyncio.wait_for(scan(), within)

    async def next_event(self, kind: type[E], within: float = EVENT_TIMEOUT) -> E:
        """The next event of type ``kind`` (events of other types before it are dropped)."""
        event = await self.wait_for(lambda e: isinstance(e, kind), within)
        assert isinstance(event, kind)
        return event

    async def closed_with(self, within: float = EVENT_TIMEOUT) -> tuple[list[ClientEvent], int]:
        """Receive until the relay closes; return the events seen and the close code."""
        seen: list[ClientEvent] = []

        async def drain() -> int:
            while True:
                seen.extend(self.events)
                self.events.clear()
                try:
                    await self._receive_one()
                except WebSocketClosed:
                    seen.extend(self.events)
                    self.events.clear()
                    code = self.ws.close_code
                    return -1 if code is None else int(code)

        code = await asyncio.wait_for(drain(), within)
        return seen, code

    async def error(self, within: float = EVENT_TIMEOUT) -> ErrorReceived:
        """The next ``error`` frame from the relay."""
        return await self.next_event(ErrorReceived, within)

    async def push(self, items: Iterable[tuple[int, str, str, bytes]]) -> None:
        """Push outbox entries (sent at once)."""
        self.protocol.push(items)
        await self.flush()

    async def push_and_settle(
        self, items: Sequence[tuple[int, str, str, bytes]], within: float = EVENT_TIMEOUT
    ) -> tuple[set[int], dict[int, tuple[str, str]]]:
        """Push and wait until every entry is acked or rejected: ``(acked, {seq: (code, why)})``."""
        from crdt_sync.protocol import Acked, Rejected

        await self.push(items)
        acked: set[int] = set()
        rejected: dict[int, tuple[str, str]] = {}
        wanted = {item[0] for item in items}

        async def settle() -> None:
            while not wanted <= acked | set(rejected):
                event = await self.wait_for(lambda e: isinstance(e, Acked | Rejected), within)
                if isinstance(event, Acked):
                    acked.update(event.seqs)
                elif isinstance(event, Rejected):
                    rejected.update({i.seq: (i.code, i.reason) for i in event.items})

        await asyncio.wait_for(settle(), within)
        return acked, rejected

    async def catch_up(
        self,
        collections: Sequence[str],
        cursor: int | None,
        state_vectors: dict[tuple[str, str], bytes] | None = None,
        within: float = EVENT_TIMEOUT,
    ) -> tuple[list[tuple[str, str]], dict[tuple[str, str], list[bytes]], int]:
        """Subscribe and run the catch-up: ``(changed keys, updates per key, synced cursor)``.

        ``state_vectors`` are this replica's vectors per record (missing: it has nothing).
        Live updates arriving meanwhile are included in the updates.
        """
        vectors = state_vectors or {}
        self.protocol.subscribe(collections, cursor)
        await self.flush()
        changed: list[tuple[str, str]] = []
        updates: dict[tuple[str, str], list[bytes]] = {}

        async def run() -> int:
            while True:
                event = await self.wait_for(
                    lambda e: isinstance(e, ChangedReceived | UpdatesReceived | SyncedReceived),
                    within,
                )
                if isinstance(event, ChangedReceived):
                    keys = [(k.collection, k.record_id) for k in event.items]
                    changed.extend(keys)
                    self.protocol.send_state_vectors(
                        [(c, r, vectors.get((c, r), b"\x00")) for c, r in keys], done=event.done
                    )
                    await self.flush()
                elif isinstance(event, UpdatesReceived):
                    for item in event.items:
                        updates.setdefault((item.collection, item.record_id), []).append(
                            item.update
                        )
                else:
                    assert isinstance(event, SyncedReceived)
                    return event.cursor

        cursor_out = await asyncio.wait_for(run(), within)
        return changed, updates, cursor_out

    async def fetch(
        self, keys: Sequence[tuple[str, str]], within: float = EVENT_TIMEOUT
    ) -> dict[tuple[str, str], bytes]:
        """Ask for whole records (empty state vectors); returns what the relay sent back."""
        self.protocol.send_state_vectors([(c, r, b"\x00") for c, r in keys], done=True)
        await self.flush()
        result: dict[tuple[str, str], bytes] = {}

        async def run() -> None:
            while True:
                event = await self.wait_for(
                    lambda e: isinstance(e, UpdatesReceived | SyncedReceived), within
                )
                if isinstance(event, SyncedReceived):
                    return
                assert isinstance(event, UpdatesReceived)
                if event.cursor is None:
                    for item in event.items:
                        result[(item.collection, item.record_id)] = item.update

        await asyncio.wait_for(run(), within)
        return result
