"""The relay's Prometheus metrics, on a registry of their own (one per relay instance).

Exposed at ``/metrics`` (see :mod:`crdt_sync.server.relay`). Names:

- ``crdt_sync_connections`` (gauge) open websocket connections;
  ``crdt_sync_connections_accepted_total`` connections accepted;
- ``crdt_sync_frames_in_total`` / ``crdt_sync_frames_out_total`` frames by message type,
  ``crdt_sync_bytes_in_total`` / ``crdt_sync_bytes_out_total`` their payload bytes;
- ``crdt_sync_updates_applied_total`` updates durably stored;
  ``crdt_sync_acks_total`` pushed entries acknowledged; ``crdt_sync_rejects_total`` by code;
- ``crdt_sync_errors_total`` error frames sent, by code;
- ``crdt_sync_storage_commits`` storage transactions (group commits) so far;
  ``crdt_sync_storage_compactions_total`` record compactions attempted;
  ``crdt_sync_storage_maintenance_failures_total`` failed background compaction rounds and
  WAL checkpoints, by ``task`` (each one is also logged); ``crdt_sync_storage_wal_bytes`` the
  write-ahead log's size (it should stay small: steady growth means checkpoints cannot
  complete);
- ``crdt_sync_message_latency_seconds`` per message type, from the frame's arrival to the
  relay's answer being queued (for ``push``: to the ack, i.e. including the commit).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .storage.base import StorageNumbers

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class FastCounter:
    """A counter on the hot path (per frame or per update): a plain number, read at scrape time.

    prometheus_client's own counters take a lock and check their state on every increment;
    these are only touched by the relay's event loop.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (>= 0)."""
        self.value += amount


class _Latency:
    """One message type's latency histogram: counts per bucket (not cumulative) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0


class RelayMetrics:
    """The counters, gauges and histograms of one relay."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("crdt_sync_connections", "Open connections", registry=r)
        self.connections_total = Counter(
            "crdt_sync_connections_accepted", "Connections accepted", registry=r
        )
        self.rejects = Counter("crdt_sync_rejects", "Pushed entries rejected", ["code"], registry=r)
        self.errors = Counter("crdt_sync_errors", "Error frames sent", ["code"], registry=r)
        # Hot path: plain numbers, exported by _HotMetrics at scrape time.
        self.updates_applied = FastCounter()
        self.acks = FastCounter()
        self.bytes_in = FastCounter()
        self.bytes_out = FastCounter()
        self._frames_in: dict[str, int] = {}
        self._frames_out: dict[str, int] = {}
        self._latency: dict[str, _Latency] = {}
        r.register(_HotMetrics(self))

    def frame_in(self, kind: str, size: int) -> None:
        """Count one received frame of message type ``kind`` and ``size`` bytes."""
        frames = self._frames_in
        frames[kind] = frames.get(kind, 0) + 1
        self.bytes_in.value += size

    def frame_out(self, kind: str, size: int) -> None:
        """Count one sent frame of message type ``kind`` and ``size`` bytes."""
        frames = self._frames_out
        frames[kind] = frames.get(kind, 0) + 1
        self.bytes_out.value += size

    def observe_latency(self, kind: str, seconds: float) -> None:
        """Record the time the relay took to answer a ``kind`` message."""
        latency = self._latency.get(kind)
        if latency is None:
            latency = self._latency[kind] = _Latency()
        latency.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency.total += seconds

    def watch_storage(self, read: Callable[[], StorageNumbers]) -> None:
        """Export the storage's numbers (commits, maintenance), read by ``read()`` at each
        scrape (:meth:`~crdt_sync.server.storage.base.RelayStorage.numbers`)."""
        self.registry.register(_StorageMetrics(read))

    def render(self) -> bytes:
        """The exposition text (``text/plain; version=0.0.4``)."""
        return generate_latest(self.registry)


class _StorageMetrics(Collector):
    def __init__(self, read: Callable[[], StorageNumbers]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        numbers = self.read()
        yield GaugeMetricFamily(
            "crdt_sync_storage_commits",
            "Storage transactions (group commits) so far",
            value=numbers.commits,
        )
        yield CounterMetricFamily(
            "crdt_sync_storage_compactions",
            "Record compactions attempted (the failed ones are also maintenance failures)",
            value=numbers.compactions,
        )
        failures = CounterMetricFamily(
            "crdt_sync_storage_maintenance_failures",
            "Background storage tasks that failed",
            labels=["task"],
        )
        failures.add_metric(["compaction"], numbers.compaction_failures)
        failures.add_metric(["checkpoint"], numbers.checkpoint_failures)
        yield failures
        yield GaugeMetricFamily(
            "crdt_sync_storage_wal_bytes",
            "Size of the storage's write-ahead log",
            value=numbers.wal_bytes,
        )


class _HotMetrics(Collector):
    """Exports the hot-path numbers of a :class:`RelayMetrics` as Prometheus metrics."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for name, doc, frames in (
            ("crdt_sync_frames_in", "Frames received", m._frames_in),
            ("crdt_sync_frames_out", "Frames sent", m._frames_out),
        ):
            family = CounterMetricFamily(name, doc, labels=["type"])
            for kind, count in sorted(frames.items()):
                family.add_metric([kind], count)
            yield family
        for name, doc, counter in (
            ("crdt_sync_bytes_in", "Bytes received", m.bytes_in),
            ("crdt_sync_bytes_out", "Bytes sent", m.bytes_out),
            ("crdt_sync_updates_applied", "Updates durably stored", m.updates_applied),
            ("crdt_sync_acks", "Pushed entries acknowledged", m.acks),
        ):
            yield CounterMetricFamily(name, doc, value=counter.value)
        histogram = HistogramMetricFamily(
            "crdt_sync_message_latency_seconds",
            "Time from a frame's arrival to the relay's answer",
            labels=["type"],
        )
        bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
        for kind, latency in sorted(m._latency.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, latency.counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            histogram.add_metric([kind], cumulative, latency.total)
        yield histogram
