"""Retention, quota, expiry and wipe with real replicas, real SQLite files and a real relay.

The promise: a record with unsynced changes is never evicted, expired or cleared, and a wipe
never drops them unless forced.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.relay import RelayProcess, start_relay
from helpers.replicas import open_replica, until

from crdt_sync.cache_policy import CacheEvent, CacheEventKind, CachePolicy
from crdt_sync.errors import UnsyncedChangesError

pytestmark = pytest.mark.asyncio

NO_BACKGROUND = CachePolicy(check_interval=1e6)


async def test_quota_eviction_skips_the_record_with_pending_changes(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with (
        open_replica(tmp_path, "office", relay) as office,
        open_replica(tmp_path, "tech", relay, cache=NO_BACKGROUND) as tech,
    ):
        for i in range(6):
            async with office.edit("jobs", f"job-{i}") as job:
                job["title"] = f"Job {i}"
                job.text("notes").append("Arrived on site. " * 20)
        await office.wait_synced()

        async def tech_has_all() -> bool:
            return len(await tech.records("jobs")) == 6

        await until(tech_has_all, [tech], what="tech to download the jobs")
        await tech.go_offline()
        async with tech.edit("jobs", "job-0") as job:  # unsynced: must survive everything
            job["status"] = "done offline"
        for i in (5, 4):
            await tech.get("jobs", f"job-{i}")  # recently used: kept first

        events: list[CacheEvent] = []
        tech.on_cache_event(events.append)
        sizes = {r.key[1]: r.size for r in await tech.store.cache.measure()}
        tech.store.cache.policy = CachePolicy(
            quota=sizes["job-0"] + sizes["job-5"] + sizes["job-4"], check_interval=1e6
        )
        report = await tech.apply_cache_policy()
        assert report.evicted == 3 and not report.blocked
        assert sorted(await tech.store.ids("jobs")) == ["job-0", "job-4", "job-5"]
        assert (await tech.get("jobs", "job-0"))["status"] == "done offline"
        [evicted] = [e for e in events if e.kind is CacheEventKind.EVICTED]
        assert evicted.reason == "quota" and evicted.records == 3

        # Quota below what the unsynced record needs: blocked, with a warning, nothing lost.
        tech.store.cache.policy = CachePolicy(quota=1, check_interval=1e6)
        report = await tech.apply_cache_policy()
        assert report.blocked and await tech.store.ids("jobs") == ["job-0"]
        assert [e.kind for e in events][-1] is CacheEventKind.EVICTION_BLOCKED
        tech.store.cache.policy = NO_BACKGROUND

        # Back online: the pending change goes up; an evicted record comes back whole when
        # it changes on the relay (its earlier text included).
        tech.go_online()
        await tech.wait_synced()
        async with office.edit("jobs", "job-2") as job:
            job["status"] = "reassigned"
        await office.wait_synced()

        async def job2_back_whole() -> bool:
            if not await tech.exists("jobs", "job-2"):
                return False
            record = await tech.get("jobs", "job-2")
            return record.get("title") == "Job 2" and record.get("status") == "reassigned"

        await until(job2_back_whole, [tech], what="job-2 to come back whole")
        assert str((await tech.get("jobs", "job-2"))["notes"]) == "Arrived on site. " * 20

        async def office_sees_offline_edit() -> bool:
            return (await office.get("jobs", "job-0")).get("status") == "done offline"

        await until(office_sees_offline_edit, [office], what="the offline edit to arrive")


async def test_relay_delivered_max_age_warns_then_clears_all_but_unsynced(
    tmp_path: Path,
) -> None:
    relay = start_relay(
        tmp_path / "relay-data",
        args=("--cache-max-age", "3600", "--tenant-cache-max-age", "acme=1.6"),
    )
    try:
        policy = CachePolicy(expiry_warnings=(1.2, 0.6), check_interval=1e6)
        async with (
            open_replica(tmp_path, "office", relay) as office,
            open_replica(tmp_path, "other", relay, tenant="globex") as other,
        ):
            async with office.edit("jobs", "job-1") as job:
                job["title"] = "Boiler"
            await office.wait_synced()
            await other.wait_synced()
            assert other.store.cache.max_age == 3600.0  # the default for every tenant
            events: list[CacheEvent] = []
            async with open_replica(tmp_path, "tech", relay, cache=policy) as tech:
                tech.on_cache_event(events.append)
                expired = asyncio.Event()
                tech.on_cache_event(lambda e: e.kind is CacheEventKind.EXPIRED and expired.set())
                await tech.wait_synced()
                assert tech.store.cache.max_age == 1.6  # delivered by the relay in welcome
                assert tech.cache_expires_at is None  # online: the cache does not age
                await tech.get("jobs", "job-1")
                await tech.go_offline()
                assert tech.cache_expires_at is not None
                async with tech.edit("jobs", "job-2") as job:
                    job["title"] = "written offline"
                async with asyncio.timeout(15):
                    await expired.wait()
                warnings = [e.kind for e in events if e.is_warning]
                assert warnings == [
                    CacheEventKind.EXPIRY_SOON,
                    CacheEventKind.EXPIRY_SOON,
                    CacheEventKind.EXPIRED,
                ]
                assert events[-1].unsynced_records == 1 and events[-1].records == 1
                assert await tech.store.ids("jobs") == ["job-2"]
                # Synced again: the unsynced record goes up, the cache is current again.
                tech.go_online()
                await tech.wait_synced()
            async with open_replica(tmp_path, "tech", relay, cache=policy, offline=True) as tech:
                # The max age and the last sync survive a restart, offline.
                assert tech.store.cache.max_age == 1.6
                assert tech.cache_expires_at is not None

            async def office_has_job2() -> bool:
                return await office.exists("jobs", "job-2")

            await until(office_has_job2, [office], what="the offline record to reach the relay")
    finally:
        relay.kill()


async def test_a_relay_without_max_age_means_no_expiry(tmp_path: Path, relay: RelayProcess) -> None:
    async with open_replica(tmp_path, "tech", relay, cache=NO_BACKGROUND) as tech:
        tech.store.cache.set_max_age(60.0)  # as left by an earlier relay
        await tech.wait_synced()
        assert tech.store.cache.max_age is None
        await tech.go_offline()
        assert tech.cache_expires_at is None


async def test_wipe_refuses_while_unsynced_then_forced(tmp_path: Path, relay: RelayProcess) -> None:
    tech = await open_replica(tmp_path, "tech", relay, offline=True)
    async with tech.edit("jobs", "job-1") as job:
        job["title"] = "not synced yet"
    with pytest.raises(UnsyncedChangesError) as refused:
        await tech.wipe()
    assert (refused.value.entries, refused.value.records) == (1, 1)
    assert (await tech.get("jobs", "job-1"))["title"] == "not synced yet"  # still open
    tech.go_online()
    await tech.wait_synced()
    async with tech.edit("jobs", "job-1") as job:
        job["title"] = "again"
    await tech.go_offline()
    with pytest.raises(UnsyncedChangesError):
        await tech.wipe()
    await tech.wipe(force=True)
    assert not (tmp_path / "tech.db").exists()
    assert tech.status.current.state == "offline"


async def test_wipe_after_sync_needs_no_force(tmp_path: Path, relay: RelayProcess) -> None:
    tech = await open_replica(tmp_path, "tech", relay)
    async with tech.edit("jobs", "job-1") as job:
        job["title"] = "synced"
    await tech.wait_synced()
    await tech.wipe()
    assert not (tmp_path / "tech.db").exists()


async def test_wipe_of_a_closed_replica_still_refuses(tmp_path: Path, relay: RelayProcess) -> None:
    tech = await open_replica(tmp_path, "tech", relay, offline=True)
    async with tech.edit("jobs", "job-1") as job:
        job["title"] = "not synced"
    await tech.close()
    with pytest.raises(UnsyncedChangesError):
        await tech.wipe()
    assert (tmp_path / "tech.db").exists()
    await tech.wipe(force=True)
    assert not (tmp_path / "tech.db").exists()
