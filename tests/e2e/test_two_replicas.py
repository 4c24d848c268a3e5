"""Two (then three) replicas converge through a real relay process, with real SQLite files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from crdt_sync.client import RecordChange
from helpers.relay import RelayProcess
from helpers.replicas import converged, open_replica, snapshot, until

COLLECTIONS = ("jobs", "contacts")


@pytest.mark.asyncio
async def test_online_edit_reaches_other_replica(tmp_path: Path, relay: RelayProcess) -> None:
    async with (
        open_replica(tmp_path, "a", relay) as a,
        open_replica(tmp_path, "b", relay) as b,
    ):
        await a.wait_synced()
        await b.wait_synced()
        changes = b.changes()
        first_change = asyncio.ensure_future(anext(changes))
        async with a.edit("jobs", "job-1") as job:
            job["status"] = "open"
            job["notes"] = "Café ☕"
        await a.wait_synced()
        async with asyncio.timeout(10):
            assert await first_change == RecordChange("jobs", "job-1")
        await changes.aclose()
        record = await b.get("jobs", "job-1")
        assert record["status"] == "open"
        assert record["notes"] == "Café ☕"
        assert await snapshot(a, COLLECTIONS) == await snapshot(b, COLLECTIONS)
        assert await converged([a, b], COLLECTIONS)


LWW = {"jobs": ["status"]}


@pytest.mark.asyncio
async def test_offline_edits_converge_and_late_replica_gets_everything(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with (
        open_replica(tmp_path, "a", relay, lww=LWW) as a,
        open_replica(tmp_path, "b", relay, lww=LWW) as b,
    ):
        async with a.edit("jobs", "job-1") as job:
            job["status"] = "new"
            job.text("notes").append("Début")  # a collaborative text (a str is a plain value)
            job["address"] = {"city": "Lyon"}
        await a.wait_synced()

        async def b_has_job() -> bool:
            return await b.exists("jobs", "job-1")

        await until(b_has_job, [b], what="b to receive job-1")

        await a.go_offline()
        await b.go_offline()
        assert a.status.current.state == b.status.current.state == "offline"
        assert a.status.current.forced_offline

        async with a.edit("jobs", "job-1") as job:
            job["notes"] += "\nArrivé sur place 🚐"
            job["status"] = "in_progress"
            job.map("address")["street"] = "1 rue de la Ré"
        async with b.edit("jobs", "job-1") as job:
            job["notes"] += "\nPièce commandée 🔧 (ça arrive)"
            job["status"] = "waiting_parts"
            job.map("address")["zip"] = "69001"
        async with b.edit("contacts", "c-1") as contact:
            contact["name"] = "Zoë Åström 👩‍🔧"
            contact["tags"] = ["vip", "çà"]
        assert a.status.current.pending == 1
        assert b.status.current.pending == 2
        assert [e.record_id for e in await b.outbox.entries()] == ["job-1", "c-1"]

        a.go_online()
        b.go_online()
        await a.wait_synced()
        await b.wait_synced()
        await until(lambda: converged([a, b], COLLECTIONS), [a, b], what="a and b to converge")

        job_a = await a.get("jobs", "job-1")
        notes = job_a["notes"]
        assert notes.startswith("Début")
        assert notes.count("\nArrivé sur place 🚐") == 1
        assert notes.count("\nPièce commandée 🔧 (ça arrive)") == 1
        assert job_a["status"] == "waiting_parts"  # the later write wins on every replica
        assert job_a["address"] == {"city": "Lyon", "street": "1 rue de la Ré", "zip": "69001"}
        assert (await a.get("contacts", "c-1"))["name"] == "Zoë Åström 👩‍🔧"
        assert a.status.current.pending == b.status.current.pending == 0

        async with open_replica(tmp_path, "c", relay, lww=LWW) as c:
            await c.wait_synced()
            assert await snapshot(c, COLLECTIONS) == await snapshot(a, COLLECTIONS)
