"""A real TCP proxy between replicas and a real relay stalls, cuts and drops connections.

The replicas must notice (heartbeat for stalls), reconnect, and converge with no duplicate
side effects: text appended once is there once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from crdt_sync.client import Replica, SessionState
from crdt_sync.client.connection import heartbeat_bound
from helpers.proxy import TcpProxy
from helpers.relay import RelayProcess
from helpers.replicas import converged, open_replica, until

COLLECTIONS = ("jobs", "contacts")
HEARTBEAT = 0.25
DEAD_AFTER = 1.0


async def _notes(replica: Replica, record_id: str = "job-1") -> str:
    if not await replica.exists("jobs", record_id):
        return ""
    return str((await replica.get("jobs", record_id)).get("notes", ""))


async def _create_job(replica: Replica) -> None:
    async with replica.edit("jobs", "job-1") as job:
        job.text("notes").append("Notes:")
    await replica.wait_synced()


@pytest.mark.asyncio
async def test_stalled_link_is_detected_by_heartbeat_and_recovered(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with (
        TcpProxy(relay.port) as proxy,
        open_replica(
            tmp_path,
            "a",
            relay,
            url=proxy.url,
            heartbeat_interval=HEARTBEAT,
            dead_after=DEAD_AFTER,
        ) as a,
        open_replica(tmp_path, "b", relay) as b,
    ):
        await _create_job(a)
        await b.wait_synced()
        assert proxy.accepted == 1
        loop = asyncio.get_running_loop()
        left_online = asyncio.Event()
        a.status.subscribe(
            lambda s: left_online.set() if s.session is not SessionState.ONLINE else None
        )
        proxy.stall()
        stalled_at = loop.time()
        async with a.edit("jobs", "job-1") as job:
            job["notes"] += " appended-once"
        async with asyncio.timeout(heartbeat_bound(HEARTBEAT, DEAD_AFTER) + 2.0):
            await left_online.wait()
        detected_after = loop.time() - stalled_at
        assert detected_after <= heartbeat_bound(HEARTBEAT, DEAD_AFTER) + 1.0  # loop lag
        assert a.status.current.last_error == "heartbeat_timeout"

        await a.wait_synced()
        assert proxy.accepted >= 2
        await until(
            lambda: converged([a, b], COLLECTIONS), [a, b], what="convergence after a stall"
        )
        assert (await _notes(b)).count(" appended-once") == 1


@pytest.mark.asyncio
async def test_cut_connection_reconnects_at_once(tmp_path: Path, relay: RelayProcess) -> None:
    async with (
        TcpProxy(relay.port) as proxy,
        open_replica(tmp_path, "a", relay, url=proxy.url) as a,
        open_replica(tmp_path, "b", relay) as b,
    ):
        await _create_job(a)
        await b.wait_synced()
        assert proxy.cut() == 1
        async with a.edit("jobs", "job-1") as job:
            job["notes"] += " after-cut"
        await a.wait_synced()
        assert a.connections_opened == 2
        await until(lambda: converged([a, b], COLLECTIONS), [a, b], what="convergence")
        assert (await _notes(b)).count(" after-cut") == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2])
async def test_random_drops_stalls_and_cuts_converge_without_duplicates(
    tmp_path: Path, relay: RelayProcess, seed: int
) -> None:
    options = {"heartbeat_interval": HEARTBEAT, "dead_after": DEAD_AFTER}
    async with (
        TcpProxy(relay.port, seed=seed) as pa,
        TcpProxy(relay.port, seed=seed + 100) as pb,
        open_replica(tmp_path, "a", relay, url=pa.url, **options) as a,
        open_replica(tmp_path, "b", relay, url=pb.url, **options) as b,
    ):
        await _create_job(a)
        await until(lambda: b.exists("jobs", "job-1"), [b], what="b to get job-1")
        await b.wait_synced()
        pa.chaos(cut_probability=0.03, stall_probability=0.015)
        pb.chaos(cut_probability=0.03, stall_probability=0.015)
        markers: list[str] = []
        for round_ in range(8):
            for replica in (a, b):
                marker = f" [{replica.replica_id}{round_}]"
                markers.append(marker)
                async with replica.edit("jobs", "job-1") as job:
                    job["notes"] += marker
                async with replica.edit("contacts", f"c-{replica.replica_id}-{round_}") as c:
                    c["name"] = f"Contact {round_} é😀"
            await asyncio.gather(a.wait_synced(60), b.wait_synced(60))
        pa.calm()
        pb.calm()
        await asyncio.gather(a.wait_synced(60), b.wait_synced(60))
        await until(lambda: converged([a, b], COLLECTIONS), [a, b], what="convergence")
        notes = await _notes(a)
        for marker in markers:
            assert notes.count(marker) == 1, (marker, notes)
        assert len(await a.records("contacts")) == 16
        faults = pa.cuts + pa.stalls + pb.cuts + pb.stalls
        assert faults > 0, "the proxies injected no fault: the test proved nothing"
