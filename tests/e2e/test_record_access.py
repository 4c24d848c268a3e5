"""Record-level access through a real relay process: a token restricted to the jobs assigned
to its user (``where: assigned_to = <claim sub>``) can neither read nor write another job, nor
move its own job out of its access, on the native, y-websocket and Hocuspocus endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crdt_sync.client import Subscription
from crdt_sync.server.tokens import mint
from helpers.js_peer import JsPeer
from helpers.relay import RelayClient, RelayProcess
from helpers.replicas import open_replica, until

from crdt_sync.query import Claim, field


def amy_token(relay: RelayProcess) -> str:
    return mint(
        relay.secret,
        "acme",
        ["jobs"],
        3600,
        where={"jobs": field("assigned_to").eq(Claim("sub"))},
        claims={"sub": "amy"},
    )


async def _office_jobs(tmp_path: Path, relay: RelayProcess) -> None:
    async with open_replica(tmp_path, "office", relay, collections=("jobs",)) as office:
        for rid, who in (("job-a", "amy"), ("job-b", "bob")):
            async with office.edit("jobs", rid) as job:
                job["assigned_to"] = who
                job["status"] = "open"
        await office.wait_synced()


async def _errors(replica: Any) -> dict[str, tuple[str | None, str | None]]:
    return {
        e.record_id: (e.error_code, e.error_reason)
        for e in await replica.outbox.entries()
        if e.error_code is not None
    }


@pytest.mark.asyncio
async def test_native_replica_reads_and_writes_only_its_records(
    tmp_path: Path, relay: RelayProcess
) -> None:
    await _office_jobs(tmp_path, relay)
    token = amy_token(relay)
    async with open_replica(tmp_path, "amy", relay, token=token, collections=("jobs",)) as amy:
        await amy.wait_synced()
        assert await amy.store.ids("jobs") == ["job-a"]
        assert amy.grant is not None and dict(amy.grant.scopes)["jobs"] == [
            "eq",
            "assigned_to",
            {"claim": "sub"},
        ]
        # Writing another's record, or moving one's own out, is refused (forbidden).
        async with amy.edit("jobs", "job-b") as job:
            job["status"] = "hijacked"
        async with amy.edit("jobs", "job-a") as job:
            job["assigned_to"] = "bob"

        async def refused() -> bool:
            return len(await _errors(amy)) == 2

        await until(refused, [amy], what="both edits refused")
        errors = await _errors(amy)
        assert errors["job-b"] == ("forbidden", "the record is outside this token's access")
        assert errors["job-a"][0] == "forbidden"
        assert "move the record outside" in (errors["job-a"][1] or "")
        # A new record must be inside too.
        async with amy.edit("jobs", "job-c") as job:
            job["assigned_to"] = "amy"
        async with amy.edit("jobs", "job-d") as job:
            job["status"] = "unassigned"

        async def settled() -> bool:
            return len(await _errors(amy)) == 3 and await amy.outbox.count() == 3

        await until(settled, [amy], what="job-c stored, job-d refused")
        assert (await _errors(amy))["job-d"][0] == "forbidden"

    # A raw client asking for job-b's state gets nothing of it.
    async with RelayClient.open(relay.url, token, "raw") as client:
        received = await client.fetch([("jobs", "job-b"), ("jobs", "job-a")])
        assert set(received) == {("jobs", "job-a")}

    # The office reassigns job-a: amy's replica drops it (live).
    async with open_replica(tmp_path, "amy2", relay, token=token, collections=("jobs",)) as amy:
        await amy.wait_synced()
        assert set(await amy.store.ids("jobs")) == {"job-a", "job-c"}
        async with open_replica(tmp_path, "office", relay, collections=("jobs",)) as office:
            async with office.edit("jobs", "job-a") as job:
                job["assigned_to"] = "bob"
            await office.wait_synced()

        async def dropped() -> bool:
            return await amy.store.ids("jobs") == ["job-c"]

        await until(dropped, [amy], what="job-a dropped once reassigned")


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["websocket", "hocuspocus"])
async def test_yjs_clients_read_and_write_only_their_records(
    tmp_path: Path, relay: RelayProcess, provider: str
) -> None:
    await _office_jobs(tmp_path, relay)
    token = amy_token(relay)
    # Reading another's record: refused at open.
    other = await JsPeer.start(provider, relay.url, token, ["jobs/job-b"])
    try:
        denied = await other.event(lambda e: e.get("event") == "denied")
        assert denied["reason"] == "forbidden: the record is outside this token's access"
        assert (await other.call("read", doc="jobs/job-b"))["fields"] == {}
    finally:
        await other.close()
    # Its own record: synced; moving it out is refused.
    own = await JsPeer.start(provider, relay.url, token, ["jobs/job-a"])
    try:
        await own.call("waitSynced", doc="jobs/job-a")
        await own.call("waitFields", doc="jobs/job-a", expect={"assigned_to": "amy"})
        await own.call("set", doc="jobs/job-a", key="status", value="started")
        await own.call("waitSynced", doc="jobs/job-a")
        await own.call("set", doc="jobs/job-a", key="assigned_to", value="bob")
        denied = await own.event(lambda e: e.get("event") == "denied")
        assert denied["reason"].startswith("forbidden: this change would move the record")
    finally:
        await own.close()
    # A new record outside the access: refused.
    new = await JsPeer.start(provider, relay.url, token, ["jobs/job-z"])
    try:
        await new.call("waitSynced", doc="jobs/job-z")
        await new.call("set", doc="jobs/job-z", key="status", value="open")
        denied = await new.event(lambda e: e.get("event") == "denied")
        assert denied["reason"].startswith("forbidden")
    finally:
        await new.close()
    # What the relay kept: job-a started and still amy's; no job-z.
    async with open_replica(tmp_path, "office2", relay, collections=("jobs",)) as office:
        await office.wait_synced()
        job_a = await office.get("jobs", "job-a")
        assert job_a["assigned_to"] == "amy" and job_a["status"] == "started"
        assert not await office.exists("jobs", "job-z")


@pytest.mark.asyncio
async def test_subscriptions_inside_a_grant(tmp_path: Path, relay: RelayProcess) -> None:
    await _office_jobs(tmp_path, relay)
    token = amy_token(relay)
    subs = [Subscription("jobs", ids=["job-a", "job-b"])]
    async with open_replica(
        tmp_path, "amy", relay, token=token, collections=None, subscriptions=subs
    ) as amy:
        await amy.wait_synced()
        assert await amy.store.ids("jobs") == ["job-a"]  # the grant wins over the ids
