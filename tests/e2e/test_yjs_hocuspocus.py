"""Real @hocuspocus/provider 4.8 clients (Node) and Python replicas edit the same records through
one real relay process (``/hocuspocus``: many records on one socket, docs/yjs.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.js_peer import JsPeer
from helpers.relay import RelayProcess
from helpers.replicas import open_replica, until

DOCS = ["jobs/job-1", "jobs/job-2", "contacts/c-1"]


async def _python_has(
    replica: Any, collection: str, record_id: str, expect: dict[str, Any]
) -> None:
    async def check() -> bool:
        if not await replica.exists(collection, record_id):
            return False
        record = await replica.get(collection, record_id)
        return all(record.get(k) == v for k, v in expect.items())

    await until(check, [replica], what=f"{collection}/{record_id} to read {expect}")


@pytest.mark.asyncio
async def test_many_records_on_one_socket_with_python_replicas(
    tmp_path: Path, relay: RelayProcess
) -> None:
    token = relay.token("acme", ["jobs", "contacts"])
    async with open_replica(tmp_path, "py", relay) as py:
        async with py.edit("jobs", "job-1") as job:
            job.text("notes").append("Début")
        await py.wait_synced()
        js = await JsPeer.start("hocuspocus", relay.url, token, DOCS)
        try:
            for doc in DOCS:
                await js.event(
                    lambda e, d=doc: e.get("event") == "authenticated" and e.get("doc") == d
                )
                await js.call("waitSynced", doc=doc)
            await js.call("waitFields", doc="jobs/job-1", expect={"notes": "Début"})
            # JS edits three records over one socket; each is acknowledged after its commit.
            await js.call("append", doc="jobs/job-1", field="notes", insert=" JS")
            await js.call("setIn", doc="jobs/job-2", map="details", key="city", value="Lyon")
            await js.call("set", doc="contacts/c-1", key="name", value="Zoé")
            for doc in DOCS:
                await js.call("waitSynced", doc=doc)  # unsyncedChanges back to 0: all acked
            await _python_has(py, "jobs", "job-1", {"notes": "Début JS"})
            await _python_has(py, "jobs", "job-2", {"details": {"city": "Lyon"}})
            await _python_has(py, "contacts", "c-1", {"name": "Zoé"})
            # Python edits reach the provider live.
            async with py.edit("jobs", "job-2") as job:
                job.map("details")["zip"] = "69001"
            await js.call(
                "waitFields", doc="jobs/job-2", expect={"details": {"city": "Lyon", "zip": "69001"}}
            )
            # Offline on both sides, then converge.
            await py.go_offline()
            await js.call("disconnect")
            await js.call("append", doc="jobs/job-1", field="notes", insert=" (js offline)")
            async with py.edit("jobs", "job-1") as job:
                job.text("notes").insert(0, "PY ")
            await js.call("connect")
            py.go_online()
            await py.wait_synced()
            read = await js.call(
                "waitFields", doc="jobs/job-1", expect={"notes": "PY Début JS (js offline)"}
            )
            await js.call("waitSynced", doc="jobs/job-1")
            await _python_has(py, "jobs", "job-1", {"notes": read["fields"]["notes"]})
        finally:
            await js.close()

    # A provider that connects later gets the full state, and so does a y-websocket client.
    late = await JsPeer.start("hocuspocus", relay.url, token, ["jobs/job-2"])
    try:
        await late.call(
            "waitFields", doc="jobs/job-2", expect={"details": {"city": "Lyon", "zip": "69001"}}
        )
    finally:
        await late.close()


@pytest.mark.asyncio
async def test_sync_status_counts_down_to_zero_after_commits(relay: RelayProcess) -> None:
    token = relay.token("acme", ["jobs"])
    js = await JsPeer.start("hocuspocus", relay.url, token, ["jobs/job-9"])
    try:
        await js.call("waitSynced", doc="jobs/job-9")
        for i in range(20):
            await js.call("set", doc="jobs/job-9", key=f"k{i}", value=i)
        await js.call("waitSynced", doc="jobs/job-9")
        assert (await js.call("unsynced", doc="jobs/job-9"))["unsynced"] == 0
        decrements = [e for e in js.events if e.get("event") == "unsynced"]
        assert max(e["number"] for e in decrements) >= 1
    finally:
        await js.close()
    status, metrics = relay.get("/metrics")
    assert status == 200
    applied = [
        line for line in metrics.splitlines() if line.startswith("crdt_sync_updates_applied_total")
    ]
    assert applied and float(applied[0].split()[-1]) >= 20


@pytest.mark.asyncio
async def test_refused_documents_get_permission_denied_and_others_work(
    relay: RelayProcess,
) -> None:
    token = relay.token("acme", ["jobs"])
    js = await JsPeer.start("hocuspocus", relay.url, token, ["jobs/ok", "contacts/c-1"])
    try:
        denied = await js.event(lambda e: e.get("event") == "denied")
        assert denied["doc"] == "contacts/c-1"
        assert denied["reason"].startswith("forbidden")
        await js.call("waitSynced", doc="jobs/ok")
        await js.call("set", doc="jobs/ok", key="status", value="open")
        await js.call("waitSynced", doc="jobs/ok")
    finally:
        await js.close()
    bad = await JsPeer.start("hocuspocus", relay.url, "v1.bad", ["jobs/ok"])
    try:
        denied = await bad.event(lambda e: e.get("event") == "denied")
        assert denied["reason"].startswith("bad_token")
        assert (await bad.call("read", doc="jobs/ok"))["fields"] == {}
    finally:
        await bad.close()


@pytest.mark.asyncio
async def test_awareness_between_hocuspocus_and_y_websocket_clients(relay: RelayProcess) -> None:
    token = relay.token("acme", ["jobs"])
    hp = await JsPeer.start("hocuspocus", relay.url, token, ["jobs/job-1"])
    yws = await JsPeer.start("websocket", relay.url, token, ["jobs/job-1"])
    try:
        await hp.call("waitSynced", doc="jobs/job-1")
        await yws.call("waitSynced", doc="jobs/job-1")
        me = await hp.call("setAwareness", doc="jobs/job-1", state={"user": "ana"})
        seen = await yws.call("waitAwareness", doc="jobs/job-1", count=1)
        assert seen["states"] == {str(me["clientId"]): {"user": "ana"}}
        # And edits cross the two protocols.
        await yws.call("set", doc="jobs/job-1", key="status", value="on_site")
        await hp.call("waitFields", doc="jobs/job-1", expect={"status": "on_site"})
        await hp.close()
        await yws.call("waitAwareness", doc="jobs/job-1", count=0)
    finally:
        await hp.close()
        await yws.close()
