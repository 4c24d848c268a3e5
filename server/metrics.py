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
- ``crdt_sync_message_latency_seconds`` per message type, from the frame's arrival to the
  relay's answer being queued (for ``push``: to the ack, i.e. including the commit).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class RelayMetrics:
    """The counters, gauges and histograms of one relay."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("crdt_sync_connections", "Open connections", registry=r)
        self.connections_total = Counter(
            "crdt_sync_connections_accepted", "Connections accepted", registry=r
        )
        self.frames_in = Counter("crdt_sync_frames_in", "Frames received", ["type"], registry=r)
        self.frames_out = Counter("crdt_sync_frames_out", "Frames sent", ["type"], registry=r)
        self.bytes_in = Counter("crdt_sync_bytes_in", "Bytes received", registry=r)
        self.bytes_out = Counter("crdt_sync_bytes_out", "Bytes sent", registry=r)
        self.updates_applied = Counter(
            "crdt_sync_updates_applied", "Updates durably stored", registry=r
        )
        self.acks = Counter("crdt_sync_acks", "Pushed entries acknowledged", registry=r)
        self.rejects = Counter("crdt_sync_rejects", "Pushed entries rejected", ["code"], registry=r)
        self.errors = Counter("crdt_sync_errors", "Error frames sent", ["code"], registry=r)
        self.commits = Gauge(
            "crdt_sync_storage_commits", "Storage transactions (group commits) so far", registry=r
        )
        self.latency = Histogram(
            "crdt_sync_message_latency_seconds",
            "Time from a frame's arrival to the relay's answer",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # Labelled children resolved once: .labels() costs more than the increment itself.
        self._frames_in: dict[str, Any] = {}
        self._frames_out: dict[str, Any] = {}
        self._latency: dict[str, Any] = {}

    def frame_in(self, kind: str, size: int) -> None:
        """Count one received frame of message type ``kind`` and ``size`` bytes."""
        child = self._frames_in.get(kind)
        if child is None:
            child = self._frames_in[kind] = self.frames_in.labels(kind)
        child.inc()
        self.bytes_in.inc(size)

    def frame_out(self, kind: str, size: int) -> None:
        """Count one sent frame of message type ``kind`` and ``size`` bytes."""
        child = self._frames_out.get(kind)
        if child is None:
            child = self._frames_out[kind] = self.frames_out.labels(kind)
        child.inc()
        self.bytes_out.inc(size)

    def observe_latency(self, kind: str, seconds: float) -> None:
        """Record the time the relay took to answer a ``kind`` message."""
        child = self._latency.get(kind)
        if child is None:
            child = self._latency[kind] = self.latency.labels(kind)
        child.observe(seconds)

    def render(self) -> bytes:
        """The exposition text (``text/plain; version=0.0.4``)."""
        return generate_latest(self.registry)
