"""Token refresh, forced offline mode, network reachability, status events (real relay, files)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from crdt_sync.client import Replica, SessionState, Status
from crdt_sync.server.tokens import mint
from helpers.proxy import TcpProxy
from helpers.relay import RelayProcess
from helpers.replicas import converged, open_replica, until

from crdt_sync.errors import OfflineError

COLLECTIONS = ("jobs", "contacts")


async def _notes(replica: Replica) -> str:
    if not await replica.exists("jobs", "job-1"):
        return ""
    return str((await replica.get("jobs", "job-1")).get("notes", ""))


@pytest.mark.asyncio
async def test_expiring_tokens_are_refreshed_without_losing_or_duplicating(
    tmp_path: Path, relay: RelayProcess
) -> None:
    minted: list[str] = []

    async def short_lived_token() -> str:  # an async provider, as an app would have
        token = mint(relay.secret, "acme", COLLECTIONS, ttl=2)
        minted.append(token)
        return token

    expiries = asyncio.Event()
    async with (
        open_replica(tmp_path, "a", relay, token=short_lived_token) as a,
        open_replica(tmp_path, "b", relay) as b,
    ):
        a.status.subscribe(lambda s: expiries.set() if s.last_error == "token_expired" else None)
        async with a.edit("jobs", "job-1") as job:
            job.text("notes").append("Notes:")
        await a.wait_synced()
        markers = []
        for round_ in range(3):
            expiries.clear()
            for i in range(20):
                marker = f" <{round_}.{i}>"
                markers.append(marker)
                async with a.edit("jobs", "job-1") as job:
                    job["notes"] += marker
            async with asyncio.timeout(10):
                await expiries.wait()  # the relay cut the connection: the token expired
            await a.wait_synced()
        await until(lambda: converged([a, b], COLLECTIONS), [a, b], what="convergence")
        notes = await _notes(b)
        for marker in markers:
            assert notes.count(marker) == 1, marker
        assert len(minted) >= 4  # a fresh token for every reconnect
        assert a.connections_opened == len(minted)
        assert await a.outbox.count() == 0


@pytest.mark.asyncio
async def test_forced_offline_queues_edits_and_fails_online_only_actions(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with (
        open_replica(tmp_path, "a", relay) as a,
        open_replica(tmp_path, "b", relay) as b,
    ):
        await a.wait_synced()
        sessions: list[SessionState] = []
        a.status.subscribe(lambda s: sessions.append(s.session))
        await a.go_offline()
        assert a.status.current.state == "offline"
        assert a.status.current.forced_offline
        async with a.edit("jobs", "job-9") as job:
            job["status"] = "done offline"
        assert a.status.current.pending == 1
        with pytest.raises(OfflineError):
            await a.sync_now()
        assert await a.get("jobs", "job-9")  # reads keep working
        assert not await b.exists("jobs", "job-9")
        assert a.status.current.session is SessionState.FORCED_OFFLINE  # stays off

        a.go_online()
        await a.sync_now()
        assert a.status.current.pending == 0
        # Switching sync off and on is not a failure: no backoff delay on the way back.
        assert SessionState.BACKOFF not in sessions
        assert a.status.current.last_error is None
        await a.go_offline()
        a.go_online()  # at once, while the old connection may still be winding down
        await a.wait_synced()
        assert SessionState.BACKOFF not in sessions
        assert a.connections_opened == 3
        await until(lambda: b.exists("jobs", "job-9"), [b], what="b to get job-9")


@pytest.mark.asyncio
async def test_network_up_reconnects_at_once_instead_of_waiting_out_the_backoff(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with TcpProxy(relay.port) as proxy:
        proxy.refuse = True  # the relay is unreachable
        async with open_replica(
            tmp_path, "a", relay, url=proxy.url, backoff_initial=1000.0, backoff_max=1000.0
        ) as a:
            async with asyncio.timeout(10):
                await a.status.wait_for(lambda s: s.session is SessionState.BACKOFF)
            attempts = proxy.accepted
            assert attempts >= 1
            a.network_changed("down")
            assert a.status.current.session is SessionState.OFFLINE
            async with a.edit("jobs", "job-1") as job:
                job["status"] = "queued while the network was down"
            proxy.refuse = False  # the network is back; the OS tells the app
            a.network_changed("up")
            await a.wait_synced(timeout=10)  # far sooner than a 0..1000 s backoff delay
            assert proxy.accepted == attempts + 1


@pytest.mark.asyncio
async def test_status_events_offline_connecting_syncing_online(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with open_replica(tmp_path, "b", relay) as b:
        for i in range(2):
            async with b.edit("contacts", f"c-{i}") as contact:
                contact["name"] = f"Remote {i}"
        await b.wait_synced()

    seen: list[Status] = []
    async with open_replica(tmp_path, "a", relay, offline=True) as a:
        iterated: list[Status] = []

        async def consume() -> None:
            async for status in a.status.changes():
                iterated.append(status)
                if status.state == "online" and status.pending == 0:
                    return

        consumer = asyncio.create_task(consume())
        a.status.subscribe(seen.append)
        assert a.status.current.state == "offline"
        for i in range(3):
            async with a.edit("jobs", f"job-{i}") as job:
                job["status"] = "new"
        assert [s.pending for s in seen] == [1, 2, 3]
        a.go_online()
        await a.wait_synced()
        async with asyncio.timeout(10):
            await consumer
        assert a.status.current.last_synced_at is not None

    states = [s.state for s in seen]
    collapsed = [state for i, state in enumerate(states) if i == 0 or states[i - 1] != state]
    assert collapsed[:4] == ["offline", "connecting", "syncing", "online"]
    syncing = [s for s in seen if s.state == "syncing"]
    final = syncing[-1].progress
    # 3 entries up; down: b's 2 records at least (a first sync, cursor None, may list ours too)
    assert final.records_total in (3 + 2, 3 + 5)
    assert final.records_done == final.records_total
    assert final.bytes_done == final.bytes_total > 0
    done = [s.progress.records_done for s in syncing]
    assert done == sorted(done)  # progress only moves forward
    pending = [s.pending for s in seen]
    assert pending[-1] == 0 and max(pending) == 3
    assert next(s.state for s in iterated) == "offline"  # the iterator starts with the current
    assert iterated[-1].state == "online"


@pytest.mark.asyncio
async def test_refused_token_and_failing_provider_back_off_and_say_why(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with open_replica(tmp_path, "a", relay, token="not-a-token") as a:
        async with asyncio.timeout(10):
            status = await a.status.wait_for(
                lambda s: s.session is SessionState.BACKOFF and s.last_error is not None
            )
        assert status.last_error == "bad_token"
        assert a.grant is None

    calls = 0

    def broken_provider() -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("identity provider unreachable")

    async with open_replica(tmp_path, "b", relay, token=broken_provider) as b:
        async with asyncio.timeout(10):
            status = await b.status.wait_for(lambda s: s.last_error is not None)
        assert status.last_error == "token_unavailable"
        assert status.state == "offline"
        assert calls >= 1
