"""Limits: each offender gets a clear error frame and a close; other connections carry on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.relay import RelayClient, RelayProcess, start_relay
from pycrdt import Doc, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdt_sync import codec
from crdt_sync.messages import Hello, Ping, Push, PushItem
from crdt_sync.protocol import ClientProtocol

MAX_FRAME = 4096
MAX_ITEMS = 10
RATE = 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    relay = start_relay(
        tmp_path_factory.mktemp("limits") / "data",
        args=[
            "--max-frame-bytes", str(MAX_FRAME),
            "--max-items", str(MAX_ITEMS),
            "--rate-limit", str(RATE),
        ],
    )  # fmt: skip
    yield relay
    relay.kill()


def _note(text: str, client_id: int = 1) -> bytes:
    doc = Doc(client_id=client_id)
    doc.get("notes", type=Text).insert(0, text)
    return doc.get_update()


async def _offend(url: str, token: str, frames: list[bytes]) -> tuple[list[object], int | None]:
    """Handshake, send ``frames``, return what came back until the close, and its code."""
    received: list[object] = []
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.send(codec.encode(Hello(token, "offender")))
        received.append(codec.decode(await ws.recv(), 2**30))
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await ws.send(frame)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(10):
                async for message in ws:
                    assert isinstance(message, bytes)
                    received.append(codec.decode(message, 2**30))
        await ws.wait_closed()
        code = ws.close_code
    return received[1:], code


def _errors(received: list[object]) -> list[tuple[str, bool]]:
    return [(m.code, m.fatal) for m in received if type(m).__name__ == "Error"]  # type: ignore[attr-defined]


async def _bystander_still_works(relay: RelayProcess, bystander: RelayClient, seq: int) -> None:
    acked, _ = await bystander.push_and_settle([(seq, "jobs", f"ok-{seq}", _note("fine"))])
    assert acked == {seq}
    status, _ = relay.get("/healthz")
    assert status == 200


@pytest.mark.asyncio
async def test_oversized_frame_gets_too_big_then_close(limited: RelayProcess) -> None:
    token = limited.token("limits", ["jobs"])
    async with RelayClient.open(limited.url, token, "bystander") as bystander:
        big = codec.encode(Push((PushItem(1, "jobs", "j", b"\x00" * (MAX_FRAME + 10)),)))
        received, code = await _offend(limited.url, token, [big])
        assert _errors(received) == [("too_big", True)]
        assert code == 1009
        await _bystander_still_works(limited, bystander, 1)


@pytest.mark.asyncio
async def test_frame_beyond_the_websocket_limit_is_cut_by_websockets(
    limited: RelayProcess,
) -> None:
    token = limited.token("limits", ["jobs"])
    async with RelayClient.open(limited.url, token, "bystander") as bystander:
        huge = codec.encode(Push((PushItem(1, "jobs", "j", b"\x00" * (MAX_FRAME + 100_000)),)))
        received, code = await _offend(limited.url, token, [huge])
        assert received == [] and code == 1009
        await _bystander_still_works(limited, bystander, 2)


@pytest.mark.asyncio
async def test_too_many_items_gets_too_many_items(limited: RelayProcess) -> None:
    token = limited.token("limits", ["jobs"])
    async with RelayClient.open(limited.url, token, "bystander") as bystander:
        items = tuple(PushItem(i, "jobs", f"r{i}", _note("x")) for i in range(1, MAX_ITEMS + 2))
        received, code = await _offend(limited.url, token, [codec.encode(Push(items))])
        assert _errors(received) == [("too_many_items", True)]
        assert code == 1008
        await _bystander_still_works(limited, bystander, 3)
        # nothing of the refused frame was stored
        assert await bystander.fetch([("jobs", "r1")]) == {}


@pytest.mark.asyncio
async def test_rate_limit_gets_rate_limited(limited: RelayProcess) -> None:
    token = limited.token("limits", ["jobs"])
    async with RelayClient.open(limited.url, token, "bystander") as bystander:
        flood = [codec.encode(Ping(i)) for i in range(1, 4 * RATE)]
        received, _ = await _offend(limited.url, token, flood)
        pongs = [m for m in received if type(m).__name__ == "Pong"]
        assert _errors(received) == [("rate_limited", True)]
        assert 0 < len(pongs) < len(flood)  # the burst was served, the flood was not
        await _bystander_still_works(limited, bystander, 4)


@pytest.mark.asyncio
async def test_text_and_garbage_frames_get_bad_frame(limited: RelayProcess) -> None:
    token = limited.token("limits", ["jobs"])
    for frame in (b"\xc1garbage", "text is not allowed"):
        received, code = await _offend(limited.url, token, [frame])  # type: ignore[list-item]
        assert _errors(received) == [("bad_frame", True)]
        assert code == 1008


@pytest.mark.asyncio
async def test_slow_reader_is_disconnected_without_stalling_others(tmp_path: Path) -> None:
    # In-process relay with a tiny send queue (real websockets, real SQLite).
    from crdt_sync.server.relay import Relay, RelayConfig
    from crdt_sync.server.tokens import mint, secret_verifier
    from websockets.asyncio.client import connect as ws_connect

    config = RelayConfig(
        port=0,
        data_dir=tmp_path / "data",
        verifier=secret_verifier("s"),
        rate_limit=0,
        send_queue_frames=8,
    )
    relay = Relay(config)
    await relay.start()
    token = mint("s", "acme", ["jobs"], 600)
    try:
        async with (
            RelayClient.open(relay.url, token, "writer") as writer,
            RelayClient.open(relay.url, token, "watcher") as watcher,
        ):
            await watcher.catch_up(["jobs"], None)
            # the slow one subscribes, then never reads again
            async with ws_connect(
                relay.url, compression=None, max_queue=1, close_timeout=0.5
            ) as slow_ws:
                slow = RelayClient(slow_ws, ClientProtocol("slow", token))
                await slow.flush()
                await slow.wait_for(lambda e: type(e).__name__ == "Welcomed")
                await slow.catch_up(["jobs"], None)
                payload = b"y" * 2000
                seq = 0
                for _ in range(400):
                    batch = []
                    for _ in range(10):
                        seq += 1
                        doc = Doc(client_id=seq)
                        doc.get("notes", type=Text).insert(0, payload.decode())
                        batch.append((seq, "jobs", f"r{seq}", doc.get_update()))
                    acked, _ = await writer.push_and_settle(batch)
                    assert len(acked) == 10
                    if (
                        not relay.native.connections
                        or all(c.replica != "slow" for c in relay.native.connections)
                        or any(c.too_slow for c in relay.native.connections)
                    ):
                        break
                assert any(c.too_slow for c in relay.native.connections) or all(
                    c.replica != "slow" for c in relay.native.connections
                ), "the slow reader was never cut off"
            # the watcher kept receiving live updates all along
            last = await watcher.wait_for(
                lambda e: (
                    type(e).__name__ == "UpdatesReceived"
                    and any(i.record_id == f"r{seq}" for i in e.items)
                )  # type: ignore[union-attr]
            )
            assert last is not None
    finally:
        await relay.shutdown()
