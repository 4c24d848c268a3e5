"""A :class:`~crdt_sync.server.storage.base.RelayStorage` in memory, for in-process tests.

:class:`MemoryRelayStorage` keeps the same contract as the SQLite storage (the contract tests
run against both) without a file: writes are group-committed in submission order (the writes
submitted within one event-loop iteration commit together, in the next one), seqs count per
tenant, states are the merge of a record's updates. What it adds is control over the commit,
which a test of the relay's gateway and fan-out needs: :meth:`MemoryRelayStorage.hold` keeps
submitted writes uncommitted ("accepted, not yet durable") until :meth:`~MemoryRelayStorage.
release` commits them, or fails them as a failed commit would.

Nothing survives the object: it is not a relay storage for production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crdt_sync.errors import InvalidState, StoreError
from crdt_sync.records.layout import tombstones_in
from crdt_sync.subscriptions import Selection
from crdt_sync.yjs.merge import merge

from ..record_fields import indexed_fields
from .base import (
    Committed,
    IndexedFields,
    Purged,
    RecordKey,
    RecordPurged,
    RelayStorage,
    Row,
    StorageNumbers,
)

_NAME = "<memory>"  # what StoreError names as the storage's path


@dataclass(slots=True)
class _Write:
    tenant: str
    origin: str
    items: list[Row]
    future: asyncio.Future[list[int]]


class MemoryRelayStorage(RelayStorage):
    """The relay's storage in dictionaries (see the module docstring)."""

    def __init__(self) -> None:
        self._open = False
        self._closing = False
        self._held = False
        self._commit_scheduled = False
        self._queue: list[_Write] = []
        self._heads: dict[str, int] = {}
        self._updates: dict[tuple[str, str, str], list[bytes]] = {}
        # (tenant, collection, record_id) -> origin -> newest seq it wrote there
        self._changes: dict[tuple[str, str, str], dict[str, int]] = {}
        self._fields: dict[tuple[str, str, str], IndexedFields] = {}
        self._commits = 0
        # (tenant, collection, record_id) -> [tombstone key, first stored at]
        self._tombstones: dict[tuple[str, str, str], list[str | float]] = {}
        # (tenant, collection, record_id) -> (tombstone key, seq of the purge)
        self._purged: dict[tuple[str, str, str], tuple[str, int]] = {}

    async def open(self) -> None:
        """See :meth:`RelayStorage.open`."""
        if self._open:
            raise InvalidState("storage already open")
        self._open = True

    async def close(self) -> None:
        """See :meth:`RelayStorage.close`; writes held back are committed too."""
        if self._closing:
            return
        self._closing = True
        self._held = False
        self._commit()
        self._open = False

    def submit(self, tenant: str, origin: str, items: Sequence[Row]) -> asyncio.Future[list[int]]:
        """See :meth:`RelayStorage.submit`."""
        if self._closing or not self._open:
            raise InvalidState("relay storage is closed")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if not items:
            future.set_result([])
            return future
        self._queue.append(_Write(tenant, origin, list(items), future))
        if not self._held and not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)
        return future

    # -- holding commits (tests) ---------------------------------------------------------

    def hold(self) -> None:
        """Keep writes submitted from now on uncommitted until :meth:`release`."""
        self._held = True

    @property
    def waiting(self) -> int:
        """Writes submitted and not committed yet."""
        return len(self._queue)

    def release(self, error: str | None = None) -> None:
        """Commit the writes held back as one group commit, now; or, with ``error``, fail
        them as a failed commit does (:class:`~crdt_sync.errors.StoreError`, nothing stored).
        Later writes commit as usual."""
        self._held = False
        if error is None:
            self._commit()
            return
        batch, self._queue = self._queue, []
        for write in batch:
            if not write.future.done():
                write.future.set_exception(StoreError(_NAME, f"commit failed: {error}"))

    # -- the group commit ----------------------------------------------------------------

    def _commit(self) -> None:
        self._commit_scheduled = False
        if self._held or not self._queue:
            return
        batch, self._queue = self._queue, []
        now = time.time()
        kept = []
        for write in batch:
            purged = [r for c, r, _ in write.items if (write.tenant, c, r) in self._purged]
            if purged:  # purged since it was accepted: nothing of the write is stored
                if not write.future.done():
                    write.future.set_exception(
                        RecordPurged(_NAME, f"records {purged} were purged (deleted)")
                    )
                continue
            kept.append(write)
        before: dict[tuple[str, str, str], IndexedFields | None] = {}
        for write in kept:
            for collection, record_id, _ in write.items:
                key = (write.tenant, collection, record_id)
                if key not in before:
                    before[key] = self._fields.get(key) if key in self._updates else None
        results = []
        for write in kept:
            head = self._heads.get(write.tenant, 0)
            seqs = []
            for collection, record_id, update in write.items:
                head += 1
                seqs.append(head)
                key = (write.tenant, collection, record_id)
                self._updates.setdefault(key, []).append(update)
                self._changes.setdefault(key, {})[write.origin] = head
                found = tombstones_in(update)
                if found:
                    known = self._tombstones.setdefault(key, ["", now])
                    known[0] = max(str(known[0]), *found)
            self._heads[write.tenant] = head
            results.append(seqs)
        for key in before:
            indexed = indexed_fields(self._updates[key])
            # A deleted record keeps the fields it had (server/record_fields.py).
            self._fields[key] = indexed if indexed is not None else self._fields.get(key, {})
        for write, seqs in zip(kept, results, strict=True):
            fields = {
                (c, r): (before[(write.tenant, c, r)], self._fields[(write.tenant, c, r)])
                for c, r, _ in write.items
            }
            states = {
                key: list(self._updates[(write.tenant, *key)])
                for key, (old, new) in fields.items()
                if old != new
            }
            if not write.future.done():
                write.future.set_result(Committed(seqs, fields, states))
        self._commits += 1

    # -- reads ---------------------------------------------------------------------------

    async def get_states(self, tenant: str, keys: Iterable[RecordKey]) -> dict[RecordKey, bytes]:
        """See :meth:`RelayStorage.get_states`."""
        states: dict[RecordKey, bytes] = {}
        for key in dict.fromkeys(keys):
            updates = self._updates.get((tenant, *key))
            if updates:
                states[key] = merge(updates)
        return states

    async def changed_since(
        self,
        tenant: str,
        collections: Iterable[str],
        cursor: int | None,
        exclude_origin: str | None,
    ) -> list[RecordKey]:
        """See :meth:`RelayStorage.changed_since`."""
        names = set(collections)
        changed = [
            (collection, record_id)
            for (owner, collection, record_id), origins in self._changes.items()
            if owner == tenant
            and collection in names
            and (
                cursor is None
                or any(seq > cursor and o != exclude_origin for o, seq in origins.items())
            )
        ]
        return sorted(changed)

    async def purge_tombstones(self, deleted_before: float) -> list[Purged]:
        """See :meth:`RelayStorage.purge_tombstones`."""
        done = []
        for key, (tombstone, at) in list(self._tombstones.items()):
            if float(at) >= deleted_before:
                continue
            tenant = key[0]
            head = self._heads[tenant] = self._heads.get(tenant, 0) + 1
            for table in (self._updates, self._changes, self._tombstones, self._fields):
                table.pop(key, None)
            self._purged[key] = (str(tombstone), head)
            done.append(Purged(*key, str(tombstone), head))
        return done

    async def removed_since(
        self, tenant: str, collections: Iterable[str], cursor: int
    ) -> list[tuple[str, str, str]]:
        """See :meth:`RelayStorage.removed_since`."""
        names = set(collections)
        return sorted(
            (c, r, tombstone)
            for (t, c, r), (tombstone, seq) in self._purged.items()
            if t == tenant and c in names and seq > cursor
        )

    async def purged(self, tenant: str, keys: Iterable[RecordKey]) -> dict[RecordKey, str]:
        """See :meth:`RelayStorage.purged`."""
        found = {}
        for key in keys:
            hit = self._purged.get((tenant, *key))
            if hit is not None:
                found[key] = hit[0]
        return found

    async def head(self, tenant: str) -> int:
        """See :meth:`RelayStorage.head`."""
        return self._heads.get(tenant, 0)

    async def members(self, tenant: str, selection: Selection) -> set[str]:
        """See :meth:`RelayStorage.members` (a scan: this storage is for tests)."""
        return {
            record_id
            for (owner, collection, record_id) in self._updates
            if owner == tenant
            and collection == selection.collection
            and selection.keeps(record_id, self._fields.get((owner, collection, record_id), {}))
        }

    async def fields(
        self, tenant: str, keys: Iterable[RecordKey]
    ) -> dict[RecordKey, IndexedFields]:
        """See :meth:`RelayStorage.fields`."""
        return {
            key: dict(self._fields.get((tenant, *key), {}))
            for key in dict.fromkeys(keys)
            if (tenant, *key) in self._updates
        }

    @property
    def healthy(self) -> bool:
        """See :meth:`RelayStorage.healthy`."""
        return self._open and not self._closing

    def numbers(self) -> StorageNumbers:
        """See :meth:`RelayStorage.numbers`: commits only (no compaction, no WAL)."""
        return StorageNumbers(self._commits)
