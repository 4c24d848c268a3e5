"""Stores and relay databases written by record layout v1 keep working with layout v2.

``tests/fixtures/v1`` was written by the v1 code (``make_fixtures.py``, commit 4c50050): a
relay data directory and a technician's replica store holding two offline edits not uploaded
yet and an LWW conflict in its log. Copies of them are opened with today's code: every record
reads as it did, the pending edits upload, the v1 objects take new edits in place, and a new
replica that catches up from the relay reads the same records.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import start_relay
from helpers.replicas import open_replica

from crdt_sync.records.lww import Kind

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "v1"
LWW = {"jobs": ["status"]}


def _expected() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())
    return loaded


@pytest.mark.asyncio
async def test_a_v1_store_and_relay_read_upload_edit_and_sync(tmp_path: Path) -> None:
    expected = _expected()
    shutil.copytree(FIXTURES / "relay-data", tmp_path / "relay-data")
    shutil.copy(FIXTURES / "tech.db", tmp_path / "tech.db")
    relay = start_relay(tmp_path / "relay-data")
    try:
        async with open_replica(tmp_path, "tech", relay, lww=LWW, offline=True) as tech:
            # Offline: the v1 store reads exactly as v1 read it, pending edits included.
            for key, fields in expected["records"].items():
                collection, record_id = key.split("/")
                assert dict(await tech.get(collection, record_id)) == fields
            pending = [[e.seq, e.collection, e.record_id] for e in await tech.outbox.entries()]
            assert pending == expected["pending"]
            # The v1 conflict log moved to the v2 one (v1 said: "status: value 'in_progress'
            # (replica tech) was overwritten by 'on_hold' from replica office at ...").
            [conflict] = await tech.conflicts("jobs", "job-1")
            assert "'in_progress' (replica tech)" in expected["conflicts"][0]
            assert (conflict.path, conflict.lost_kind, conflict.lost_value) == (
                ("status",),
                Kind.VALUE,
                "in_progress",
            )
            assert (conflict.lost_replica, conflict.won_value, conflict.won_replica) == (
                "tech",
                "on_hold",
                "office",
            )
            # New edits of v1 objects go in place; a v1 value moves to an entry.
            async with tech.edit("jobs", "job-1") as job:
                job["notes"] += "Signed by the customer.\n"
                job["address"]["zip"] = "75002"
                job["labels"].append("signed")
                job["title"] = "Boiler service (done)"
            tech.go_online()
            await tech.wait_synced()
            assert await tech.outbox.count() == 0
            mine = {k: dict(await tech.get(*k.split("/"))) for k in expected["records"]}
        job = mine["jobs/job-1"]
        assert job["notes"] == expected["records"]["jobs/job-1"]["notes"] + (
            "Signed by the customer.\n"
        )
        assert job["address"] == {**expected["records"]["jobs/job-1"]["address"], "zip": "75002"}
        assert job["labels"] == [*expected["records"]["jobs/job-1"]["labels"], "signed"]
        assert job["title"] == "Boiler service (done)"
        # A replica that starts from nothing catches up to the same records.
        async with open_replica(tmp_path, "fresh", relay, lww=LWW) as fresh:
            await fresh.wait_synced()
            for key, fields in mine.items():
                assert dict(await fresh.get(*key.split("/"))) == fields
            # And it edits them with v2 rules beside the v1 objects.
            async with fresh.edit("jobs", "job-1") as job:
                job["notes"] += "Invoice sent.\n"
                job["priority"] = 3
            await fresh.wait_synced()
            assert (await fresh.get("jobs", "job-1"))["notes"].endswith("Invoice sent.\n")
            # The v1 LWW conflict is still in the document: the new replica lists it too.
            [seen] = await fresh.conflicts("jobs", "job-1")
            assert (seen.key, seen.lost_value, seen.won_value) == (
                conflict.key,
                "in_progress",
                "on_hold",
            )
    finally:
        relay.stop()
