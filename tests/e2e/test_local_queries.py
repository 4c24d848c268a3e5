"""Local queries, full-text search and live queries on a replica synced by a real relay
process: remote edits show in them at once, local ones too, offline included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.relay import RelayProcess
from helpers.replicas import open_replica, until

from crdt_sync import field


@pytest.mark.asyncio
async def test_remote_and_local_changes_reach_queries_search_and_watchers(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with (
        open_replica(tmp_path, "office", relay) as office,
        open_replica(
            tmp_path,
            "tech",
            relay,
            indexes={"jobs": ["date", "status"]},
            text_fields={"jobs": ["title", "notes"]},
        ) as tech,
    ):
        await tech.wait_synced()
        live = tech.watch("jobs", field("status").eq("open"), order_by="date")
        assert (await live.next()).records == []
        async with office.batch():
            for i, (status, title) in enumerate(
                [("open", "Boiler in the attic"), ("done", "Café machine"), ("open", "Roof")]
            ):
                async with office.edit("jobs", f"job-{i}") as job:
                    job["status"] = status
                    job["date"] = f"2026-12-0{i + 1}"
                    job["title"] = title
        await office.wait_synced()

        # The remote records come to the watcher (origin remote), then to queries and search.
        seen: set[str] = set()
        async with asyncio.timeout(15):
            while seen != {"job-0", "job-2"}:
                result = await live.next()
                assert result.origins <= {"remote"}
                seen = {r.id for r in result.records}
        assert [r.id for r in await tech.query("jobs", {"status": "open"}, order_by="-date")] == [
            "job-2",
            "job-0",
        ]
        assert [h.record.id for h in await tech.search_text("jobs", "cafe")] == ["job-1"]

        # Offline, a local edit shows at once, pending, and reaches the watcher as local.
        await tech.go_offline()
        async with tech.edit("jobs", "job-1") as job:
            job["status"] = "open"
            job.text("notes").insert(0, "Espresso, not filter")
        async with asyncio.timeout(5):
            result = await live.next()
            while "local" not in result.origins:  # remote changes still on their way before
                result = await live.next()
        [change] = [c for c in result.changes if c.origin == "local"]
        assert change.record_id == "job-1"
        assert change.fields == {"status", "notes"}
        assert [(r.id, r.pending) for r in result.records] == [
            ("job-0", False),
            ("job-1", True),
            ("job-2", False),
        ]
        assert [h.record.id for h in await tech.search_text("jobs", "espresso")] == ["job-1"]
        live.close()

        # Back online, the edit reaches the office; its query agrees.
        tech.go_online()
        await tech.wait_synced()

        async def office_sees() -> bool:
            return await office.count("jobs", {"status": "open"}) == 3

        await until(office_sees, [office, tech], what="the office to see the tech's edit")
        assert not any(r.pending for r in await tech.query("jobs"))
