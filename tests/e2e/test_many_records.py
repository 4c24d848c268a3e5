"""Three replicas x 1,000 records, edited concurrently while online, converge."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from crdt_sync.client import RecordChange, Replica
from helpers.relay import RelayProcess
from helpers.replicas import open_replica, snapshot

RECORDS = 1000
NAMES = ("a", "b", "c")
LWW = {"jobs": ["status"]}


async def _edit_all(replica: Replica) -> None:
    name = replica.replica_id
    for i in range(RECORDS):
        async with replica.edit("jobs", f"r{i:04d}") as record:
            record[f"by_{name}"] = i
            record["status"] = f"{name}-{i}"  # last-write-wins across the three


@pytest.mark.asyncio
async def test_three_replicas_thousand_records_concurrent_edits_converge(
    tmp_path: Path, relay: RelayProcess
) -> None:
    started = time.monotonic()
    async with (
        open_replica(tmp_path, "a", relay, lww=LWW, collections=["jobs"]) as a,
        open_replica(tmp_path, "b", relay, lww=LWW, collections=["jobs"]) as b,
        open_replica(tmp_path, "c", relay, lww=LWW, collections=["jobs"]) as c,
    ):
        replicas = (a, b, c)
        await asyncio.gather(*(r.wait_synced() for r in replicas))
        live: dict[str, int] = dict.fromkeys(NAMES, 0)

        def counter(name: str):  # type: ignore[no-untyped-def]
            def count(_change: RecordChange) -> None:
                live[name] += 1

            return count

        for replica in replicas:
            replica.on_change(counter(replica.replica_id))

        await asyncio.gather(*(_edit_all(r) for r in replicas))
        await asyncio.gather(*(r.wait_synced(60) for r in replicas))
        assert all(count > 0 for count in live.values()), live  # live fan-out reached everyone

        # Every upload is acknowledged, so a reconnect's catch-up brings each replica
        # everything it may still miss: then all three must be identical.
        for replica in replicas:
            await replica.go_offline()
            replica.go_online()
        await asyncio.gather(*(r.wait_synced(60) for r in replicas))
        first = await snapshot(a, ["jobs"])
        assert len(first) == RECORDS
        for other in (b, c):
            assert await snapshot(other, ["jobs"]) == first
        record = first["jobs/r0042"]
        assert {record["by_a"], record["by_b"], record["by_c"]} == {42}
        assert record["status"] in {"a-42", "b-42", "c-42"}
    assert time.monotonic() - started < 120
