"""The relay's Yjs endpoints at the byte level, with raw websockets clients (real relay process):
the reference server behaviours clients depend on (docs/yjs.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from helpers.relay import RelayProcess, start_relay
from pycrdt import Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdt_sync.yjs.hocuspocus import MessageType as HP
from crdt_sync.yjs.hocuspocus import encode_frame
from crdt_sync.yjs.lib0 import Reader, write_var_string, write_var_uint
from crdt_sync.yjs.y_websocket import (
    AwarenessReceived,
    PermissionDenied,
    StateVectorReceived,
    SyncType,
    UpdateReceived,
    decode_message,
    encode_query_awareness,
    encode_sync,
)

WAIT = 10.0
RATE = 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    relay = start_relay(
        tmp_path_factory.mktemp("yjs-limits") / "data", args=["--rate-limit", str(RATE)]
    )
    yield relay
    relay.kill()


def _update(key: str, value: object, client_id: int = 7) -> bytes:
    doc: Doc = Doc(client_id=client_id)
    doc.get("fields", type=Map)[key] = value
    return doc.get_update()


def _sync(kind: SyncType, data: bytes) -> bytes:
    return write_var_uint(0) + encode_sync(kind, data)


async def _recv(ws: ClientConnection) -> bytes:
    message = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(message, bytes)
    return message


async def _open_yjs(relay: RelayProcess, path: str = "jobs/job-1") -> ClientConnection:
    token = relay.token("acme", ["jobs"])
    ws = await connect(f"{relay.url}/yjs/{path}?token={token}")
    first = decode_message(await _recv(ws))
    assert isinstance(first, StateVectorReceived)  # the relay's SyncStep1 comes first
    return ws


@pytest.mark.asyncio
async def test_y_websocket_handshake_echo_and_query_awareness(relay: RelayProcess) -> None:
    async with await _open_yjs(relay) as a, await _open_yjs(relay) as b:
        update = _update("status", "open")
        await a.send(_sync(SyncType.UPDATE, update))
        # Echoed to every connection, the sender included.
        assert decode_message(await _recv(a)) == UpdateReceived(update, step2=False)
        assert decode_message(await _recv(b)) == UpdateReceived(update, step2=False)
        # SyncStep1 is answered with SyncStep2 and then the relay's own SyncStep1.
        await b.send(_sync(SyncType.STEP1, b"\x00"))
        step2 = decode_message(await _recv(b))
        assert isinstance(step2, UpdateReceived) and step2.step2
        check: Doc = Doc()
        check.apply_update(step2.update)
        assert check.get("fields", type=Map)["status"] == "open"
        assert isinstance(decode_message(await _recv(b)), StateVectorReceived)
        # query-awareness with nobody present: an empty awareness update.
        await b.send(encode_query_awareness())
        assert decode_message(await _recv(b)) == AwarenessReceived(b"\x00")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("frame", "code"), [(bytes([0, 9, 0]), 1002), ("text", 1003), (bytes([1, 3, 1, 1]), 1002)]
)
async def test_y_websocket_malformed_messages_close(
    relay: RelayProcess, frame: bytes | str, code: int
) -> None:
    async with await _open_yjs(relay) as ws:
        await ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await _recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/yjs/jobs?token=x", "bad path"),
        ("/yjs/jobs/j1", "bad_token"),
        ("/yjs/jobs/j1?token=x", "bad_token"),
    ],
)
async def test_y_websocket_refusals(relay: RelayProcess, path: str, reason: str) -> None:
    async with connect(relay.url + path) as ws:
        denied = decode_message(await _recv(ws))
        assert isinstance(denied, PermissionDenied) and denied.reason.startswith(reason)
        with pytest.raises(ConnectionClosed) as closed:
            await _recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def _hp(name: str, kind: HP, payload: bytes = b"") -> bytes:
    return encode_frame(name, kind, payload)


def _parse_hp(frame: bytes) -> tuple[str, int, bytes]:
    reader = Reader(frame)
    name = reader.var_string()
    kind = reader.var_uint()
    return name, kind, reader.rest()


@pytest.mark.asyncio
async def test_hocuspocus_auth_held_messages_and_sync_status_after_commit(
    relay: RelayProcess,
) -> None:
    token = relay.token("acme", ["jobs"])
    update = _update("status", "open")
    async with connect(f"{relay.url}/hocuspocus") as ws:
        # An update sent before the token is held, then handled after authentication.
        await ws.send(_hp("jobs/j1", HP.SYNC, encode_sync(SyncType.UPDATE, update)))
        auth = write_var_uint(0) + write_var_string(token) + write_var_string("4.8.0")
        await ws.send(_hp("jobs/j1", HP.AUTH, auth))
        await ws.send(_hp("contacts/c1", HP.AUTH, auth))
        seen: list[tuple[str, int, bytes]] = []
        while len(seen) < 4:
            seen.append(_parse_hp(await _recv(ws)))
        assert ("jobs/j1", HP.AUTH, bytes([2]) + write_var_string("read-write")) in seen
        denied = [s for s in seen if s[0] == "contacts/c1"]
        assert denied and denied[0][1] == HP.AUTH and denied[0][2][0] == 1
        j1 = [(kind, payload) for name, kind, payload in seen if name == "jobs/j1"]
        # After Authenticated: SyncStatus(1) once stored, and the echo (order between the two
        # is not fixed), then nothing more.
        assert (HP.SYNC_STATUS, b"\x01") in j1
        assert (HP.SYNC, encode_sync(SyncType.UPDATE, update)) in j1
    # Stored: a y-websocket client reads it.
    async with await _open_yjs(relay, "jobs/j1") as ws:
        await ws.send(_sync(SyncType.STEP1, b"\x00"))
        step2 = decode_message(await _recv(ws))
        assert isinstance(step2, UpdateReceived)
        doc: Doc = Doc()
        doc.apply_update(step2.update)
        assert doc.get("fields", type=Map)["status"] == "open"


@pytest.mark.asyncio
async def test_graceful_shutdown_closes_yjs_connections_with_1001(relay: RelayProcess) -> None:
    yjs = await _open_yjs(relay)
    hp = await connect(f"{relay.url}/hocuspocus")
    try:
        update = _update("status", "open")
        await yjs.send(_sync(SyncType.UPDATE, update))
        assert decode_message(await _recv(yjs)) == UpdateReceived(update, step2=False)
        stopping = asyncio.get_running_loop().run_in_executor(None, relay.stop)
        for ws in (yjs, hp):
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await _recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await stopping == 0
    finally:
        await yjs.close()
        await hp.close()


async def _flood(ws: ClientConnection, frames: list[bytes]) -> tuple[int, int | None, str]:
    """Send ``frames`` as fast as possible; ``(messages received, close code, reason)``."""
    with contextlib.suppress(ConnectionClosed):
        for frame in frames:
            await ws.send(frame)
    received = 0
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(WAIT):
            async for _ in ws:
                received += 1
    await ws.wait_closed()
    return received, ws.close_code, ws.close_reason or ""


@pytest.mark.asyncio
@pytest.mark.parametrize("endpoint", ["yjs", "hocuspocus"])
async def test_floods_on_the_yjs_endpoints_are_cut_at_the_rate_limit(
    limited: RelayProcess, endpoint: str
) -> None:
    async with await _open_yjs(limited, "jobs/calm") as bystander:
        if endpoint == "yjs":
            offender = await _open_yjs(limited, "jobs/flood")
            flood = [encode_query_awareness() for _ in range(4 * RATE)]
        else:
            offender = await connect(f"{limited.url}/hocuspocus")
            flood = [_hp("jobs/flood", HP.QUERY_AWARENESS, b"") for _ in range(4 * RATE)]
        received, code, reason = await _flood(offender, flood)
        assert code == 1008
        assert reason == f"rate limited: more than {RATE} messages per second"
        if endpoint == "yjs":
            assert 0 < received < len(flood)  # the burst was answered, the rest was not
        # The relay carries on for everyone else.
        update = _update("status", "calm")
        await bystander.send(_sync(SyncType.UPDATE, update))
        assert decode_message(await _recv(bystander)) == UpdateReceived(update, step2=False)
        status, metrics = limited.get("/metrics")
        assert status == 200
        assert 'crdt_sync_errors_total{code="rate_limited"}' in metrics


@pytest.mark.asyncio
async def test_the_yjs_endpoints_admit_a_steady_rate_under_the_limit(
    limited: RelayProcess,
) -> None:
    async with await _open_yjs(limited, "jobs/steady") as ws:
        for _ in range(2 * RATE + 10):  # more than the burst, spread out: never refused
            await ws.send(encode_query_awareness())
            assert decode_message(await _recv(ws)) == AwarenessReceived(b"\x00")
            await asyncio.sleep(1.25 / RATE)


@pytest.mark.asyncio
async def test_a_hocuspocus_socket_may_open_many_documents_at_once(limited: RelayProcess) -> None:
    # One socket carries every document: opening 60 at once is 180 messages, far past the
    # burst of 40, and is not a flood (each opened document credits its handshake).
    token = limited.token("acme", ["jobs"])
    auth = write_var_uint(0) + write_var_string(token) + write_var_string("4.8.0")
    count = 3 * RATE
    async with connect(f"{limited.url}/hocuspocus") as ws:
        for i in range(count):
            name = f"jobs/open-{i}"
            await ws.send(_hp(name, HP.AUTH, auth))
            await ws.send(_hp(name, HP.SYNC, encode_sync(SyncType.STEP1, b"\x00")))
            await ws.send(_hp(name, HP.QUERY_AWARENESS))
        authenticated: set[str] = set()
        synced: set[str] = set()
        while len(authenticated) < count or len(synced) < count:
            name, kind, payload = _parse_hp(await _recv(ws))
            if kind == HP.AUTH and payload[:1] == bytes([2]):
                authenticated.add(name)
            elif kind == HP.SYNC and payload[:1] == bytes([SyncType.STEP2]):
                synced.add(name)  # the held SyncStep1 was answered
