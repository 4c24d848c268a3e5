"""Entries refused by the relay's validation hook: outbox errors the app resolves or discards,
and the later entries of the same record, which wait for them and are never lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from crdt_sync.client import Replica
from helpers.relay import RelayClient, RelayProcess
from helpers.replicas import open_replica, until
from helpers.yjs_checks import nothing_pending

from crdt_sync.outbox import OutboxStatus

RULES = """
from pycrdt import Doc
from crdt_sync.records.record import read_fields
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
        errors = await tech.outbox.entries(OutboxStatus.ERROR)
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


async def _relay_state_integrates(relay: RelayProcess, record_id: str) -> bool:
    """Whether all of the relay's stored state of a job integrates (nothing pending)."""
    async with RelayClient.open(relay.url, relay.token("acme", ["jobs"]), "inspector") as client:
        state = (await client.fetch([("jobs", record_id)]))[("jobs", record_id)]
    return nothing_pending(state)


async def _notes(replica: Replica, record_id: str) -> tuple[str | None, str]:
    if not await replica.exists("jobs", record_id):
        return None, ""
    job = await replica.get("jobs", record_id)
    return job.get("status"), job.get("notes", "")


@pytest.mark.asyncio
@pytest.mark.parametrize("settle", ["discard", "resolve"])
async def test_entries_after_a_refused_one_wait_for_it_and_are_not_lost(
    tmp_path: Path, relay_factory: Callable[..., RelayProcess], settle: str
) -> None:
    (tmp_path / "job_rules.py").write_text(RULES)
    relay = relay_factory(args=["--validator", "job_rules:technicians_cannot_cancel"])
    async with (
        open_replica(tmp_path, "tech", relay) as tech,
        open_replica(tmp_path, "office", relay) as office,
    ):
        async with tech.edit("jobs", "job-1") as job:
            job["status"] = "open"
            job.text("notes")
        await tech.wait_synced()
        await tech.go_offline()
        async with tech.edit("jobs", "job-1") as job:  # N: refused by the relay
            job["status"] = "cancelled"
        async with tech.edit("jobs", "job-2") as job:  # another record
            job["status"] = "open"
        async with tech.edit("jobs", "job-1") as job:  # N+1: builds on N
            job["notes"] += "Arrived, Zoë let me in ☕. "
        async with tech.edit("contacts", "c-1") as contact:  # another record
            contact["name"] = "Zoë Müller"
        async with tech.edit("jobs", "job-1") as job:  # N+2
            job["notes"] += "Leak fixed 🔧."
        refused, *waiting = [e.seq for e in await tech.outbox.for_record("jobs", "job-1")]
        tech.go_online()
        status = await tech.wait_synced()

        # The other records went through; N is an error; N+1 and N+2 wait, neither
        # acknowledged nor errors.
        assert (status.pending, status.errors, status.held) == (3, 1, 2)
        entries = {e.seq: e for e in await tech.outbox.entries()}
        assert sorted(entries) == [refused, *waiting]
        assert (entries[refused].status, entries[refused].error_code) == (
            OutboxStatus.ERROR,
            "rejected",
        )
        for seq in waiting:
            assert (entries[seq].status, entries[seq].held_by) == (OutboxStatus.QUEUED, refused)

        async def office_has_the_other_records() -> bool:
            contact = await office.store.exists("contacts", "c-1")
            return contact and await _notes(office, "job-2") == ("open", "")

        await until(office_has_the_other_records, [office], what="the other records")
        # Nothing acknowledged and stuck: nothing pending on the relay.
        assert await _relay_state_integrates(relay, "job-1")
        assert await _notes(office, "job-1") == ("open", "")

        # While N is in error, a new edit of the record is held by the replica itself (never
        # pushed); edits of other records keep flowing.
        async with tech.edit("jobs", "job-1") as job:
            job["notes"] += " Invoice sent."
        async with tech.edit("jobs", "job-2") as job:
            job["status"] = "done"
        status = await tech.wait_synced()
        assert (status.pending, status.errors, status.held) == (4, 1, 3)
        held = (await tech.outbox.for_record("jobs", "job-1"))[-1]
        assert (held.status, held.attempts, held.held_by) == (OutboxStatus.QUEUED, 0, refused)
        await until(lambda: _job_status_is(office, "job-2", "done"), [office], what="job-2 done")

        if settle == "discard":
            await tech.outbox.discard(refused)
            expected_status = "open"
        else:
            await tech.outbox.resolve(refused, lambda job: job.__setitem__("status", "on_hold"))
            expected_status = "on_hold"
        await tech.retry()
        status = await tech.wait_synced()
        assert (status.pending, status.errors, status.held) == (0, 0, 0)
        expected = (expected_status, "Arrived, Zoë let me in ☕. Leak fixed 🔧. Invoice sent.")
        assert await _notes(tech, "job-1") == expected

        async def office_reads_the_waiting_edits() -> bool:
            return await _notes(office, "job-1") == expected

        await until(office_reads_the_waiting_edits, [office], what="the edits that waited")
        assert await _relay_state_integrates(relay, "job-1")


async def _job_status_is(replica: Replica, record_id: str, status: str) -> bool:
    return await _status_of(replica, record_id) == status
