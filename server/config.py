"""How to run a relay (:class:`RelayConfig`): read by the relay and by each of its parts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crdt_sync.protocol import DEFAULT_MAX_FRAME, DEFAULT_MAX_ITEMS, DEFAULT_RATE

from .relay_clock import system_clock
from .storage import DEFAULT_FORGET_ORIGINS_AFTER, DEFAULT_STATE_CACHE_BYTES
from .tokens import Verifier
from .validation import Validator

#: Default ``tombstone_ttl``: 30 days (``--tombstone-ttl 30``).
DEFAULT_TOMBSTONE_TTL = 30 * 86400.0


@dataclass(slots=True)
class RelayConfig:
    """How to run a relay. ``crdt-sync serve`` flags map one to one onto these fields.

    Attributes:
        host: interface to bind.
        port: TCP port; 0 picks a free one (see :attr:`~crdt_sync.server.relay.Relay.port`).
        data_dir: directory of the SQLite database (ignored when a storage is passed).
        verifier: token check (``--verifier``, else HMAC tokens under ``--secret``).
        validator: optional validation hook (``--validator``).
        durable: ``synchronous=FULL`` (power-loss durable) instead of ``NORMAL``.
        early_fanout: send accepted updates to subscribers before their commit (lower
            latency); off by default: see docs/relay.md for the case it gives up.
        max_frame: largest frame a client may send (bytes); websockets itself cuts messages
            over twice this (close 1009) before they are even buffered whole.
        max_items: most items per received frame, and the batch size of sent frames.
        rate_limit: messages per second per connection (burst: twice that); 0 disables.
        state_cache_bytes: memory for merged record states kept to answer catch-ups without
            reading the database (ignored when a storage is passed); 0 disables.
        forget_origins_after: changes of a tenant after which a change row forgets which
            replica made it (see :class:`~crdt_sync.server.storage.SQLiteRelayStorage`); 0
            never (ignored when a storage is passed).
        send_queue_frames: frames a connection may have queued before it counts as too slow.
        send_queue_bytes: bytes a connection may have queued before it counts as too slow.
        ping_interval: websocket-level keepalive ping interval (seconds; None disables).
        ping_timeout: websocket-level pong timeout (seconds).
        shutdown_timeout: longest a graceful shutdown waits for commits and sends.
        tombstone_ttl: seconds a deleted record's tombstone is kept before the relay purges
            the record (``--tombstone-ttl``, given in days; docs/relay.md, "Deletion and
            purge"); 0 never purges.
        cache_max_age: the longest (seconds) a replica may keep its offline cache after its
            last completed sync, for every tenant (sent in ``welcome``); None: no expiry.
        tenant_cache_max_age: per-tenant overrides of ``cache_max_age`` (None: no expiry for
            that tenant).
        clock: the time subscriptions are evaluated at (rolling windows); tests only give
            another one (``$CRDT_SYNC_TEST_NOW`` for ``crdt-sync serve``,
            :mod:`crdt_sync.server.relay_clock`).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("./relay-data")
    verifier: Verifier | None = None
    validator: Validator | None = None
    durable: bool = False
    early_fanout: bool = False
    max_frame: int = DEFAULT_MAX_FRAME
    max_items: int = DEFAULT_MAX_ITEMS
    rate_limit: float = DEFAULT_RATE
    state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES
    forget_origins_after: int = DEFAULT_FORGET_ORIGINS_AFTER
    send_queue_frames: int = 4096
    send_queue_bytes: int = 64 * 1024 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    shutdown_timeout: float = 10.0
    tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL
    cache_max_age: float | None = None
    tenant_cache_max_age: dict[str, float | None] = field(default_factory=dict)
    clock: Callable[[], dt.datetime] = system_clock

    def cache_max_age_for(self, tenant: str) -> float | None:
        """The maximum offline-cache age announced to ``tenant``'s replicas (None: none)."""
        if tenant in self.tenant_cache_max_age:
            return self.tenant_cache_max_age[tenant]
        return self.cache_max_age
