"""Real y-websocket clients (Node: yjs 13.6 + y-websocket 3.1) and Python replicas edit the same
records through one real relay process (``/yjs/<collection>/<record id>``, docs/yjs.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.js_peer import JsPeer
from helpers.relay import RelayProcess
from helpers.replicas import open_replica, until

DOC = "jobs/job-1"


async def _python_has(replica: Any, expect: dict[str, Any]) -> None:
    async def check() -> bool:
        if not await replica.exists("jobs", "job-1"):
            return False
        record = await replica.get("jobs", "job-1")
        return all(record.get(k) == v for k, v in expect.items())

    await until(check, [replica], what=f"python replica to read {expect}")


@pytest.mark.asyncio
async def test_node_and_python_edit_text_and_map_live_and_offline(
    tmp_path: Path, relay: RelayProcess
) -> None:
    token = relay.token("acme", ["jobs"])
    async with open_replica(tmp_path, "py", relay) as py:
        async with py.edit("jobs", "job-1") as job:
            job.text("notes").append("Début")
            job["details"] = {"city": "Lyon"}
        await py.wait_synced()
        js = await JsPeer.start("websocket", relay.url, token, [DOC])
        try:
            await js.call("waitSynced", doc=DOC)
            start = {"notes": "Début", "details": {"city": "Lyon"}}
            await js.call("waitFields", doc=DOC, expect=start)

            # Live, both ways, concurrently.
            await js.call("append", doc=DOC, field="notes", insert=" JS")
            await js.call("setIn", doc=DOC, map="details", key="floor", value=3)
            async with py.edit("jobs", "job-1") as job:
                job.text("notes").insert(0, "PY ")
                job.map("details")["zip"] = "69001"
            expected = {
                "notes": "PY Début JS",
                "details": {"city": "Lyon", "floor": 3, "zip": "69001"},
            }
            await js.call("waitFields", doc=DOC, expect=expected)
            await _python_has(py, expected)

            # Both offline, both edit, both reconnect: they converge.
            await py.go_offline()
            await js.call("disconnect")
            await js.call("append", doc=DOC, field="notes", insert=" (js offline)")
            await js.call("setIn", doc=DOC, map="details", key="js", value=True)
            async with py.edit("jobs", "job-1") as job:
                job.text("notes").append(" (py offline)")
                job.map("details")["py"] = True
            await js.call("connect")
            await js.call("waitSynced", doc=DOC)
            py.go_online()
            await py.wait_synced()
            read = await js.call(
                "waitFields",
                doc=DOC,
                expect={
                    "details": {"city": "Lyon", "floor": 3, "zip": "69001", "js": True, "py": True}
                },
            )
            notes = read["fields"]["notes"]
            assert "(js offline)" in notes and "(py offline)" in notes
            await _python_has(py, {"notes": notes, "details": read["fields"]["details"]})
        finally:
            await js.close()

        # A Node client that connects later gets the full state.
        late = await JsPeer.start("websocket", relay.url, token, [DOC])
        try:
            await late.call("waitSynced", doc=DOC)
            final = await py.get("jobs", "job-1")
            await late.call(
                "waitFields", doc=DOC, expect={"notes": final["notes"], "details": final["details"]}
            )
        finally:
            await late.close()


@pytest.mark.asyncio
async def test_updates_are_echoed_to_every_connection_and_persisted(
    tmp_path: Path, relay: RelayProcess
) -> None:
    token = relay.token("acme", ["jobs"])
    a = await JsPeer.start("websocket", relay.url, token, [DOC])
    b = await JsPeer.start("websocket", relay.url, token, [DOC])
    try:
        await a.call("waitSynced", doc=DOC)
        await b.call("waitSynced", doc=DOC)
        await a.call("set", doc=DOC, key="status", value="open")
        await b.call("waitFields", doc=DOC, expect={"status": "open"})
    finally:
        await a.close()
        await b.close()
    # Persisted: after a restart of the relay, a new client and a Python replica read it.
    relay.stop()
    again = relay.restart()
    try:
        c = await JsPeer.start("websocket", again.url, token, [DOC])
        try:
            await c.call("waitFields", doc=DOC, expect={"status": "open"})
        finally:
            await c.close()
        async with open_replica(tmp_path, "py", again) as py:
            await _python_has(py, {"status": "open"})
    finally:
        again.kill()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("tenant_token", "reason"),
    [("bad", "bad_token"), ("other-collection", "forbidden")],
)
async def test_refused_tokens_get_permission_denied_and_a_close(
    relay: RelayProcess, tenant_token: str, reason: str
) -> None:
    token = "v1.not-a-token" if tenant_token == "bad" else relay.token("acme", ["contacts"])
    js = await JsPeer.start("websocket", relay.url, token, [DOC])
    try:
        denied = await js.event(lambda e: e.get("event") == "denied")
        assert denied["reason"].startswith(reason)
        closed = await js.event(lambda e: e.get("event") == "closed")
        assert closed["code"] == 4403
        read = await js.call("read", doc=DOC)
        assert read["fields"] == {}
    finally:
        await js.close()


@pytest.mark.asyncio
async def test_awareness_is_relayed_and_removed_on_close(relay: RelayProcess) -> None:
    token = relay.token("acme", ["jobs"])
    a = await JsPeer.start("websocket", relay.url, token, [DOC])
    b = await JsPeer.start("websocket", relay.url, token, [DOC])
    try:
        await a.call("waitSynced", doc=DOC)
        await b.call("waitSynced", doc=DOC)
        me = await a.call("setAwareness", doc=DOC, state={"user": "ana", "job": "job-1"})
        seen = await b.call("waitAwareness", doc=DOC, count=1)
        assert seen["states"] == {str(me["clientId"]): {"user": "ana", "job": "job-1"}}
        # A client joining later gets the states present.
        c = await JsPeer.start("websocket", relay.url, token, [DOC])
        try:
            await c.call("waitAwareness", doc=DOC, count=1)
        finally:
            await c.close()
        await a.close()
        await b.call("waitAwareness", doc=DOC, count=0)
    finally:
        await a.close()
        await b.close()
