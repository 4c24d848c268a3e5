"""Handshake against a running relay: tokens, versions, order, custom verifier."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from crdt_sync.server.tokens import mint
from helpers.relay import RelayClient, RelayProcess
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdt_sync import codec
from crdt_sync.messages import Hello, Ping, Subscribe
from crdt_sync.protocol import ErrorReceived, Welcomed


async def _refusal(relay: RelayProcess, token: str) -> tuple[ErrorReceived, int]:
    async with RelayClient.open(relay.url, token, "r1", welcome=False) as client:
        events, code = await client.closed_with()
    errors = [e for e in events if isinstance(e, ErrorReceived)]
    assert len(errors) == 1, events
    assert not any(isinstance(e, Welcomed) for e in events)
    return errors[0], code


@pytest.mark.asyncio
async def test_valid_token_is_welcomed_with_its_grant(relay: RelayProcess) -> None:
    async with RelayClient.open(
        relay.url, relay.token("acme", ["jobs", "contacts"]), "r1", welcome=False
    ) as client:
        welcome = await client.next_event(Welcomed)
    assert welcome.tenant == "acme"
    assert set(welcome.collections) == {"jobs", "contacts"}
    assert welcome.limits.max_frame > 0 and welcome.limits.max_items > 0


@pytest.mark.asyncio
async def test_token_signed_with_another_secret_is_bad_token(relay: RelayProcess) -> None:
    error, code = await _refusal(relay, mint("not-the-secret", "acme", ["jobs"], 60))
    assert (error.code, error.fatal) == ("bad_token", True)
    assert code == 1008


@pytest.mark.asyncio
async def test_garbage_token_is_bad_token(relay: RelayProcess) -> None:
    error, _ = await _refusal(relay, "v1.garbage.garbage")
    assert error.code == "bad_token"


@pytest.mark.asyncio
async def test_expired_token_is_token_expired(relay: RelayProcess) -> None:
    error, _ = await _refusal(relay, relay.token("acme", ["jobs"], ttl=-5))
    assert (error.code, error.fatal) == ("token_expired", True)


@pytest.mark.asyncio
async def test_connection_is_failed_when_its_token_expires(relay: RelayProcess) -> None:
    async with RelayClient.open(relay.url, relay.token("acme", ["jobs"], ttl=3), "r1") as c:
        events, _ = await c.closed_with(within=10)
    assert [(e.code, e.fatal) for e in events if isinstance(e, ErrorReceived)] == [
        ("token_expired", True)
    ]


async def _raw_session(url: str, frames: list[bytes]) -> list[object]:
    """Send raw frames, return every decoded frame received until the relay closes."""
    received: list[object] = []
    async with connect(url, compression=None) as ws:
        for frame in frames:
            await ws.send(frame)
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                assert isinstance(message, bytes)
                received.append(codec.decode(message, 2**30))
    return received


@pytest.mark.asyncio
async def test_wrong_protocol_version_is_unsupported_version(relay: RelayProcess) -> None:
    token = relay.token("acme", ["jobs"])
    received = await _raw_session(relay.url, [codec.encode(Hello(token, "r1", version=2))])
    assert [(m.code, m.fatal) for m in received] == [("unsupported_version", True)]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_message_before_hello_is_not_ready(relay: RelayProcess) -> None:
    received = await _raw_session(relay.url, [codec.encode(Subscribe(("jobs",), None))])
    assert [(m.code, m.fatal) for m in received] == [("not_ready", True)]  # type: ignore[attr-defined]
    received = await _raw_session(relay.url, [codec.encode(Ping(1))])
    assert [m.code for m in received] == ["not_ready"]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_custom_verifier_module_function(
    tmp_path: Path, relay_factory: Callable[..., RelayProcess]
) -> None:
    (tmp_path / "my_auth.py").write_text(
        "from crdt_sync.errors import AuthError\n"
        "from crdt_sync.server.tokens import Grant\n"
        "async def verify(token):\n"
        "    if token == 'let-me-in':\n"
        "        return Grant('custom', frozenset({'jobs'}), 4e9)\n"
        "    raise AuthError('bad_token', 'unknown token')\n"
    )
    relay = relay_factory(args=["--verifier", "my_auth:verify"])
    async with RelayClient.open(relay.url, "let-me-in", "r1", welcome=False) as client:
        welcome = await client.next_event(Welcomed)
    assert (welcome.tenant, welcome.collections) == ("custom", ("jobs",))
    # the relay's own HMAC tokens are not accepted any more
    error, _ = await _refusal(relay, relay.token("acme", ["jobs"]))
    assert error.code == "bad_token"
