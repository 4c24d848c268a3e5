"""Tenant isolation and collection grants, each case proven against a running relay."""

from __future__ import annotations

import asyncio

import pytest
from helpers.relay import RelayClient, RelayProcess
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from crdt_sync import codec
from crdt_sync.messages import Hello, Push, PushItem, StateVectorItem, StateVectors, Subscribe
from crdt_sync.protocol import ErrorReceived, UpdatesReceived


def _note(text: str, client_id: int = 1) -> bytes:
    doc = Doc(client_id=client_id)
    doc.get("notes", type=Text).insert(0, text)
    return doc.get_update()


@pytest.mark.asyncio
async def test_another_tenant_never_sees_records_with_the_same_keys(relay: RelayProcess) -> None:
    acme = relay.token("acme-iso", ["jobs"])
    globex = relay.token("globex-iso", ["jobs"])
    async with (
        RelayClient.open(relay.url, acme, "a") as a,
        RelayClient.open(relay.url, globex, "g") as g,
        RelayClient.open(relay.url, acme, "a2") as a2,
    ):
        _, _, _ = await g.catch_up(["jobs"], None)
        await a2.catch_up(["jobs"], None)
        await a.push_and_settle([(1, "jobs", "job-1", _note("acme secret"))])
        # same-tenant subscriber gets it live: the fan-out ran
        live = await a2.next_event(UpdatesReceived)
        assert [i.record_id for i in live.items] == ["job-1"]
        # the other tenant neither lists it, nor can fetch it by key, nor got it live
        changed, updates, _ = await g.catch_up(["jobs"], None)
        assert changed == [] and updates == {}
        assert await g.fetch([("jobs", "job-1")]) == {}
        assert not any(isinstance(e, UpdatesReceived) and e.items for e in g.events)
        # globex writing the same key does not touch acme's record
        await g.push_and_settle([(1, "jobs", "job-1", _note("globex", 2))])
        fetched = await a.fetch([("jobs", "job-1")])
    doc = Doc()
    doc.apply_update(fetched[("jobs", "job-1")])
    assert str(doc.get("notes", type=Text)) == "acme secret"


@pytest.mark.asyncio
async def test_push_outside_the_grant_is_rejected_forbidden_and_not_stored(
    relay: RelayProcess,
) -> None:
    jobs_only = relay.token("grant-push", ["jobs"])
    everything = relay.token("grant-push", ["jobs", "invoices"])
    async with RelayClient.open(relay.url, everything, "auditor") as auditor:
        await auditor.catch_up(["invoices"], None)
        async with RelayClient.open(relay.url, jobs_only, "tech") as tech:
            # the client core does not filter by grant: the relay must refuse
            acked, rejected = await tech.push_and_settle(
                [(1, "jobs", "j", _note("ok")), (2, "invoices", "i1", _note("fraud"))]
            )
        assert acked == {1}
        assert rejected[2][0] == "forbidden"
        assert await auditor.fetch([("invoices", "i1")]) == {}
        assert not any(isinstance(e, UpdatesReceived) and e.items for e in auditor.events)


async def _raw_after_welcome(url: str, token: str, frame: bytes) -> list[object]:
    received: list[object] = []
    async with connect(url, compression=None) as ws:
        await ws.send(codec.encode(Hello(token, "raw")))
        received.append(codec.decode(await ws.recv(), 2**30))
        await ws.send(frame)
        try:
            async with asyncio.timeout(10):
                async for message in ws:
                    assert isinstance(message, bytes)
                    received.append(codec.decode(message, 2**30))
        except Exception as exc:  # the relay closes with 1008 after a fatal error
            from websockets.exceptions import ConnectionClosed

            assert isinstance(exc, ConnectionClosed), exc
    return received


@pytest.mark.asyncio
async def test_subscribing_outside_the_grant_is_forbidden(relay: RelayProcess) -> None:
    token = relay.token("grant-sub", ["jobs"])
    received = await _raw_after_welcome(
        relay.url, token, codec.encode(Subscribe(("jobs", "payroll"), None))
    )
    assert [(m.code, m.fatal) for m in received[1:]] == [("forbidden", True)]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_state_vectors_outside_the_grant_are_forbidden(relay: RelayProcess) -> None:
    secret_writer = relay.token("grant-sv", ["payroll"])
    async with RelayClient.open(relay.url, secret_writer, "hr") as hr:
        await hr.push_and_settle([(1, "payroll", "p1", _note("salary"))])
    token = relay.token("grant-sv", ["jobs"])
    frame = codec.encode(StateVectors((StateVectorItem("payroll", "p1", b"\x00"),), True))
    received = await _raw_after_welcome(relay.url, token, frame)
    kinds = [type(m).__name__ for m in received[1:]]
    assert kinds == ["Error"], received
    assert received[1].code == "forbidden"  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_raw_push_outside_grant_gets_reject(relay: RelayProcess) -> None:
    token = relay.token("grant-raw", ["jobs"])
    frame = codec.encode(Push((PushItem(7, "payroll", "p1", _note("x")),)))
    async with connect(relay.url, compression=None) as ws:
        await ws.send(codec.encode(Hello(token, "raw")))
        await ws.recv()
        await ws.send(frame)
        answer = codec.decode(await asyncio.wait_for(ws.recv(), 10), 2**30)
    assert type(answer).__name__ == "Reject"
    assert [(i.seq, i.code) for i in answer.items] == [(7, "forbidden")]  # type: ignore[attr-defined]
    assert not isinstance(answer, ErrorReceived)
