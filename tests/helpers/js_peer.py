"""A real JavaScript Yjs peer (``tests/js/yjs_peer.mjs``: yjs + y-websocket or
@hocuspocus/provider under Node) driven from a test over stdin/stdout JSON lines.

``await JsPeer.start(provider, url, token, docs)``, then ``await peer.call(op, **args)``
(raises ``AssertionError`` with the JS error on failure) and ``await peer.event(pred)`` (waits,
under a timeout, for an event line matching ``pred``; events are kept, so an event that came
before the wait counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

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
    ) -> JsPeer:
        """Start a peer with ``docs`` open; ``tokens`` gives some documents their own token."""
        node = require_node()
        config = {
            "provider": provider,
            "url": url,
            "token": token,
            "docs": list(docs),
            "connect": connect,
            "tokens": tokens or {},
        }
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
