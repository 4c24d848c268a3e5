"""The validation hook applies to updates from Yjs clients (y-websocket and Hocuspocus)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.js_peer import JsPeer
from helpers.relay import RelayProcess

VALIDATOR = """
from pycrdt import Doc
from crdt_sync.records.record import read_fields
from crdt_sync.server import UpdateRejected

def closed_jobs_are_read_only(collection, record_id, update, current_state, grant):
    if current_state is None:
        return
    doc = Doc()
    doc.apply_update(current_state)
    if read_fields(doc).get("status") == "closed":
        raise UpdateRejected("job already closed by the office")
"""


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["websocket", "hocuspocus"])
async def test_a_refused_update_is_not_stored_and_the_client_is_told(
    tmp_path: Path, relay_factory: Callable[..., RelayProcess], provider: str
) -> None:
    (tmp_path / "job_rules.py").write_text(VALIDATOR)
    relay = relay_factory(args=["--validator", "job_rules:closed_jobs_are_read_only"])
    token = relay.token("acme", ["jobs"])
    doc = "jobs/job-42"
    office = await JsPeer.start("websocket", relay.url, token, [doc])
    tech = await JsPeer.start(provider, relay.url, token, [doc])
    try:
        await office.call("waitSynced", doc=doc)
        await tech.call("waitSynced", doc=doc)
        await office.call("set", doc=doc, key="status", value="closed")
        await tech.call("waitFields", doc=doc, expect={"status": "closed"})
        await tech.call("set", doc=doc, key="status", value="reopened")
        denied = await tech.event(lambda e: e.get("event") == "denied")
        assert denied["reason"] == "rejected: job already closed by the office"
        if provider == "hocuspocus":
            assert (await tech.call("unsynced", doc=doc))["unsynced"] >= 1
        else:
            closed = await tech.event(lambda e: e.get("event") == "closed")
            assert closed["code"] == 4403
    finally:
        await tech.close()
        await office.close()
    late = await JsPeer.start("websocket", relay.url, token, [doc])
    try:
        await late.call("waitSynced", doc=doc)
        assert (await late.call("read", doc=doc))["fields"] == {"status": "closed"}
    finally:
        await late.close()
