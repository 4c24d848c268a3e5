"""Fuzz the running relay with random and mutated frames while good replicas keep syncing.

A thread runs two well-behaved replicas on their own event loop for the whole test: one
pushes entries one by one (each acknowledged before the next), the other is subscribed and
must see every acknowledged entry live. Meanwhile hypothesis opens connection after
connection and sends random bytes, random msgpack structures and mutations of valid frames.
The relay must stay up, answer a final ping on every connection it did not close, and the good
replicas must lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import msgpack
import pytest
from helpers.relay import RelayClient, RelayProcess, start_relay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdt_sync import codec
from crdt_sync.messages import (
    Error,
    Hello,
    Ping,
    Pong,
    Push,
    PushItem,
    StateVectorItem,
    StateVectors,
    Subscribe,
)
from crdt_sync.protocol import Acked, UpdatesReceived

TENANT = "fuzz"
FINAL_PING = 987654321


def _note(text: str, client_id: int | None = None) -> bytes:
    doc = Doc() if client_id is None else Doc(client_id=client_id)
    doc.get("notes", type=Text).insert(0, text)
    return doc.get_update()


class GoodReplicas(threading.Thread):
    """A writer and a subscribed reader syncing on their own loop until stopped."""

    def __init__(self, relay: RelayProcess) -> None:
        super().__init__(daemon=True)
        self.relay = relay
        self.stop_flag = threading.Event()
        self.acked: set[int] = set()
        self.seen_live: set[str] = set()
        self.stored: set[str] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self.main())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def main(self) -> None:
        token = self.relay.token(TENANT, ["jobs"])
        async with (
            RelayClient.open(self.relay.url, token, "good-writer") as writer,
            RelayClient.open(self.relay.url, token, "good-reader") as reader,
        ):
            await reader.catch_up(["jobs"], None)
            wanted: set[str] | None = None
            all_seen = asyncio.Event()

            async def watch() -> None:
                while True:
                    event = await reader.next_event(UpdatesReceived, within=120)
                    self.seen_live.update(i.record_id for i in event.items)
                    if wanted is not None and wanted <= self.seen_live:
                        all_seen.set()

            watcher = asyncio.create_task(watch())
            seq = 0
            while not self.stop_flag.is_set():
                seq += 1
                acked, rejected = await writer.push_and_settle(
                    [(seq, "jobs", f"good-{seq}", _note(f"good {seq}"))]
                )
                assert not rejected, rejected
                self.acked |= acked
            wanted = {f"good-{s}" for s in self.acked}
            if wanted <= self.seen_live:
                all_seen.set()
            async with asyncio.timeout(20):
                await all_seen.wait()
            # Stop the watcher by closing the reader's websocket, not by cancelling it: on
            # Python 3.11, asyncio.wait_for (inside next_event) swallows a cancellation that
            # comes as a frame arrives (here the cursor the relay sends after each commit).
            await reader.ws.close()
            with contextlib.suppress(ConnectionClosed):
                await watcher
            fetched = await writer.fetch([("jobs", r) for r in sorted(wanted)])
            self.stored = {key[1] for key in fetched}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, GoodReplicas]]:
    relay = start_relay(tmp_path_factory.mktemp("fuzz") / "data", args=["--max-items", "50"])
    good = GoodReplicas(relay)
    good.start()
    yield relay, good
    good.stop_flag.set()
    good.join(30)
    relay.kill()


def _valid_frames(token: str) -> list[bytes]:
    update = _note("fuzz", client_id=42)  # deterministic: hypothesis replays strategies
    return [
        codec.encode(Hello(token, "fuzzer")),
        codec.encode(Push((PushItem(1, "jobs", "fuzz-1", update),))),
        codec.encode(Push((PushItem(1, "jobs", "fuzz-1", update), PushItem(2, "x", "y", b"\x00")))),
        codec.encode(Subscribe(("jobs",), None)),
        codec.encode(Subscribe(("jobs",), 3)),
        codec.encode(StateVectors((StateVectorItem("jobs", "good-1", b"\x00"),), True)),
        codec.encode(StateVectors((StateVectorItem("jobs", "fuzz-1", b"\x01\x02"),), False)),
        codec.encode(Ping(1)),
        codec.encode(Pong(1)),
        codec.encode(Error("bad_frame", "x", False)),
    ]


_TOKEN_FOR_STRATEGY = "filled-in-by-the-test"

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=6) | st.integers(-1000, 1000), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def random_structures(draw: st.DrawFn) -> bytes:
    fields = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "items",
                    "v",
                    "token",
                    "replica",
                    "collections",
                    "cursor",
                    "id",
                    "done",
                    "seqs",
                    "code",
                ]
            ),
            msgpack_values,
            max_size=4,
        )
    )
    kind = draw(
        st.sampled_from(
            ["hello", "push", "sub", "sv", "ping", "pong", "error", "welcome", "ack", "nope", 7]
        )
    )
    payload = {"t": kind, **fields}
    return msgpack.packb(payload, use_bin_type=True)  # type: ignore[no-any-return]


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(_valid_frames(_TOKEN_FOR_STRATEGY))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        position = draw(st.integers(min_value=0, max_value=max(0, len(frame) - 1)))
        if action == "flip" and frame:
            frame[position] = draw(st.integers(min_value=0, max_value=255))
        elif action == "truncate":
            del frame[position:]
        elif action == "insert":
            frame[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif frame:
            del frame[position]
    return bytes(frame)


frames = st.one_of(st.binary(max_size=300), random_structures(), mutated_frames())


async def _fuzz_connection(relay: RelayProcess, hello_first: bool, payload: list[bytes]) -> None:
    token = relay.token(TENANT, ["jobs"])
    async with connect(relay.url, compression=None, max_size=None, close_timeout=2) as ws:
        with contextlib.suppress(ConnectionClosed):
            if hello_first:
                await ws.send(codec.encode(Hello(token, "fuzzer")))
                await ws.recv()
            for frame in payload:
                await ws.send(frame.replace(_TOKEN_FOR_STRATEGY.encode(), token.encode()))
            await ws.send(codec.encode(Ping(FINAL_PING)))
            async with asyncio.timeout(10):
                async for message in ws:
                    assert isinstance(message, bytes)
                    decoded = codec.decode(message, 2**31)  # the relay only sends valid frames
                    if isinstance(decoded, Pong) and decoded.id == FINAL_PING:
                        return  # still open and answering: the garbage was valid enough
                    if isinstance(decoded, Error) and decoded.fatal:
                        assert decoded.code in {
                            "bad_frame", "not_ready", "forbidden", "too_big", "too_many_items",
                            "rate_limited", "bad_token", "token_expired", "unsupported_version",
                        }, decoded  # fmt: skip


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hello_first=st.booleans(), payload=st.lists(frames, min_size=1, max_size=6))
def test_relay_survives_random_and_mutated_frames(
    fuzzed: tuple[RelayProcess, GoodReplicas], hello_first: bool, payload: list[bytes]
) -> None:
    relay, good = fuzzed
    asyncio.run(_fuzz_connection(relay, hello_first, payload))
    assert relay.process.poll() is None, relay.log()
    assert good.error is None, good.error


def test_good_replicas_lost_nothing_while_fuzzed(
    fuzzed: tuple[RelayProcess, GoodReplicas],
) -> None:
    relay, good = fuzzed
    good.stop_flag.set()
    good.join(60)
    assert not good.is_alive()
    assert good.error is None, repr(good.error)
    assert len(good.acked) > 10, "the good writer barely ran during the fuzzing"
    wanted = {f"good-{s}" for s in good.acked}
    assert wanted <= good.seen_live, sorted(wanted - good.seen_live)[:5]
    assert wanted <= good.stored, sorted(wanted - good.stored)[:5]
    status, _ = relay.get("/healthz")
    assert status == 200
    assert "Traceback" not in relay.log(), relay.log()[-3000:]
    assert Acked  # imported for the reader of this file: acks are what `acked` holds
