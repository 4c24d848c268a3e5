"""/healthz and /metrics on the relay's port, scraped from a running relay."""

from __future__ import annotations

import re

import pytest
from crdt_sync.server.tokens import mint
from helpers.relay import RelayClient, RelayProcess
from pycrdt import Doc, Text


def _sample(metrics: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (("{" + labels + "}") if labels else "")) + r" (\S+)"
    match = re.search(r"^" + pattern + "$", metrics, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))


def test_healthz_answers_ok(relay: RelayProcess) -> None:
    assert relay.get("/healthz") == (200, "ok\n")


@pytest.mark.asyncio
async def test_metrics_count_connections_frames_updates_acks_errors_latency(
    relay: RelayProcess,
) -> None:
    _, before = relay.get("/metrics")
    doc = Doc()
    doc.get("notes", type=Text).insert(0, "metrics")
    token = relay.token("metrics", ["jobs"])
    async with RelayClient.open(relay.url, token, "m") as client:
        await client.push_and_settle([(1, "jobs", "r", doc.get_update()), (2, "jobs", "x", b"!")])
        _, during = relay.get("/metrics")
        assert _sample(during, "crdt_sync_connections") >= 1
    async with RelayClient.open(
        relay.url, mint("wrong", "t", ["jobs"], 60), "m", welcome=False
    ) as bad:
        await bad.closed_with()
    _, after = relay.get("/metrics")
    assert "# TYPE crdt_sync_message_latency_seconds histogram" in after
    for name, labels, at_least in [
        ("crdt_sync_connections_accepted_total", "", 2),
        ("crdt_sync_frames_in_total", 'type="push"', 1),
        ("crdt_sync_frames_in_total", 'type="hello"', 2),
        ("crdt_sync_frames_out_total", 'type="ack"', 1),
        ("crdt_sync_updates_applied_total", "", 1),
        ("crdt_sync_acks_total", "", 1),
        ("crdt_sync_rejects_total", 'code="invalid_update"', 1),
        ("crdt_sync_errors_total", 'code="bad_token"', 1),
        ("crdt_sync_message_latency_seconds_count", 'type="push"', 1),
    ]:
        old = (
            _sample(before, name, labels)
            if f"{name}{{{labels}}}" in before
            or (not labels and re.search(rf"^{name} ", before, re.MULTILINE))
            else 0.0
        )
        assert _sample(after, name, labels) - old >= at_least, (name, labels)
    assert _sample(after, "crdt_sync_bytes_in_total") > _sample(before, "crdt_sync_bytes_in_total")
    assert _sample(after, "crdt_sync_bytes_out_total") > _sample(
        before, "crdt_sync_bytes_out_total"
    )
    assert _sample(after, "crdt_sync_storage_commits") >= 1
    assert _sample(after, "crdt_sync_storage_wal_bytes") > 0  # the commits went to the WAL
    assert _sample(after, "crdt_sync_storage_compactions_total") >= 0
    for task in ("compaction", "checkpoint"):
        labels = f'task="{task}"'
        assert _sample(after, "crdt_sync_storage_maintenance_failures_total", labels) == 0


def test_other_http_paths_are_not_websocket_upgrades(relay: RelayProcess) -> None:
    status, _ = relay.get("/nothing-here")
    assert status == 426  # websockets: "Upgrade Required"
