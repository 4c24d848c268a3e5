"""Two (then three) replicas converge through a real relay process, with real SQLite files."""

from __future__ import annotations

from pathlib import Path

import pytest
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
        async with a.edit("jobs", "job-1") as job:
            job["status"] = "open"
            job["notes"] = "Café ☕"
        await a.wait_synced()

        async def b_has_it() -> bool:
            return await b.exists("jobs", "job-1")

        await until(b_has_it, [b], what="b to receive job-1")
        record = await b.get("jobs", "job-1")
        assert record["status"] == "open"
        assert record["notes"] == "Café ☕"
        assert await snapshot(a, COLLECTIONS) == await snapshot(b, COLLECTIONS)
        assert await converged([a, b], COLLECTIONS)
