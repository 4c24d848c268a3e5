"""A JavaScript Yjs client (record.mjs over y-websocket or Hocuspocus) and a Python replica,
both offline, create the same text, map and list fields of one record and set the same plain
field; once both are back online, nothing they wrote is lost: both contents of each container
survive on both sides, the plain field holds the most recent write, and the other write is in
the Python replica's conflict log and in the JS client's recordConflicts() (docs/records.md,
docs/yjs.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.js_peer import JsPeer, conflict_to_js
from helpers.relay import RelayProcess
from helpers.replicas import open_replica, until

from crdt_sync.records.lww import Kind

DOC = "jobs/job-7"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("provider", "later"),
    [("websocket", "js"), ("hocuspocus", "py")],
)
async def test_offline_creations_of_the_same_fields_keep_both_and_log_the_loser(
    tmp_path: Path, relay: RelayProcess, provider: str, later: str
) -> None:
    # The later phone write wins. Both clocks read this machine's time; should both writes
    # fall in the same millisecond, the replica ids break the tie the same way.
    js_replica = "web-ana" if later == "js" else "ana"  # "web-ana" > "py" > "ana"
    token = relay.token("acme", ["jobs"])
    async with open_replica(tmp_path, "py", relay) as py:
        async with py.edit("jobs", "job-7") as job:
            job["status"] = "open"
        await py.wait_synced()
        js = await JsPeer.start(provider, relay.url, token, [DOC], replica=js_replica)
        try:
            await js.call("waitSynced", doc=DOC)
            await js.call("waitFields", doc=DOC, expect={"status": "open"})

            await py.go_offline()
            await js.call("disconnect")

            async def python_edits() -> None:
                async with py.edit("jobs", "job-7") as job:
                    job.text("notes").append("Python note. ")
                    job.map("address")["street"] = "1 Rue"
                    job.array("labels").append("py")
                    job["phone"] = "111-PY"

            async def js_edits() -> None:
                await js.call("append", doc=DOC, field="notes", insert="JS note. ")
                await js.call("setIn", doc=DOC, map="address", key="floor", value=3)
                await js.call("push", doc=DOC, field="labels", items=["js"])
                await js.call("set", doc=DOC, key="phone", value="222-JS")

            first, second = (python_edits, js_edits) if later == "js" else (js_edits, python_edits)
            await first()
            await second()
            won, lost = ("222-JS", "111-PY") if later == "js" else ("111-PY", "222-JS")

            await js.call("connect")
            py.go_online()
            expected = {"status": "open", "address": {"street": "1 Rue", "floor": 3}, "phone": won}
            read = await js.call("waitFields", doc=DOC, expect=expected)
            await js.call("waitSynced", doc=DOC)
            fields = read["fields"]
            assert fields["notes"] in ("Python note. JS note. ", "JS note. Python note. ")
            assert sorted(fields["labels"]) == ["js", "py"]

            async def python_reads_it() -> bool:
                return dict((await py.get("jobs", "job-7")).fields) == fields

            await until(python_reads_it, [py], what=f"the Python replica to read {fields}")
            js_conflicts = (await js.call("waitConflicts", doc=DOC, count=1))["conflicts"]
        finally:
            await js.close()

        await py.store.scan_conflicts()
        [logged] = await py.store.conflicts("jobs", "job-7")
        assert logged.path == ("phone",)
        assert (logged.lost_kind, logged.lost_value) == (Kind.VALUE, lost)
        assert (logged.won_kind, logged.won_value) == (Kind.VALUE, won)
        assert logged.lost_replica == ("py" if later == "js" else js_replica)
        [seen] = js_conflicts
        assert seen == conflict_to_js(logged.as_conflict())  # the same key on both sides
