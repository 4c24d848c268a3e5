"""Deletion end to end: real relay processes (one with a short tombstone TTL), real SQLite files.

- A delete syncs to the other replica, is pending until acknowledged, and an edit made
  concurrently (offline) loses to it and is in the conflict log of both replicas.
- With ``--tombstone-ttl`` a fraction of a second, the relay purges the deleted record; a
  replica that was offline longer than the TTL still converges: without pending changes it
  drops its copy; with pending edits of the purged record, they are logged as lost to the
  deletion and leave the outbox (nothing stuck, nothing lost silently).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from crdt_sync.client import RecordChange
from helpers.relay import RelayProcess, start_relay
from helpers.replicas import open_replica, until

from crdt_sync.errors import RecordDeleted, RecordNotFound

COLLECTIONS = ("jobs",)
TTL_DAYS = 0.5 / 86400  # half a second


@pytest.mark.asyncio
async def test_a_delete_syncs_and_wins_over_a_concurrent_edit(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with (
        open_replica(tmp_path, "a", relay) as a,
        open_replica(tmp_path, "b", relay) as b,
    ):
        async with a.edit("jobs", "job-1") as job:
            job["status"] = "open"
            job["notes"] = "gate code 1234"
        await a.wait_synced()
        await until(lambda: b.exists("jobs", "job-1"), [b], what="b to receive job-1")

        await b.go_offline()
        async with b.edit("jobs", "job-1") as job:  # concurrent with the delete below
            job["status"] = "done"

        await a.go_offline()
        mine = a.changes()
        local = asyncio.ensure_future(anext(mine))
        await a.delete("jobs", "job-1")
        async with asyncio.timeout(10):  # a local change, every field gone, deleted
            assert await local == RecordChange(
                "jobs", "job-1", "local", frozenset({"status", "notes"}), deleted=True
            )
        await mine.aclose()
        with pytest.raises(RecordDeleted, match="was deleted by replica a"):
            await a.get("jobs", "job-1")
        assert not await a.exists("jobs", "job-1")
        assert await a.records("jobs") == []
        assert a.status.current.pending == 1  # the tombstone waits for the relay
        await a.delete("jobs", "job-1")  # deleting twice does nothing
        assert a.status.current.pending == 1

        changes = b.changes()
        deleted = asyncio.ensure_future(anext(changes))
        a.go_online()
        await a.wait_synced()
        assert a.status.current.pending == 0
        b.go_online()
        await b.wait_synced()
        async with asyncio.timeout(10):
            assert await deleted == RecordChange("jobs", "job-1", deleted=True)
        await changes.aclose()
        await a.sync_now()

        for replica in (a, b):

            async def gone(replica=replica) -> bool:  # type: ignore[no-untyped-def]
                return not await replica.exists("jobs", "job-1")

            await until(gone, [a, b], what=f"{replica.replica_id} to see the deletion")
            with pytest.raises(RecordDeleted):
                await replica.get("jobs", "job-1")

            async def logged(replica=replica) -> bool:  # type: ignore[no-untyped-def]
                return any(
                    c.lost_value == "done" and c.won_deleted
                    for c in await replica.conflicts("jobs", "job-1")
                )

            await until(logged, [a, b], what=f"{replica.replica_id} to log the lost edit")
        (lost,) = [c for c in await a.conflicts("jobs", "job-1") if c.lost_value == "done"]
        assert lost.lost_replica == "b" and lost.won_replica == "a"
        assert "'done' from replica b was overwritten by a deletion from replica a" in (
            lost.describe()
        )
        with pytest.raises(RecordDeleted):
            async with b.edit("jobs", "job-1") as job:
                job["status"] = "again"


@pytest.mark.asyncio
async def test_a_replica_offline_longer_than_the_ttl_converges(tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "relay-data", args=["--tombstone-ttl", repr(TTL_DAYS)])
    try:
        async with (
            open_replica(tmp_path, "a", relay) as a,
            open_replica(tmp_path, "b", relay) as b,
            open_replica(tmp_path, "c", relay) as c,
        ):
            for record_id in ("job-1", "job-2", "job-3"):
                async with a.edit("jobs", record_id) as job:
                    job["status"] = "open"
            await a.wait_synced()
            for replica in (b, c):

                async def has_all(replica=replica) -> bool:  # type: ignore[no-untyped-def]
                    return await replica.store.ids("jobs") == ["job-1", "job-2", "job-3"]

                await until(has_all, [a, b, c], what=f"{replica.replica_id} to get the jobs")

            # b: offline, no change of job-1. c: offline, pending edits of job-2.
            await b.go_offline()
            await c.go_offline()
            async with c.edit("jobs", "job-2") as job:
                job["status"] = "in_progress"
                job["notes"] = "replaced the pump"
            assert c.status.current.pending == 1

            await a.delete("jobs", "job-1")
            await a.delete("jobs", "job-2")
            await a.wait_synced()

            # The relay purges both once the TTL has passed (a sees them leave its store).
            async def purged() -> bool:
                rows = _relay_rows(relay.data_dir, "job-1") + _relay_rows(relay.data_dir, "job-2")
                return rows == 0 and not a.store.is_deleted("jobs", "job-1")

            await until(purged, [a], within=20, what="the relay to purge job-1 and job-2")
            with pytest.raises(RecordNotFound):
                await a.get("jobs", "job-1")

            b_changes = b.changes()
            removed = asyncio.ensure_future(anext(b_changes))
            b.go_online()
            c.go_online()
            await b.wait_synced()
            await c.wait_synced()

            # b had no change: it dropped its copy (every row of it).
            async with asyncio.timeout(10):
                assert await removed == RecordChange("jobs", "job-1", deleted=True)
            await b_changes.aclose()
            assert await b.store.ids("jobs") == ["job-3"]
            assert not await b.exists("jobs", "job-1")
            assert _local_rows(tmp_path, "b", "job-1") == 0

            # c's pending edits of job-2 are in its conflict log as lost to the deletion, and
            # the outbox entry is settled (not stuck in error).
            assert c.status.current.pending == 0 and c.status.current.errors == 0
            assert await c.outbox.entries() == []
            assert await c.store.ids("jobs") == ["job-3"]
            assert _local_rows(tmp_path, "c", "job-2") == 0
            lost = {(e.field, e.lost_value) for e in await c.conflicts("jobs", "job-2")}
            assert lost == {("status", "in_progress"), ("notes", "replaced the pump")}
            for entry in await c.conflicts("jobs", "job-2"):
                assert entry.won_deleted and entry.lost_replica == "c"
                assert entry.won_replica == "a"  # the tombstone came with the removal

            # An edit of the purged id after that is refused and settled the same way.
            async with c.edit("jobs", "job-2") as job:
                job["status"] = "zombie"
            await c.sync_now()

            async def settled() -> bool:
                ids = await c.store.ids("jobs")
                return c.status.current.pending == 0 and ids == ["job-3"]

            await until(settled, [c], what="c to settle its edit of the purged record")
            assert c.status.current.errors == 0
            assert any(e.lost_value == "zombie" for e in await c.conflicts("jobs", "job-2"))
            assert _relay_rows(relay.data_dir, "job-2") == 0  # never stored again
    finally:
        relay.kill()


def _relay_rows(data_dir: Path, record_id: str) -> int:
    """Rows the relay's SQLite file holds of the record (its purged row left out)."""
    with sqlite3.connect(data_dir / "relay.sqlite3") as db:
        return sum(
            db.execute(
                f"SELECT COUNT(*) FROM {table} WHERE record_id = ?", (record_id,)
            ).fetchone()[0]
            for table in ("snapshots", "log", "changes", "tombstones")
        )


def _local_rows(tmp_path: Path, name: str, record_id: str) -> int:
    """Rows a replica's store file holds of the record (the conflict log left out)."""
    with sqlite3.connect(tmp_path / f"{name}.db") as db:
        return sum(
            db.execute(f"SELECT COUNT(*) FROM {table} WHERE id = ?", (record_id,)).fetchone()[0]
            for table in ("records", "updates", "outbox")
        )


@pytest.mark.asyncio
async def test_a_replica_following_a_query_gets_the_deletion_and_logs_its_lost_edit(
    tmp_path: Path, relay: RelayProcess
) -> None:
    # docs/relay.md, "Deletion and purge": a deleted record keeps matching the subscriptions
    # it matched, so a device that holds it through a query gets the tombstone (the record
    # leaves its queries) and its own concurrent edit is logged as lost, never silently gone.
    from crdt_sync.client import Subscription

    subscriptions = [Subscription("jobs", where={"status": "open"})]
    token = relay.token("acme", ["jobs"])
    async with (
        open_replica(tmp_path, "office", relay, collections=["jobs"]) as office,
        open_replica(
            tmp_path, "tech", relay, token=token, collections=None, subscriptions=subscriptions
        ) as tech,
    ):
        for rid in ("job-1", "job-2"):
            async with office.edit("jobs", rid) as job:
                job["status"] = "open"
        await office.wait_synced()

        async def both_open() -> bool:
            return [r.id for r in await tech.query("jobs", {"status": "open"})] == [
                "job-1",
                "job-2",
            ]

        await until(both_open, [tech], what="tech to get the jobs")

        await tech.go_offline()
        async with tech.edit("jobs", "job-1") as job:  # concurrent with the delete below
            job["notes"] = "parts ordered"
        await office.delete("jobs", "job-1")
        await office.wait_synced()
        tech.go_online()
        await tech.wait_synced()
        await tech.sync_now()

        async def lost_logged() -> bool:
            return any(
                c.won_deleted and c.lost_value == "parts ordered"
                for c in await tech.conflicts("jobs", "job-1")
            )

        await until(lost_logged, [tech], what="tech to log its edit as lost to the deletion")
        assert [r.id for r in await tech.query("jobs", {"status": "open"})] == ["job-2"]
        assert await tech.count("jobs") == 1
        with pytest.raises(RecordDeleted):
            await tech.get("jobs", "job-1")
        assert tech.status.current.pending == 0  # its edit was taken (and lost to the deletion)
