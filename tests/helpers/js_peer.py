"""Real JavaScript Yjs peers under Node, driven from a test over stdin/stdout JSON lines.

- :class:`JsPeer` (``tests/js/yjs_peer.mjs``: yjs + y-websocket or @hocuspocus/provider): ``await
  JsPeer.start(provider, url, token, docs)``, then ``await peer.call(op, **args)`` (raises
  ``AssertionError`` with the JS error on failure) and ``await peer.event(pred)`` (waits, under a
  timeout, for an event line matching ``pred``; events are kept, so an event that came before
  the wait counts). Its records are read and written with ``crdt_sync/js/record.mjs``.
- :class:`JsRecordPeer` (``tests/js/record_peer.mjs``): JavaScript replicas of records without
  a network, synchronous, for the cross-language property tests.

:func:`to_js`, :func:`canonical` and :func:`conflict_to_js` put Python values and conflicts in
the JSON shapes the JS side uses (bytes as ``{"$bytes": base64}``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from crdt_sync.records.layout import Conflict, Written
from helpers.node import JS_DIR, require_node

TIMEOUT = 20.0


class JsPeer:
    """One Node process running ``yjs_peer.mjs``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.stderr = b""

    @classmethod
    async def start(
        cls,
        provider: str,
        url: str,
        token: str,
        docs: Sequence[str],
        *,
        connect: bool = True,
        tokens: dict[str, str] | None = None,
        replica: str | None = None,
    ) -> JsPeer:
        """Start a peer with ``docs`` open; ``tokens`` gives some documents their own token,
        ``replica`` is the replica id of its clock (``js-<pid>`` by default)."""
        node = require_node()
        config = {
            "provider": provider,
            "url": url,
            "token": token,
            "docs": list(docs),
            "connect": connect,
            "tokens": tokens or {},
        }
        if replica is not None:
            config["replica"] = replica
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "yjs_peer.mjs"),
            json.dumps(config),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        peer = cls(process)
        await peer.event(lambda e: e.get("event") == "ready")
        return peer

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = json.loads(raw)
            if "id" in line:
                future = self._replies.pop(line["id"], None)
                if future is not None and not future.done():
                    future.set_result(line)
                continue
            async with self._changed:
                self.events.append(line)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()  # exited: wake the waiters

    async def call(self, op: str, within: float = TIMEOUT, **args: Any) -> dict[str, Any]:
        """Run one command in the JS peer and return its reply."""
        assert self.process.stdin is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ident] = future
        self.process.stdin.write(json.dumps({"id": ident, "op": op, **args}).encode() + b"\n")
        await self.process.stdin.drain()
        try:
            reply = await asyncio.wait_for(future, within)
        except TimeoutError:
            raise AssertionError(f"JS peer: no reply to {op} within {within}s") from None
        assert reply["ok"], f"JS peer {op} failed: {reply.get('error')}"
        return reply

    async def event(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = TIMEOUT
    ) -> dict[str, Any]:
        """The first event (already received or coming) that matches ``predicate``."""

        async def scan() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for event in self.events:
                        if predicate(event):
                            return event
                    if self._reader.done():
                        raise AssertionError(f"JS peer exited; events: {self.events}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), within)
        except TimeoutError:
            raise AssertionError(f"JS peer: no such event in {within}s: {self.events}") from None

    async def close(self) -> None:
        """Stop the Node process."""
        with contextlib.suppress(Exception):
            await self.call("quit", within=5)
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        assert self.process.stderr is not None
        self.stderr = await self.process.stderr.read()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class JsRecordPeer:
    """One Node process running ``tests/js/record_peer.mjs``: JavaScript replicas of records
    (yjs + ``crdt_sync/js/record.mjs``), no network. Synchronous, for property tests: one
    process serves many examples (``call`` is one line out, one line back)."""

    def __init__(self) -> None:
        node = require_node()
        self.process = subprocess.Popen(
            [node, str(JS_DIR / "record_peer.mjs")],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._ids = itertools.count(1)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one command and return its reply (``AssertionError`` with the JS error)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        ident = next(self._ids)
        self.process.stdin.write(json.dumps({"id": ident, "op": op, **args}).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"record_peer.mjs exited: {self.process.stderr.read().decode()}")
        reply: dict[str, Any] = json.loads(line)
        assert reply["id"] == ident
        assert reply["ok"], f"record_peer.mjs {op} failed: {reply.get('error')}"
        return reply

    def close(self) -> None:
        """Stop the Node process."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def to_js(value: Any) -> Any:
    """A plain Python value as JSON for the JS peers (bytes as ``{"$bytes": base64}``)."""
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: to_js(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_js(v) for v in value]
    return value


def canonical(value: Any) -> str:
    """A value (Python's, or a JS peer's JSON) as one string: equal strings, equal values.

    Numbers compare as JavaScript numbers (an integral float within 2**53 is an int, an int
    beyond it is a float, as JSON from JavaScript parses); ``True`` is not ``1``."""

    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer() and abs(v) <= 2**53:
            return int(v)
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
            return float(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(to_js(value)), sort_keys=True, ensure_ascii=False)


def conflict_to_js(conflict: Conflict) -> dict[str, Any]:
    """A :class:`~crdt_sync.records.layout.Conflict` shaped as record.mjs ``recordConflicts``."""

    def side(w: Written) -> dict[str, Any]:
        return {"kind": w.kind.value, "value": w.value, "ts": w.ts.encode() if w.ts else None}

    return {
        "key": conflict.key,
        "slot": list(conflict.slot),
        "lost": side(conflict.lost),
        "won": side(conflict.won),
    }
