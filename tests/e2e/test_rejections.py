"""Entries refused by the relay's validation hook: outbox errors the app resolves or discards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from crdt_sync.client import Replica
from helpers.relay import RelayProcess
from helpers.replicas import open_replica, until

from crdt_sync.outbox import OutboxStatus

RULES = """
from pycrdt import Doc
from crdt_sync.record import read_fields
from crdt_sync.server import UpdateRejected


def technicians_cannot_cancel(collection, record_id, update, current_state, grant):
    doc = Doc()
    if current_state is not None:
        doc.apply_update(current_state)
    doc.apply_update(update)
    if read_fields(doc).get("status") == "cancelled":
        raise UpdateRejected("only the office can cancel a job")
"""


async def _status_of(replica: Replica, record_id: str) -> str | None:
    if not await replica.exists("jobs", record_id):
        return None
    return (await replica.get("jobs", record_id)).get("status")


@pytest.mark.asyncio
async def test_rejected_entries_are_resolved_or_discarded_without_losing_others(
    tmp_path: Path, relay_factory: Callable[..., RelayProcess]
) -> None:
    (tmp_path / "job_rules.py").write_text(RULES)
    relay = relay_factory(args=["--validator", "job_rules:technicians_cannot_cancel"])
    async with (
        open_replica(tmp_path, "tech", relay) as tech,
        open_replica(tmp_path, "office", relay) as office,
    ):
        for record_id in ("job-1", "job-2"):
            async with tech.edit("jobs", record_id) as job:
                job["status"] = "open"
        await tech.wait_synced()
        await tech.go_offline()
        async with tech.edit("jobs", "job-1") as job:
            job["status"] = "cancelled"  # refused by the relay
        async with tech.edit("jobs", "job-2") as job:
            job["status"] = "cancelled"  # refused too
        async with tech.edit("jobs", "job-3") as job:
            job["status"] = "done"  # unrelated: must go through
        tech.go_online()
        status = await tech.wait_synced()
        assert (status.pending, status.errors) == (2, 2)
        errors = await tech.outbox.list(OutboxStatus.ERROR)
        assert [(e.record_id, e.error_code, e.error_reason) for e in errors] == [
            ("job-1", "rejected", "only the office can cancel a job"),
            ("job-2", "rejected", "only the office can cancel a job"),
        ]
        assert (await tech.get("jobs", "job-1")).pending

        async def office_sees_open_jobs() -> bool:
            return [await _status_of(office, r) for r in ("job-1", "job-2", "job-3")] == [
                "open",
                "open",
                "done",
            ]

        await until(office_sees_open_jobs, [office], what="the office to get the accepted edits")

        # Fix one entry (it keeps its place in the order), take the other back.
        await tech.outbox.resolve(errors[0].seq, lambda job: job.__setitem__("status", "on_hold"))
        await tech.outbox.discard(errors[1].seq)
        await tech.retry()
        status = await tech.wait_synced()
        assert (status.pending, status.errors) == (0, 0)
        assert await _status_of(tech, "job-1") == "on_hold"
        assert await _status_of(tech, "job-2") == "open"  # rolled back to the confirmed state

        async def office_sees_fix() -> bool:
            return await _status_of(office, "job-1") == "on_hold"

        await until(office_sees_fix, [office], what="the office to get the fixed entry")
        assert await _status_of(office, "job-2") == "open"
