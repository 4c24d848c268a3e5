"""The relay's metrics (server/metrics.py): hot-path counters and the latency histogram."""

from __future__ import annotations

import re

from crdt_sync.server.metrics import LATENCY_BUCKETS, RelayMetrics
from crdt_sync.server.storage import StorageNumbers


def _samples(metrics: RelayMetrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"^(\S+) (\S+)$", text, re.MULTILINE)
        if not match.group(1).startswith("#")
    }


def test_hot_counters_are_exported_under_their_prometheus_names() -> None:
    metrics = RelayMetrics()
    metrics.frame_in("push", 100)
    metrics.frame_in("push", 50)
    metrics.frame_out("ack", 7)
    metrics.acks.inc(3)
    metrics.updates_applied.inc(2)
    samples = _samples(metrics)
    assert samples['crdt_sync_frames_in_total{type="push"}'] == 2
    assert samples['crdt_sync_frames_out_total{type="ack"}'] == 1
    assert samples["crdt_sync_bytes_in_total"] == 150
    assert samples["crdt_sync_bytes_out_total"] == 7
    assert samples["crdt_sync_acks_total"] == 3
    assert samples["crdt_sync_updates_applied_total"] == 2


def test_latency_histogram_counts_each_value_in_the_first_bucket_not_below_it() -> None:
    metrics = RelayMetrics()
    for seconds in (0.0001, 0.0002, 0.001, 0.0011, 100.0):
        metrics.observe_latency("push", seconds)
    samples = _samples(metrics)

    def bucket(le: str) -> float:
        return samples[f'crdt_sync_message_latency_seconds_bucket{{le="{le}",type="push"}}']

    assert bucket("0.0001") == 1  # le: a value equal to the bound is in that bucket
    assert bucket("0.00025") == 2
    assert bucket("0.001") == 3
    assert bucket("0.0025") == 4
    assert bucket(repr(float(LATENCY_BUCKETS[-1]))) == 4
    assert bucket("+Inf") == 5
    assert samples['crdt_sync_message_latency_seconds_count{type="push"}'] == 5
    assert abs(samples['crdt_sync_message_latency_seconds_sum{type="push"}'] - 100.0024) < 1e-9


def test_storage_numbers_are_read_at_each_scrape() -> None:
    metrics = RelayMetrics()
    numbers = [StorageNumbers(commits=3, compactions=5, compaction_failures=1, wal_bytes=4096)]
    metrics.watch_storage(lambda: numbers[-1])
    samples = _samples(metrics)
    assert samples["crdt_sync_storage_commits"] == 3
    assert samples["crdt_sync_storage_compactions_total"] == 5
    assert samples['crdt_sync_storage_maintenance_failures_total{task="compaction"}'] == 1
    assert samples['crdt_sync_storage_maintenance_failures_total{task="checkpoint"}'] == 0
    assert samples["crdt_sync_storage_wal_bytes"] == 4096
    numbers.append(StorageNumbers(4, 6, 1, 2, 0))
    samples = _samples(metrics)
    assert samples["crdt_sync_storage_commits"] == 4
    assert samples["crdt_sync_storage_compactions_total"] == 6
    assert samples['crdt_sync_storage_maintenance_failures_total{task="checkpoint"}'] == 2
