"""Deletion with JavaScript Yjs clients (crdt_sync/js/record.mjs over y-websocket and
Hocuspocus) and a Python replica, through a real relay process (docs/yjs.md, "Deleted
records"): a JS client deletes and the Python replica reads the record as gone; the Python
replica deletes and the JS client sees the tombstone, while a JS edit made without seeing the
deletion is in both sides' conflict logs as lost to it; once the relay purges the record, a
client opening it is refused with a reason that says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.js_peer import JsPeer
from helpers.relay import start_relay
from helpers.replicas import open_replica, until

from crdt_sync.errors import RecordDeleted

TTL_DAYS = 1.5 / 86400  # 1.5 s


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["websocket", "hocuspocus"])
async def test_yjs_clients_delete_and_see_deletions(tmp_path: Path, provider: str) -> None:
    relay = start_relay(tmp_path / "relay-data", args=["--tombstone-ttl", repr(TTL_DAYS)])
    token = relay.token("acme", ["jobs"])
    try:
        async with open_replica(tmp_path, "py", relay) as py:
            for record_id in ("job-1", "job-2"):
                async with py.edit("jobs", record_id) as job:
                    job["status"] = "open"
            await py.wait_synced()
            js = await JsPeer.start(
                provider, relay.url, token, ["jobs/job-1", "jobs/job-2"], replica="web-ana"
            )
            try:
                for doc in ("jobs/job-1", "jobs/job-2"):
                    await js.call("waitSynced", doc=doc)
                    await js.call("waitFields", doc=doc, expect={"status": "open"})

                # A JS client deletes job-1: the Python replica reads it as gone.
                tombstone = (await js.call("delete", doc="jobs/job-1"))["tombstone"]
                assert tombstone.endswith(".web-ana")

                async def py_sees_it() -> bool:
                    return py.store.is_deleted("jobs", "job-1")

                await until(py_sees_it, [py], what="the Python replica to see the JS delete")
                with pytest.raises(RecordDeleted, match="by replica web-ana"):
                    await py.get("jobs", "job-1")

                # The JS client edits job-2 offline while the Python replica deletes it.
                await js.call("disconnect")
                await js.call("set", doc="jobs/job-2", key="status", value="done")
                await py.delete("jobs", "job-2")
                await py.wait_synced()
                await js.call("connect")
                seen = await js.call("waitDeleted", doc="jobs/job-2")
                assert seen["tombstone"].endswith(".py")
                conflicts = (await js.call("waitConflicts", doc="jobs/job-2", count=1))["conflicts"]
                assert [(c["lost"]["value"], c["won"]["kind"]) for c in conflicts] == [
                    ("done", "deleted")
                ]

                async def py_logged() -> bool:
                    return any(
                        c.lost_value == "done" and c.won_deleted and c.lost_replica == "web-ana"
                        for c in await py.conflicts("jobs", "job-2")
                    )

                await until(py_logged, [py], what="the Python replica to log the lost JS edit")

                # Purged: a client that had it open is refused, and so is one opening it.
                await js.event(
                    lambda e: e.get("event") == "denied" and "deleted" in e.get("reason", ""),
                    within=20,
                )
            finally:
                await js.close()
            late = await JsPeer.start(provider, relay.url, token, ["jobs/job-2"])
            try:
                denied = await late.event(lambda e: e.get("event") == "denied", within=20)
                assert "was deleted" in denied["reason"] and "purged" in denied["reason"]
            finally:
                await late.close()
    finally:
        relay.kill()
