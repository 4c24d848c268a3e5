"""Sync benchmark: crdt-sync's relay and replicas side by side with pycrdt-websocket, one run.

Workloads (each relay/server in its own process on 127.0.0.1, the replicas in another):

1. **Throughput**: replica A inserts one character per edit, into one record or round-robin
   over many records; timed from A's first edit until replica B holds every edit (edits/s).
2. **Latency**: one character on A, until B reports the change (our ``on_change`` event,
   pycrdt's document observer); one at a time; p50/p99.
3. **Catch-up**: replica C with ``--cached`` records (default 10,000) goes offline; records are
   changed remotely (100, and separately 1,000) and locally (100); timed from ``go_online()``
   until C is synced (our status ``online`` with an empty outbox: upload, then download), with
   the payload bytes and frames on the wire (the relay's ``/metrics`` counters).
4. **Idle connections**: a separate load process opens ``--idle`` authenticated, subscribed
   protocol connections; the relay's RSS before/after (``/proc``) gives memory per connection.

Ours runs with durable persistence ON (acks only after the SQLite commit; default relay =
durable against a killed process, also ``--durable`` = against power loss). The peer is
pycrdt-websocket 0.16.5 (``WebsocketServer``, in memory and with pycrdt-store's
``SQLiteYStore``; clients are ``pycrdt.Provider`` over ``websockets``, one socket per record),
installed by this script in its own venv ``benchmarks/.venv-peers`` and run there as
subprocesses (``benchmarks/peer_pycrdt_websocket.py``).

Run ``python benchmarks/bench_sync.py --help``; ``--quick`` for a short run. Prints one table
(medians over ``--runs`` runs, ratios ours/theirs) and writes the numbers as JSON with
``--json FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycrdt
import websockets
from crdt_sync.client import RecordChange, Replica
from crdt_sync.server.tokens import mint
from pycrdt import Doc, Text, TransactionEvent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdt_sync.protocol import (
    Acked,
    ClientProtocol,
    Rejected,
    SyncedReceived,
    UpdatesReceived,
    Welcomed,
)
from crdt_sync.records.clock import HybridClock, Timestamp
from crdt_sync.records.lww import LwwPolicy
from crdt_sync.records.record import RecordEditor, read_fields
from crdt_sync.store.sqlite import LocalStore

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "peer_pycrdt_websocket.py"
DEFAULT_PEER_VENV = HERE / ".venv-peers"
PEER_PACKAGES = ("pycrdt-websocket==0.16.5", "pycrdt-store")

SECRET = "bench-sync-secret"
TENANT = "bench"
COLLECTION = "notes"
RAW_COLLECTION = "raw"  # the relay-only throughput runs here
IDLE_COLLECTION = "idle"  # empty: an idle subscriber gets ``synced`` at once
RELAY_READY = "crdt-sync relay listening on "
PEER_READY = "peer listening on "
EVENT_TIMEOUT = 120.0

TARGET_RATIO = 5.0  # >= 5x pycrdt-websocket's throughput
TARGET_P99_MS = 1.0
CATCHUP_BOUND_MS = 20.0  # batched single-socket exchange of 1,000 diffs (issue 4)
TARGET_CATCHUP_MS = 3 * CATCHUP_BOUND_MS


# ------------------------------------------------------------------------------ processes


@dataclass
class Server:
    """A server subprocess (our relay or the peer's) and its URL."""

    name: str
    process: subprocess.Popen[str]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        """The server process id (its RSS is read from /proc)."""
        return self.process.pid

    def rss(self) -> int:
        """Resident set size in bytes (``VmRSS`` of ``/proc/PID/status``)."""
        return rss_of(self.pid)

    def metrics(self) -> dict[str, float]:
        """Our relay's ``/metrics``: totals per metric name (labels summed)."""
        with urllib.request.urlopen("http" + self.url[2:] + "/metrics", timeout=10) as response:
            return parse_metrics(response.read().decode())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def rss_of(pid: int) -> int:
    """``VmRSS`` of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> ``{metric name: value summed over labels}``."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        if name == "crdt_sync_message_latency_seconds_sum":  # keep the message type
            name += name_part[len(name) :]
        with contextlib.suppress(ValueError):
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def start_server(
    name: str, command: Sequence[str], ready: str, workdir: Path, timeout: float = 60.0
) -> Server:
    """Start a server process and wait for its ``<ready>ws://...`` line on stdout."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            list(command),
            cwd=workdir,  # not the checkout: its crdt_sync/ folder would shadow the package
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith(ready):
            return Server(name, process, line[len(ready) :].strip(), log_path)
    process.kill()
    process.wait(10)
    raise RuntimeError(f"{name} did not start:\n{log_path.read_text()}")


def start_relay(workdir: Path, durable: bool) -> Server:
    """Our relay: ``python -m crdt_sync.server serve`` on a fresh data dir."""
    name = "relay-durable" if durable else "relay"
    data = workdir / f"{name}-data"
    command = [
        sys.executable, "-m", "crdt_sync.server", "serve", "--host", "127.0.0.1",
        "--port", "0", "--data", str(data), "--secret", SECRET, "--log-level", "WARNING",
    ]  # fmt: skip
    if durable:
        command.append("--durable")
    return start_server(name, command, RELAY_READY, workdir)


def token(collections: Iterable[str] = (COLLECTION,)) -> str:
    """A token for the benchmark tenant."""
    return mint(SECRET, TENANT, list(collections), 24 * 3600)


# ------------------------------------------------------------------------------ peer venv


def ensure_peer_venv(venv: Path) -> Path:
    """Create ``venv`` with pycrdt-websocket 0.16.5, pycrdt-store, our pycrdt and websockets.

    Returns the venv's python. Reinstalls only when the wanted versions changed.
    """
    python = venv / "bin" / "python"
    wanted = [
        *PEER_PACKAGES,
        f"pycrdt=={pycrdt.__version__}" if hasattr(pycrdt, "__version__") else "pycrdt",
        f"websockets=={websockets.__version__}",
    ]
    stamp = venv / "bench-sync-packages.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(wanted):
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
        check=True,
    )
    stamp.write_text("\n".join(wanted))
    return python


def start_peer(python: Path, workdir: Path, store: bool) -> Server:
    """The peer's server: pycrdt-websocket's WebsocketServer (in memory or SQLiteYStore)."""
    name = "peer-sqlite" if store else "peer-memory"
    command = [str(python), str(PEER_SCRIPT), "server", "--port", "0"]
    if store:
        command += ["--store", str(workdir / f"{name}.db")]
    return start_server(name, command, PEER_READY, workdir)


def run_peer_client(python: Path, url: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    """Run one peer client workload; its JSON result."""
    out = subprocess.run(
        [str(python), str(PEER_SCRIPT), "client", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"peer client {args} failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------ our replicas


def open_replica(workdir: Path, name: str, url: str) -> Any:
    """``Replica.open`` on ``workdir/<name>.db`` syncing the benchmark collection."""
    return Replica.open(
        workdir / f"{name}.db",
        url=url,
        token=token(),
        collections=[COLLECTION],
        replica_id=name,
        backoff_initial=0.05,
        backoff_max=0.5,
    )


class ChangeWatch:
    """Records B's record-changed events: the keys changed since last looked, and an event."""

    def __init__(self, replica: Replica) -> None:
        self.dirty: set[str] = set()
        self.event = asyncio.Event()
        self.waiter: tuple[str, asyncio.Future[float]] | None = None
        self.unsubscribe = replica.on_change(self._on_change)

    def _on_change(self, change: RecordChange) -> None:
        now = time.perf_counter()
        self.dirty.add(change.record_id)
        self.event.set()
        if self.waiter is not None and self.waiter[0] == change.record_id:
            future = self.waiter[1]
            if not future.done():
                future.set_result(now)


async def wait_until_has(
    replica: Replica, watch: ChangeWatch, expected: dict[str, bytes], within: float
) -> None:
    """Wait until ``replica`` holds each record at (at least) the expected state vector."""
    pending = dict(expected)
    to_check = set(pending)
    async with asyncio.timeout(within):
        while True:
            watch.event.clear()
            to_check |= watch.dirty
            watch.dirty.clear()
            for record_id in list(to_check & set(pending)):
                vector = await replica.store.state_vector(COLLECTION, record_id)
                if vector == pending[record_id]:
                    del pending[record_id]
            to_check.clear()
            if not pending:
                return
            await watch.event.wait()


async def ours_throughput(
    url: str,
    workdir: Path,
    records: int,
    edits: int,
    prefix: str = "t",
    tasks: bool = False,
    batch: bool = False,
) -> dict[str, Any]:
    """Edits/s from A's first single-character edit until B holds every edit.

    Records are ``<prefix>-<i>``: use a new prefix per run on the same relay. ``tasks``: the
    edits are made by concurrent tasks (as a UI's event handlers or an import would), each
    still awaiting its own durable commit (they share group commits); otherwise one after the
    other, each awaited before the next starts. ``batch``: one after the other inside
    ``a.batch()`` (an import: each edit returns once queued, all durable at the batch's exit).
    """
    ids = [f"{prefix}-{i}" for i in range(records)]
    async with (
        open_replica(workdir, "a", url) as a,
        open_replica(workdir, "b", url) as b,
    ):
        await a.wait_synced(EVENT_TIMEOUT)
        await b.wait_synced(EVENT_TIMEOUT)
        watch = ChangeWatch(b)
        for record_id in ids:  # create the records (empty text) and let B get them
            async with a.edit(COLLECTION, record_id) as editor:
                editor.text("body")
        await a.wait_synced(EVENT_TIMEOUT)
        created = {r: await a.store.state_vector(COLLECTION, r) for r in ids}
        await wait_until_has(b, watch, created, EVENT_TIMEOUT)
        lengths = dict.fromkeys(ids, 0)

        async def edit_one(record_id: str, position: int) -> None:
            async with a.edit(COLLECTION, record_id) as editor:
                editor.text("body").insert(position, "x")

        started = time.perf_counter()
        running = []
        async with a.batch() if batch else contextlib.nullcontext():
            for i in range(edits):
                record_id = ids[i % records]
                if tasks:  # edits enter in creation order (the store applies them in turn)
                    running.append(asyncio.create_task(edit_one(record_id, lengths[record_id])))
                else:
                    await edit_one(record_id, lengths[record_id])
                lengths[record_id] += 1
            await asyncio.gather(*running)
        produced = time.perf_counter()
        expected = {r: await a.store.state_vector(COLLECTION, r) for r in ids}
        await wait_until_has(b, watch, expected, 600)
        elapsed = time.perf_counter() - started
        complete = True
        for record_id in ids:
            body = (await b.store.get(COLLECTION, record_id))["body"]
            complete = complete and body == "x" * lengths[record_id]
        watch.unsubscribe()
    return {
        "edits": edits,
        "records": records,
        "seconds": elapsed,
        "edits_per_s": edits / elapsed,
        "produce_seconds": produced - started,
        "complete": complete,
    }


async def ours_latency(
    url: str, workdir: Path, samples: int, record_id: str = "lat"
) -> dict[str, Any]:
    """One single-character edit on A at a time, until B's record-changed event.

    Use a new ``record_id`` per run on the same relay.
    """
    async with (
        open_replica(workdir, "la", url) as a,
        open_replica(workdir, "lb", url) as b,
    ):
        await a.wait_synced(EVENT_TIMEOUT)
        await b.wait_synced(EVENT_TIMEOUT)
        watch = ChangeWatch(b)
        loop = asyncio.get_running_loop()
        values: list[float] = []
        length = 0
        for i in range(20 + samples):
            future: asyncio.Future[float] = loop.create_future()
            watch.waiter = (record_id, future)
            started = time.perf_counter()
            async with a.edit(COLLECTION, record_id) as editor:
                editor.text("body").insert(length, "x")
            length += 1
            seen = await asyncio.wait_for(future, EVENT_TIMEOUT)
            if i >= 20:  # the first 20 warm up
                values.append(seen - started)
        await a.wait_synced(EVENT_TIMEOUT)
        expected = {record_id: await a.store.state_vector(COLLECTION, record_id)}
        await wait_until_has(b, watch, expected, EVENT_TIMEOUT)
        complete = (await b.store.get(COLLECTION, record_id))["body"] == "x" * length
        watch.unsubscribe()
    return {"samples": values, "complete": complete}


# ------------------------------------------------------------------------------ raw protocol


class ProtocolLink:
    """A replica's protocol core on a websocket, without a local store (seeding, load)."""

    def __init__(self, ws: ClientConnection, protocol: ClientProtocol) -> None:
        self.ws = ws
        self.protocol = protocol
        self.events: asyncio.Queue[object] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, replica: str, auth: str) -> ProtocolLink:
        """Connect and wait for ``welcome``."""
        ws = await connect(url, max_size=None, compression=None, ping_interval=None)
        link = cls(ws, ClientProtocol(replica, auth))
        await link.flush()
        await link.next(Welcomed)
        return link

    async def flush(self) -> None:
        """Send what the core queued."""
        for data in self.protocol.data_to_send():
            if not data:
                await self.ws.close()
                return
            await self.ws.send(data)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.protocol.receive_data(message, time.monotonic())
                for event in self.protocol.events_received():
                    self.events.put_nowait(event)
                await self.flush()
        except ConnectionClosed:
            pass
        finally:
            self.events.put_nowait(None)

    async def next(
        self, kind: type[Any] | tuple[type[Any], ...], within: float = EVENT_TIMEOUT
    ) -> Any:
        """The next event of type ``kind`` (others before it are dropped)."""
        async with asyncio.timeout(within):
            while True:
                event = await self.events.get()
                if event is None:
                    raise ConnectionError("the relay closed the connection")
                if isinstance(event, kind):
                    return event

    async def push_all(self, items: Sequence[tuple[int, str, str, bytes]]) -> None:
        """Push entries and wait until each is acked (a reject is an error)."""
        self.protocol.push(items)
        await self.flush()
        wanted = {item[0] for item in items}
        async with asyncio.timeout(600):
            while wanted:
                event = await self.next((Acked, Rejected))
                if isinstance(event, Rejected):
                    raise RuntimeError(f"relay rejected {event.items[:3]}")
                wanted -= set(event.seqs)

    async def fetch(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """Whole records from the relay (empty state vectors)."""
        self.protocol.send_state_vectors([(c, r, b"\x00") for c, r in keys], done=True)
        await self.flush()
        found: dict[tuple[str, str], bytes] = {}
        while True:
            event = await self.next((UpdatesReceived, SyncedReceived))
            if isinstance(event, SyncedReceived):
                return found
            for item in event.items:
                found[(item.collection, item.record_id)] = item.update

    async def close(self) -> None:
        """Close the websocket."""
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def relay_only_throughput(
    url: str, edits: int, record_id: str, push_batch: int = 1
) -> dict[str, Any]:
    """The relay alone: protocol clients without a local store, one record.

    A's single-character updates are made up front (not timed); A pushes them ``push_batch``
    per frame as fast as the socket takes them (not waiting for acks); timed until B,
    subscribed to the collection, has received every one. B's copy is checked against A's
    text.
    """
    doc: Doc[Any] = Doc()
    updates = [change_text(doc, "x") for _ in range(edits + 1)]  # the first creates the Text
    collection = f"{RAW_COLLECTION}-{record_id}"  # empty: B's subscribe is synced at once
    a = await ProtocolLink.open(url, f"{record_id}-a", token([collection]))
    b = await ProtocolLink.open(url, f"{record_id}-b", token([collection]))
    b.protocol.subscribe([collection], None)
    await b.flush()
    await b.next(SyncedReceived)
    await a.push_all([(1, collection, record_id, updates[0])])
    received: list[bytes] = []
    started = time.perf_counter()
    rest = list(enumerate(updates[1:], start=2))
    for start in range(0, len(rest), push_batch):
        a.protocol.push(
            [
                (seq, collection, record_id, update)
                for seq, update in rest[start : start + push_batch]
            ]
        )
        await a.flush()
    async with asyncio.timeout(600):
        while len(received) < edits + 1:
            event = await b.next(UpdatesReceived)
            received.extend(item.update for item in event.items)
    elapsed = time.perf_counter() - started
    copy: Doc[Any] = Doc()
    for update in received:
        copy.apply_update(update)
    complete = read_fields(copy).get("body") == read_fields(doc)["body"]
    await a.close()
    await b.close()
    return {
        "edits": edits,
        "seconds": elapsed,
        "edits_per_s": edits / elapsed,
        "complete": complete,
        "push_batch": push_batch,
    }


async def relay_only_latency(url: str, samples: int, record_id: str) -> dict[str, Any]:
    """The relay alone: protocol clients without a local store, one update at a time.

    A pushes one single-character update and waits until B (subscribed to the collection)
    receives it, ``samples`` times after 20 warm-up updates. The relay commits each update
    before fanning it out. B's copy is checked against A's text.
    """
    doc: Doc[Any] = Doc()
    updates = [change_text(doc, "x") for _ in range(20 + samples + 1)]
    collection = f"{RAW_COLLECTION}-{record_id}"
    a = await ProtocolLink.open(url, f"{record_id}-a", token([collection]))
    b = await ProtocolLink.open(url, f"{record_id}-b", token([collection]))
    b.protocol.subscribe([collection], None)
    await b.flush()
    await b.next(SyncedReceived)
    values: list[float] = []
    copy: Doc[Any] = Doc()
    received = 0

    async def receive_upto(count: int) -> None:
        nonlocal received
        while received < count:  # cursor-only frames carry no items
            event = await b.next(UpdatesReceived)
            for item in event.items:
                copy.apply_update(item.update)
            received += len(event.items)

    await a.push_all([(1, collection, record_id, updates[0])])
    await receive_upto(1)
    for i, update in enumerate(updates[1:], start=2):
        started = time.perf_counter()
        a.protocol.push([(i, collection, record_id, update)])
        await a.flush()
        await receive_upto(i)  # B holds this very update
        if i > 21:
            values.append(time.perf_counter() - started)
    complete = read_fields(copy).get("body") == read_fields(doc)["body"]
    await a.close()
    await b.close()
    return {"samples": values, "complete": complete}


def record_editor(doc: Doc[Any], replica: str = "bench") -> RecordEditor:
    """An editor of ``doc`` as a replica's store makes one (call it inside a transaction):
    records seeded through the raw protocol have the layout of the code under test."""
    clock: HybridClock = doc.__dict__.setdefault("_bench_clock", HybridClock(replica))

    def stamp(current: Timestamp | None) -> Timestamp:
        now = int(time.time() * 1000)
        return clock.after(current, now) if current else clock.tick(now)

    return RecordEditor(doc, COLLECTION, LwwPolicy(), stamp)


def _captured(doc: Doc[Any], edit: Callable[[RecordEditor], None]) -> bytes:
    """Run ``edit`` in one transaction of ``doc``; the update it made."""
    captured: list[bytes] = []

    def capture(event: TransactionEvent) -> None:
        captured.append(event.update)

    subscription = doc.observe(capture)
    with doc.transaction():
        edit(record_editor(doc))
    doc.unobserve(subscription)
    return captured[0]


def change_text(doc: Doc[Any], char: str) -> bytes:
    """Append ``char`` to the record's ``body`` text (created empty if missing); the update
    made. Appends go to the pycrdt ``Text`` directly (ASCII: character = byte offsets)."""

    def edit(editor: RecordEditor) -> None:
        exists = "body" in editor
        text: Text = editor.text("body")._text
        if exists:
            text.insert(len(text), char)

    return _captured(doc, edit)


def record_doc(i: int) -> Doc[Any]:
    """A small record document (a title, a status, a text), made with the record API."""
    doc: Doc[Any] = Doc()

    def edit(editor: RecordEditor) -> None:
        editor["title"] = f"Job {i}"
        editor["status"] = "open"
        editor.text("body").append(f"Check the boiler at site {i}.")

    _captured(doc, edit)
    return doc


def change(doc: Doc[Any], key: str, value: str) -> bytes:
    """Set one field in one transaction; the update it made."""

    def edit(editor: RecordEditor) -> None:
        editor[key] = value

    return _captured(doc, edit)


@dataclass
class CatchupRun:
    """One reconnect: what changed, how long it took, what went over the wire."""

    remote: int
    local: int
    seconds: float
    bytes: int
    frames: int
    complete: bool
    relay_seconds: float = 0.0  # the relay's own handling time of sub + sv (its /metrics)


@dataclass
class CatchupResult:
    """Catch-up runs of one relay, after a one-off initial sync of the cache."""

    cached: int
    initial_sync_seconds: float
    runs: list[CatchupRun] = field(default_factory=list)


async def ours_catchup(
    relay: Server,
    workdir: Path,
    cached: int,
    scenarios: Sequence[tuple[int, int]],
    runs: int,
) -> CatchupResult:
    """C caches ``cached`` records; per scenario (remote, local) and run: offline, changes, sync.

    Setup (not timed): a seeding link pushes the records to the relay; C's store gets the same
    updates (as if downloaded before) and C does its first sync. Each run: C goes offline,
    the seeding link changes ``remote`` records (acked by the relay), C edits ``local`` other
    records; then ``go_online()`` is timed until C is synced, and the relay's byte and frame
    counters give the traffic. Checked after each run: C holds every remote change and the
    relay every local one.
    """
    docs = [record_doc(i) for i in range(cached)]
    ids = [f"rec-{i}" for i in range(cached)]
    updates = [(COLLECTION, ids[i], docs[i].get_update()) for i in range(cached)]
    seeder = await ProtocolLink.open(relay.url, "seeder", token())
    seq = 0
    for start in range(0, cached, 1000):
        batch = []
        for c, r, u in updates[start : start + 1000]:
            seq += 1
            batch.append((seq, c, r, u))
        await seeder.push_all(batch)
    path = workdir / "c.db"
    store = await LocalStore.open(path, replica_id="c")
    for start in range(0, cached, 1000):
        await store.apply_remote(updates[start : start + 1000])
    await store.close()
    result = CatchupResult(cached, 0.0)
    started = time.perf_counter()
    async with open_replica(workdir, "c", relay.url) as c:
        await c.wait_synced(600)
        result.initial_sync_seconds = time.perf_counter() - started
        for remote, local in scenarios:
            for run in range(runs):
                await c.go_offline()
                marker = f"remote-{remote}-{run}"
                pushes = []
                for i in range(remote):
                    seq += 1
                    pushes.append((seq, COLLECTION, ids[i], change(docs[i], "status", marker)))
                for start in range(0, len(pushes), 1000):
                    await seeder.push_all(pushes[start : start + 1000])
                local_marker = f"local-{local}-{run}"
                local_ids = ids[cached - local :] if local else []
                for record_id in local_ids:
                    async with c.edit(COLLECTION, record_id) as editor:
                        editor["note"] = local_marker
                before = relay.metrics()
                t0 = time.perf_counter()
                c.go_online()
                await c.wait_synced(600)
                seconds = time.perf_counter() - t0
                after = relay.metrics()
                size = sum(
                    after.get(k, 0) - before.get(k, 0)
                    for k in ("crdt_sync_bytes_in_total", "crdt_sync_bytes_out_total")
                )
                frames = sum(
                    after.get(k, 0) - before.get(k, 0)
                    for k in ("crdt_sync_frames_in_total", "crdt_sync_frames_out_total")
                )
                relay_seconds = sum(
                    after.get(k, 0) - before.get(k, 0)
                    for k in (
                        'crdt_sync_message_latency_seconds_sum{type="sub"}',
                        'crdt_sync_message_latency_seconds_sum{type="sv"}',
                        'crdt_sync_message_latency_seconds_sum{type="push"}',
                    )
                )
                complete = True
                for i in range(remote):
                    record = await c.store.get(COLLECTION, ids[i])
                    complete = complete and record["status"] == marker
                if local_ids:
                    fetched = await seeder.fetch([(COLLECTION, r) for r in local_ids])
                    for record_id in local_ids:
                        probe: Doc[Any] = Doc()
                        probe.apply_update(fetched[(COLLECTION, record_id)])
                        note = read_fields(probe).get("note")
                        complete = complete and note == local_marker
                result.runs.append(
                    CatchupRun(
                        remote, local, seconds, int(size), int(frames), complete, relay_seconds
                    )
                )
    await seeder.close()
    return result


# ------------------------------------------------------------------------------ idle connections


async def idle_load(url: str, auth: str, count: int, hold: float) -> None:
    """The load process: ``count`` welcomed, subscribed connections; hold until stdin closes."""
    links: list[ProtocolLink] = []
    limit = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with limit:
            link = await ProtocolLink.open(url, f"idle-{i}", auth)
            link.protocol.subscribe([IDLE_COLLECTION], None)
            await link.flush()
            await link.next(SyncedReceived)
            links.append(link)

    await asyncio.gather(*(one(i) for i in range(count)))
    print(f"ready {len(links)}", flush=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), hold)
    for link in links:
        await link.close()


@dataclass
class IdleResult:
    """Memory of one server process holding idle connections."""

    connections: int
    rss_before: int
    rss_after: int
    held: int  # connections the server reports open (ours: /metrics gauge; peer: -1)

    @property
    def per_connection(self) -> float:
        """Bytes of RSS per connection."""
        return (self.rss_after - self.rss_before) / self.connections


def measure_idle(server: Server, load_command: Sequence[str], count: int) -> IdleResult:
    """Start the load process, wait for ``ready N``, read the server's RSS, stop the load."""
    before = server.rss()
    load = subprocess.Popen(
        list(load_command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    try:
        assert load.stdout is not None
        line = load.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(
                f"idle load failed: {line}{load.stderr.read() if load.stderr else ''}"
            )
        opened = int(line.split()[1])
        if opened != count:
            raise RuntimeError(f"idle load opened {opened} of {count}")
        time.sleep(1.0)  # let the server settle (buffers, GC) before reading its RSS
        after = server.rss()
        held = -1
        if server.name.startswith("relay"):
            held = int(server.metrics().get("crdt_sync_connections", -1))
    finally:
        assert load.stdin is not None
        load.stdin.close()
        try:
            load.wait(60)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait(10)
        for pipe in (load.stdout, load.stderr):
            if pipe is not None:
                pipe.close()
    return IdleResult(count, before, after, held)


# ------------------------------------------------------------------------------ report


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def median(values: Iterable[float]) -> float:
    """Median (nan if empty)."""
    items = list(values)
    return statistics.median(items) if items else float("nan")


@dataclass
class Sides:
    """One measurement for each system (None: not run)."""

    ours: float | None = None
    ours_durable: float | None = None
    peer_memory: float | None = None
    peer_sqlite: float | None = None
    note: str = ""


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "KiB":
        return f"{value / 1024:,.1f} KiB"
    return f"{value:g}"


def _ratio(ours: float | None, theirs: float | None, higher_better: bool) -> str:
    if ours is None or theirs is None or ours == 0 or theirs == 0:
        return "-"
    ratio = ours / theirs if higher_better else theirs / ours
    return f"{ratio:.2f}x"


def render_table(rows: list[tuple[str, str, bool, Sides, str]]) -> str:
    """Rows: (label, unit, higher is better, values, target) -> a markdown table.

    The ratio columns are "how many times better ours is" (ours/theirs for rates,
    theirs/ours for times, bytes and memory), for the default relay against each peer mode.
    """
    header = (
        "| workload | ours | ours --durable | pycrdt-websocket | pycrdt-websocket+SQLite"
        " | ours vs mem | ours vs SQLite | target |"
    )
    lines = [header, "|" + "---|" * 8]
    for label, unit, higher, sides, target in rows:
        lines.append(
            f"| {label} | {_fmt(sides.ours, unit)} | {_fmt(sides.ours_durable, unit)} | "
            f"{_fmt(sides.peer_memory, unit)} | {_fmt(sides.peer_sqlite, unit)} | "
            f"{_ratio(sides.ours, sides.peer_memory, higher)} | "
            f"{_ratio(sides.ours, sides.peer_sqlite, higher)} | {target} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the run


@dataclass
class Config:
    """Sizes of one benchmark run."""

    runs: int
    edits: int
    many_records: int
    samples: int
    cached: int
    catchup_small: tuple[int, int]
    catchup_large: int
    catchup_runs: int
    idle: int
    peers: bool
    peer_catchup_cached: bool
    push_batches: tuple[int, ...] = (1,)  # updates per push frame of the relay-only runs


def raw_edits(config: Config) -> int:
    """Edits of the relay-only run: one frame each, so within the relay's default rate-limit
    burst (1,000 messages/s, 2 s of burst) -- a longer stream of one-edit frames is refused by
    design (replicas batch their queued entries into one push frame)."""
    return min(config.edits, 1500)


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(config: Config, workdir: Path, peer_venv: Path) -> dict[str, Any]:
    """Run every workload; return the raw results (also used to build the table)."""
    results: dict[str, Any] = {"config": config.__dict__.copy(), "ours": {}, "peer": {}}
    python = ensure_peer_venv(peer_venv) if config.peers else None

    for durable in (False, True):
        side = "ours_durable" if durable else "ours"
        relay = start_relay(workdir / side, durable)
        try:
            entry: dict[str, Any] = {
                "throughput_one": [],
                "throughput_many": [],
                "throughput_one_tasks": [],
                "throughput_many_tasks": [],
                "throughput_one_batch": [],
                "throughput_many_batch": [],
                "latency": [],
                "relay_only": [],
                "relay_only_latency": [],
            }
            for run_index in range(config.runs):
                for batch in config.push_batches:
                    log(f"{side}: relay-only throughput run {run_index + 1}, {batch} per frame")
                    edits = raw_edits(config) * min(batch, 16)
                    raw_id = f"raw-{run_index}-b{batch}"
                    key = "relay_only" if batch == 1 else f"relay_only_b{batch}"
                    entry.setdefault(key, []).append(
                        asyncio.run(relay_only_throughput(relay.url, edits, raw_id, batch))
                    )
                for kind, records, mode in (
                    ("throughput_one", 1, ""),
                    ("throughput_many", config.many_records, ""),
                    ("throughput_one_tasks", 1, "tasks"),
                    ("throughput_many_tasks", config.many_records, "tasks"),
                    ("throughput_one_batch", 1, "batch"),
                    ("throughput_many_batch", config.many_records, "batch"),
                ):
                    log(f"{side}: {kind} run {run_index + 1}")
                    path = workdir / side / f"{kind}-{run_index}"
                    path.mkdir(parents=True)
                    entry[kind].append(
                        asyncio.run(
                            ours_throughput(
                                relay.url,
                                path,
                                records,
                                config.edits,
                                f"{kind}-{run_index}",
                                tasks=mode == "tasks",
                                batch=mode == "batch",
                            )
                        )
                    )
                log(f"{side}: relay-only latency run {run_index + 1}")
                entry["relay_only_latency"].append(
                    asyncio.run(
                        relay_only_latency(relay.url, config.samples, f"raw-lat-{run_index}")
                    )
                )
                log(f"{side}: latency run {run_index + 1}")
                path = workdir / side / f"latency-{run_index}"
                path.mkdir(parents=True)
                entry["latency"].append(
                    asyncio.run(ours_latency(relay.url, path, config.samples, f"lat-{run_index}"))
                )
            results["ours"][side] = entry
        finally:
            relay.stop()

    relay = start_relay(workdir / "catchup", durable=False)
    try:
        log(f"ours: catch-up with {config.cached} cached records")
        path = workdir / "catchup" / "replicas"
        path.mkdir(parents=True)
        scenarios = [config.catchup_small, (config.catchup_large, 0)]
        catchup = asyncio.run(
            ours_catchup(relay, path, config.cached, scenarios, config.catchup_runs)
        )
        results["ours"]["catchup"] = {
            "cached": catchup.cached,
            "initial_sync_seconds": catchup.initial_sync_seconds,
            "runs": [r.__dict__ for r in catchup.runs],
        }
        log(f"ours: {config.idle} idle connections")
        load = [
            sys.executable, str(Path(__file__).resolve()), "_idle-load", "--url", relay.url,
            "--token", token([COLLECTION, IDLE_COLLECTION]), "--count", str(config.idle),
        ]  # fmt: skip
        results["ours"]["idle"] = measure_idle(relay, load, config.idle).__dict__
    finally:
        relay.stop()

    if python is not None:
        for store in (False, True):
            side = "peer_sqlite" if store else "peer_memory"
            server = start_peer(python, workdir / side, store)
            try:
                entry = {"throughput_one": [], "throughput_many": [], "latency": []}
                for run_index in range(config.runs):
                    for kind, records in (
                        ("throughput_one", 1),
                        ("throughput_many", config.many_records),
                    ):
                        log(f"{side}: {kind} run {run_index + 1}")
                        entry[kind].append(
                            run_peer_client(
                                python,
                                server.url,
                                "--workload",
                                "throughput",
                                "--records",
                                str(records),
                                "--edits",
                                str(config.edits),
                                "--prefix",
                                f"{kind}-{run_index}",
                            )
                        )
                    log(f"{side}: latency run {run_index + 1}")
                    entry["latency"].append(
                        run_peer_client(
                            python,
                            server.url,
                            "--workload",
                            "latency",
                            "--samples",
                            str(config.samples),
                            "--prefix",
                            f"lat-{run_index}",
                        )
                    )
                if not store:
                    remote, local = config.catchup_small
                    if config.peer_catchup_cached:
                        log(f"{side}: catch-up with {config.cached} cached records")
                        entry["catchup_small"] = run_peer_client(
                            python, server.url, "--workload", "catchup",
                            "--records", str(config.cached), "--remote", str(remote),
                            "--local", str(local), "--runs", str(config.catchup_runs),
                            "--prefix", "cu-small", timeout=3600,
                        )  # fmt: skip
                    log(f"{side}: catch-up of {config.catchup_large} changed records")
                    entry["catchup_large"] = run_peer_client(
                        python, server.url, "--workload", "catchup",
                        "--records", str(config.catchup_large),
                        "--remote", str(config.catchup_large), "--local", "0",
                        "--runs", str(config.catchup_runs), "--prefix", "cu-large",
                        timeout=3600,
                    )  # fmt: skip
                    log(f"{side}: {config.idle} idle connections")
                    load = [
                        str(python), str(PEER_SCRIPT), "idle", "--url", server.url,
                        "--count", str(config.idle),
                    ]  # fmt: skip
                    entry["idle"] = measure_idle(server, load, config.idle).__dict__
                results["peer"][side] = entry
            finally:
                server.stop()
    return results


def summarize(results: dict[str, Any], config: Config) -> tuple[str, list[str]]:
    """The table (markdown) and the list of target verdicts."""
    ours, peer = results["ours"], results["peer"]

    def per_side(getter: Callable[[dict[str, Any]], float | None]) -> Sides:
        sides = Sides()
        for name in ("ours", "ours_durable"):
            if name in ours:
                setattr(sides, name, getter(ours[name]))
        for name in ("peer_memory", "peer_sqlite"):
            if name in peer:
                setattr(sides, name, getter(peer[name]))
        return sides

    def rate(kind: str) -> Callable[[dict[str, Any]], float | None]:
        # The peer has one producer only (no await per edit): its rows repeat for each of ours.
        def get(e: dict[str, Any]) -> float | None:
            runs = e.get(kind) or e.get(kind.removesuffix("_tasks").removesuffix("_batch"))
            return median(r["edits_per_s"] for r in runs) if runs else None

        return get

    def lat(q: float, kind: str = "latency") -> Callable[[dict[str, Any]], float | None]:
        return lambda e: (
            median(percentile(r["samples"], q) * 1000 for r in e[kind]) if e.get(kind) else None
        )

    rows: list[tuple[str, str, bool, Sides, str]] = []
    one = per_side(rate("throughput_one"))
    many = per_side(rate("throughput_many"))
    p50 = per_side(lat(0.5))
    p99 = per_side(lat(0.99))
    one_tasks = per_side(rate("throughput_one_tasks"))
    many_tasks = per_side(rate("throughput_many_tasks"))
    one_batch = per_side(rate("throughput_one_batch"))
    many_batch = per_side(rate("throughput_many_batch"))
    label = f"{config.edits} edits"
    rows.append((f"throughput, 1 record, {label} one after the other", "/s", True, one, ">= 5x"))
    rows.append(
        (f"throughput, {config.many_records} records, {label} one after the other", "/s", True,
         many, ">= 5x")
    )  # fmt: skip
    rows.append((f"throughput, 1 record, {label} from tasks", "/s", True, one_tasks, ">= 5x"))
    rows.append(
        (f"throughput, {config.many_records} records, {label} from tasks", "/s", True,
         many_tasks, ">= 5x")
    )  # fmt: skip
    rows.append((f"throughput, 1 record, {label} in a batch", "/s", True, one_batch, ">= 5x"))
    rows.append(
        (f"throughput, {config.many_records} records, {label} in a batch", "/s", True,
         many_batch, ">= 5x")
    )  # fmt: skip
    for batch in config.push_batches:
        key = "relay_only" if batch == 1 else f"relay_only_b{batch}"
        edits = raw_edits(config) * min(batch, 16)
        rows.append(
            (
                f"relay only: protocol clients, no local store, 1 record, {edits} edits,"
                f" {batch} per push frame",
                "/s",
                True,
                per_side(rate(key)),
                "",
            )
        )
    rows.append(("latency p50 (edit on A -> event on B)", "ms", False, p50, ""))
    rows.append(("latency p99", "ms", False, p99, "< 1 ms"))
    rows.append(
        ("latency p50, relay only (protocol clients, no local store)", "ms", False,
         per_side(lat(0.5, "relay_only_latency")), "")
    )  # fmt: skip
    rows.append(
        ("latency p99, relay only", "ms", False, per_side(lat(0.99, "relay_only_latency")), "")
    )  # fmt: skip

    catchup = ours.get("catchup")
    small_r, small_l = config.catchup_small
    small = Sides()
    large = Sides()
    small_bytes = Sides()
    large_bytes = Sides()
    if catchup:
        runs = catchup["runs"]
        small_runs = [r for r in runs if (r["remote"], r["local"]) == (small_r, small_l)]
        large_runs = [r for r in runs if (r["remote"], r["local"]) == (config.catchup_large, 0)]
        small.ours = median(r["seconds"] * 1000 for r in small_runs)
        large.ours = median(r["seconds"] * 1000 for r in large_runs)
        small_bytes.ours = median(r["bytes"] for r in small_runs)
        large_bytes.ours = median(r["bytes"] for r in large_runs)
    pm = peer.get("peer_memory", {})
    if "catchup_small" in pm:
        small.peer_memory = median(s * 1000 for s in pm["catchup_small"]["seconds"])
        small_bytes.peer_memory = median(pm["catchup_small"]["bytes"])
    if "catchup_large" in pm:
        large.peer_memory = median(s * 1000 for s in pm["catchup_large"]["seconds"])
        large_bytes.peer_memory = median(pm["catchup_large"]["bytes"])
    cached_note = f"{config.cached:,} cached"
    rows.append(
        (f"catch-up {small_r} remote + {small_l} local ({cached_note})", "ms", False, small,
         "well under 1 s")
    )  # fmt: skip
    rows.append(("  bytes on the wire (payload)", "B", False, small_bytes, "~ changes"))
    large_label = f"catch-up {config.catchup_large} remote (ours: {cached_note}; peer: "
    large_label += f"{config.catchup_large} cached)"
    rows.append((large_label, "ms", False, large, f"<= {TARGET_CATCHUP_MS:.0f} ms"))
    rows.append(("  bytes on the wire (payload)", "B", False, large_bytes, ""))
    if catchup:
        relay_part = Sides(ours=median(r["relay_seconds"] * 1000 for r in large_runs))
        rows.append(("  of which the relay's handling (sub+sv)", "ms", False, relay_part, ""))
    idle = Sides()
    if "idle" in ours:
        idle.ours = ours["idle"]["rss_after"] - ours["idle"]["rss_before"]
        idle.ours /= ours["idle"]["connections"]
    if "idle" in pm:
        idle.peer_memory = (pm["idle"]["rss_after"] - pm["idle"]["rss_before"]) / pm["idle"][
            "connections"
        ]
    rows.append((f"memory per idle connection ({config.idle} held)", "KiB", False, idle, ""))
    table = render_table(rows)

    verdicts: list[str] = []
    for sides, what in (
        (one, "1 record, edits one after the other"),
        (many, f"{config.many_records} records, edits one after the other"),
        (one_tasks, "1 record, edits from tasks"),
        (many_tasks, f"{config.many_records} records, edits from tasks"),
        (one_batch, "1 record, edits in a batch"),
        (many_batch, f"{config.many_records} records, edits in a batch"),
    ):
        if sides.ours and sides.peer_memory:
            ratio = sides.ours / sides.peer_memory
            verdicts.append(
                f"throughput >= {TARGET_RATIO:g}x pycrdt-websocket in memory ({what}): "
                f"{ratio:.2f}x -> {'MET' if ratio >= TARGET_RATIO else 'NOT MET'}"
            )
    if p99.ours is not None:
        verdicts.append(
            f"p99 < {TARGET_P99_MS:g} ms: {p99.ours:.2f} ms -> "
            f"{'MET' if p99.ours < TARGET_P99_MS else 'NOT MET'}"
        )
    if large.ours is not None:
        verdicts.append(
            f"{config.catchup_large}-record catch-up <= 3 x {CATCHUP_BOUND_MS:g} ms: "
            f"{large.ours:.0f} ms -> {'MET' if large.ours <= TARGET_CATCHUP_MS else 'NOT MET'}"
        )
    incomplete = [name for name, value in _completeness(results).items() if not value]
    if incomplete:
        verdicts.append("INCOMPLETE (a receiver missed edits): " + ", ".join(incomplete))
    else:
        verdicts.append("every receiving replica held every edit (checked after each run)")
    return table, verdicts


def _completeness(results: dict[str, Any]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for group in ("ours", "peer"):
        for side, entry in results[group].items():
            if side == "catchup":
                found["ours catch-up"] = all(r["complete"] for r in entry["runs"])
                continue
            if not isinstance(entry, dict):
                continue
            for kind, value in entry.items():
                if isinstance(value, list):
                    found[f"{side} {kind}"] = all(r.get("complete", True) for r in value)
                elif isinstance(value, dict) and "complete" in value:
                    found[f"{side} {kind}"] = bool(value["complete"])
    return found


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="crdt-sync vs pycrdt-websocket: throughput, latency, catch-up, idle memory."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run (~2 min)")
    parser.add_argument("--runs", type=int, help="runs per throughput/latency workload (3)")
    parser.add_argument("--edits", type=int, help="single-character edits per run (1000)")
    parser.add_argument("--records", type=int, help="records of the many-records run (100)")
    parser.add_argument("--samples", type=int, help="latency samples per run (200)")
    parser.add_argument("--cached", type=int, help="records cached by the catch-up replica (10000)")
    parser.add_argument("--catchup-runs", type=int, help="runs per catch-up scenario (3)")
    parser.add_argument("--idle", type=int, help="idle connections to open (1000)")
    parser.add_argument("--no-peers", action="store_true", help="skip pycrdt-websocket")
    parser.add_argument(
        "--peer-catchup-cached",
        action="store_true",
        help="also run the peer's catch-up with --cached records (one socket per cached record:"
        " slow, minutes at 10,000)",
    )
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--push-batch",
        default="1,16,128",
        help="updates per push frame of the relay-only runs, comma-separated (1,16,128); a"
        " run of N per frame pushes min(N, 16) times the single-update run's edits",
    )
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    """Sizes from the command line (``--quick`` changes the defaults)."""
    quick = args.quick

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    cached = pick(args.cached, 10_000, 2_000)
    return Config(
        runs=pick(args.runs, 3, 1),
        edits=pick(args.edits, 1000, 300),
        many_records=pick(args.records, 100, 50),
        samples=pick(args.samples, 200, 100),
        cached=cached,
        catchup_small=(min(100, cached), min(100, cached // 2)),
        catchup_large=min(1000, cached),
        catchup_runs=pick(args.catchup_runs, 3, 1),
        idle=pick(args.idle, 1000, 200),
        peers=not args.no_peers,
        peer_catchup_cached=args.peer_catchup_cached,
        push_batches=tuple(int(n) for n in args.push_batch.split(",")),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run, print the table and the verdicts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_idle-load"]:
        load = argparse.ArgumentParser()
        load.add_argument("--url", required=True)
        load.add_argument("--token", required=True)
        load.add_argument("--count", type=int, required=True)
        load.add_argument("--hold", type=float, default=300.0)
        a = load.parse_args(argv[1:])
        asyncio.run(idle_load(a.url, a.token, a.count, a.hold))
        return 0
    args = _parse(argv)
    config = config_from(args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    started = time.perf_counter()
    try:
        results = run(config, workdir, args.peer_venv)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "pycrdt": getattr(pycrdt, "__version__", "?"),
        "loadavg_at_end": os.getloadavg(),
    }
    table, verdicts = summarize(results, config)
    print(table)
    print()
    for verdict in verdicts:
        print(f"- {verdict}")
    print(f"\n(total {results['seconds']:.0f} s; load average at end {os.getloadavg()[0]:.2f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
