"""The tombstone purge: deleted records leave the relay once their tombstone is old enough.

A deleted record keeps its document (with its tombstone) on the relay for ``tombstone_ttl``
seconds (``crdt-sync serve --tombstone-ttl DAYS``), so that every replica and Yjs client
learns of the deletion through the normal update path, and writes made concurrently with it
still merge (and are logged as lost to it, docs/records.md). Then :class:`TombstonePurger`
purges it (:meth:`~crdt_sync.server.storage.RelayStorage.purge_tombstones`): every row of the
record goes; what stays is one row naming it, its tombstone and the purge's change seq. From
then on (docs/relay.md, "Deletion and purge"):

- the gateway refuses its updates with ``deleted`` (:data:`~crdt_sync.server.gateway.DELETED`),
  and the native endpoint sends the pusher ``removed`` first, so that a replica that was
  offline longer than the TTL settles its pending edits of the record (logged as lost to the
  deletion, docs/protocol.md);
- catch-ups from a cursor older than the purge list it in ``removed``;
- native subscribers get ``removed`` at once; Yjs connections that have it open are refused
  it, and opening it is refused.

The purger checks every ``interval`` seconds (a quarter of the TTL, at most an hour, at least
100 ms), and once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from crdt_sync.messages import RemovedItem

from .fanout import Fanout
from .gateway import Gateway, deleted_reason
from .storage import Purged, RelayStorage

log = logging.getLogger(__name__)

#: Longest wait between two purge checks (seconds).
MAX_PURGE_INTERVAL = 3600.0
#: Shortest wait between two purge checks (seconds).
MIN_PURGE_INTERVAL = 0.1


class TombstonePurger:
    """Purges the records deleted more than ``ttl`` seconds ago, in the background.

    Args:
        storage: where the records are.
        gateway: forgets the purged records' clocks.
        fanout: tells the connections.
        ttl: seconds a tombstone is kept; 0 disables the purge.
    """

    def __init__(self, storage: RelayStorage, gateway: Gateway, fanout: Fanout, ttl: float):
        self.storage = storage
        self.gateway = gateway
        self.fanout = fanout
        self.ttl = ttl
        self.interval = min(MAX_PURGE_INTERVAL, max(MIN_PURGE_INTERVAL, ttl / 4))
        #: Records purged so far (by this process).
        self.purged = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start checking (no-op when the TTL is 0)."""
        if self.ttl > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="relay-tombstone-purge")

    async def stop(self) -> None:
        """Stop checking; waits for a purge transaction in progress."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def purge_now(self) -> list[Purged]:
        """Purge what is due now and tell the connections. Returns the records purged."""
        done = await self.storage.purge_tombstones(time.time() - self.ttl)
        if not done:
            return done
        self.purged += len(done)
        self.gateway.forget_purged([(p.tenant, p.collection, p.record_id) for p in done])
        by_tenant: dict[str, list[Purged]] = {}
        for purged in done:
            by_tenant.setdefault(purged.tenant, []).append(purged)
        for tenant, records in by_tenant.items():
            items = [RemovedItem(p.collection, p.record_id, p.tombstone) for p in records]
            reasons = [deleted_reason((p.collection, p.record_id), p.tombstone) for p in records]
            self.fanout.removed(tenant, items, reasons)
        log.info("purged %d deleted records", len(done))
        return done

    async def _run(self) -> None:
        while True:
            try:
                await self.purge_now()
            except asyncio.CancelledError:
                raise
            except Exception:  # the rows are intact: retried at the next check
                log.exception("purging tombstones failed")
            await asyncio.sleep(self.interval)
