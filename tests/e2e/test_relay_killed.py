"""SIGKILL the relay in the middle of a large upload; restart it on the same data dir and port.

Every entry the client saw acknowledged must be on the restarted relay (acks are sent only
after commit); the client re-sends the rest by itself and every replica converges.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from crdt_sync.client import SessionState, Status
from helpers.relay import RelayClient, RelayProcess
from helpers.replicas import open_replica, snapshot
from pycrdt import Doc

from crdt_sync.records.record import read_fields

ENTRIES = 2000
PAYLOAD = "Relevé de compteur n°{i} — ok ✅ " * 4


@pytest.mark.asyncio
async def test_sigkill_mid_upload_loses_no_acknowledged_entry(
    tmp_path: Path, relay: RelayProcess
) -> None:
    restarted: RelayProcess | None = None
    try:
        async with open_replica(
            tmp_path, "a", relay, offline=True, upload_window=50, dead_after=5.0
        ) as a:
            for i in range(ENTRIES):
                async with a.edit("jobs", f"r{i:04d}") as record:
                    record["n"] = i
                    record["text"] = PAYLOAD.format(i=i)
            entries = await a.outbox.entries()
            assert len(entries) == ENTRIES
            record_of = {e.seq: e.record_id for e in entries}

            def kill_midway(status: Status) -> None:
                if status.pending <= ENTRIES * 3 // 4 and relay.process.poll() is None:
                    relay.kill()

            a.status.subscribe(kill_midway)
            a.go_online()
            await a.status.wait_for(lambda s: relay.process.poll() is not None)
            async with asyncio.timeout(30):  # the client notices the relay is gone
                await a.status.wait_for(lambda s: s.session is SessionState.BACKOFF)
            await a.go_offline()
            remaining = {e.seq for e in await a.outbox.entries()}
            acknowledged = set(record_of) - remaining
            assert 0 < len(acknowledged) < ENTRIES, "the kill did not land mid-upload"

            restarted = relay.restart(same_port=True)
            token = restarted.token("acme", ["jobs", "contacts"])
            async with RelayClient.open(restarted.url, token, "auditor") as auditor:
                _changed, updates, _cursor = await auditor.catch_up(["jobs"], None, within=30)
            on_relay = {}
            for (_collection, record_id), parts in updates.items():
                doc: Doc[Any] = Doc()
                for part in parts:
                    doc.apply_update(part)
                on_relay[record_id] = read_fields(doc)
            for seq in acknowledged:
                record_id = record_of[seq]
                assert record_id in on_relay, f"acknowledged entry {seq} lost by the relay"
                assert on_relay[record_id]["n"] == int(record_id[1:])

            a.go_online()
            await a.wait_synced(60)
            assert await a.outbox.count() == 0
            async with open_replica(tmp_path, "b", restarted) as b:
                await b.wait_synced(60)
                assert len(await b.records("jobs")) == ENTRIES
                assert await snapshot(b, ["jobs"]) == await snapshot(a, ["jobs"])
    finally:
        if restarted is not None:
            restarted.kill()
