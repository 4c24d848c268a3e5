"""The storage seam: everything the relay asks of a storage engine, and nothing else.

:class:`RelayStorage` is a :class:`typing.Protocol`. The relay holds a ``RelayStorage`` and
never looks at which one it is. Implementations:

- :class:`~crdt_sync.server.storage.sqlite.SQLiteRelayStorage`, the embedded default;
- :class:`~crdt_sync.server.storage.memory.MemoryRelayStorage`, for in-process tests (it can
  hold its commits back, so a test controls "accepted but not committed").

A PostgreSQL implementation joins them later. The contract every implementation keeps is
tested once, against each (``tests/server/storage/test_contract.py``).

The data model (per tenant): a change sequence ``seq`` that increases by one for every stored
update (the cursor replicas send back in ``sub``); per record ``(collection, record_id)`` its
updates, read back merged as one Yjs update; and which replica (``origin``) last changed each
record at which seq, so that a catch-up lists the records changed since a cursor by anyone but
the asking replica.

Deletion (docs/relay.md, "Deletion and purge"): a stored update that adds a tombstone to its
record (:func:`crdt_sync.records.layout.tombstones_in`) records the tombstone and the time it
was first stored. :meth:`RelayStorage.purge_tombstones` removes the records deleted before a
time, every row of them, and keeps one small row per purged record (its tombstone and the
change seq of the purge): catch-ups list those as *removed* (:meth:`RelayStorage.
removed_since`), and updates of a purged record are never stored again
(:meth:`RelayStorage.purged`; a write that reaches the commit anyway fails as a whole with
:class:`RecordPurged`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from crdt_sync.errors import StoreError
from crdt_sync.subscriptions import Selection

RecordKey = tuple[str, str]
"""``(collection, record_id)``."""

IndexedFields = dict[str, int | float | str]
"""A record's indexed top-level fields (``crdt_sync.subscriptions.indexed_values``)."""


class Committed(list[int]):
    """What a committed write's future gives: its change seqs, in order (it is that list),
    and :attr:`fields`: per record of the write, its indexed top-level fields before the
    commit (``None`` for a record the commit created) and after it. The fan-out uses them to
    send a record to the subscribers whose selection holds it, and ``drop`` to those whose
    selection held it before and no longer does. :attr:`states`: for the records whose
    indexed fields the commit changed, their whole committed state as updates (their merge),
    sent to a subscriber whose selection they just entered (it may have nothing of them)."""

    __slots__ = ("fields", "states")

    def __init__(
        self,
        seqs: Iterable[int] = (),
        fields: dict[RecordKey, tuple[IndexedFields | None, IndexedFields]] | None = None,
        states: dict[RecordKey, list[bytes]] | None = None,
    ) -> None:
        super().__init__(seqs)
        self.fields: dict[RecordKey, tuple[IndexedFields | None, IndexedFields]] = fields or {}
        self.states: dict[RecordKey, list[bytes]] = states or {}


Row = tuple[str, str, bytes]
"""``(collection, record_id, update)``: one update to store."""


class RecordPurged(StoreError):
    """A write reached the commit for a record whose tombstone was purged meanwhile: nothing
    of the write is stored (its sender re-sends it, and the relay then refuses the purged
    record's updates with ``deleted``)."""


@dataclass(frozen=True, slots=True)
class Purged:
    """A deleted record whose rows a purge removed.

    Attributes:
        tenant, collection, record_id: the record.
        tombstone: its tombstone key (``"<ms>.<counter>.<replica>"``: when, by whom).
        seq: the tenant's change seq the purge took (catch-ups from a cursor below it list
            the record as removed).
    """

    tenant: str
    collection: str
    record_id: str
    tombstone: str
    seq: int


@dataclass(frozen=True, slots=True)
class StorageNumbers:
    """What a storage reports for the relay's metrics (``/metrics``, docs/relay.md).

    Attributes:
        commits: group commits so far (``crdt_sync_storage_commits``).
        compactions: record compactions attempted.
        compaction_failures: records (or whole rounds) whose compaction failed.
        checkpoint_failures: WAL checkpoints that failed.
        wal_bytes: size of the write-ahead log now (0 for an engine without one).
    """

    commits: int
    compactions: int = 0
    compaction_failures: int = 0
    checkpoint_failures: int = 0
    wal_bytes: int = 0


class RelayStorage(Protocol):
    """What the relay needs from its storage. Everything runs on the relay's event loop.

    Writes are group-committed: :meth:`submit` queues a write and returns at once; the writes
    queued meanwhile commit together, in submission order, and each future resolves only once
    its write is durable. The relay acknowledges an update only then.
    """

    async def open(self) -> None:
        """Open (creating if needed) the storage and start committing.

        Raises:
            InvalidState: already open.
            StoreError: the storage cannot be opened (the message says why).
        """
        ...

    async def close(self) -> None:
        """Commit every write already submitted, stop committing and close. Idempotent."""
        ...

    def submit(self, tenant: str, origin: str, items: Sequence[Row]) -> asyncio.Future[list[int]]:
        """Queue a write; the future resolves with its change seqs, in order, after the commit
        (a :class:`Committed`, which also carries the records' indexed fields).

        The records' indexed top-level fields are rewritten in the same transaction.

        Writes commit in submission order, so a seq never names a change committed after a
        later one. The relay uses this form to keep reading frames while commits are in flight.

        Args:
            tenant: the tenant the records belong to.
            origin: the replica id that sent the updates.
            items: the updates; each must be a valid Yjs v1 update (the caller checks).

        Returns:
            A future that fails with :class:`~crdt_sync.errors.StoreError` if the commit failed
            (nothing of the write is stored).

        Raises:
            InvalidState: the storage is closing or closed (nothing is queued).
        """
        ...

    async def write(self, tenant: str, origin: str, items: Sequence[Row]) -> list[int]:
        """:meth:`submit`, then wait for the commit: the change seqs of ``items``, in order.

        Raises:
            InvalidState: the storage is closing or closed.
            StoreError: the commit failed; nothing of this write is stored.
        """
        return await self.submit(tenant, origin, items)

    async def get_states(self, tenant: str, keys: Iterable[RecordKey]) -> dict[RecordKey, bytes]:
        """The merged committed state (one Yjs update) of each stored record among ``keys``."""
        ...

    async def changed_since(
        self,
        tenant: str,
        collections: Iterable[str],
        cursor: int | None,
        exclude_origin: str | None,
    ) -> list[RecordKey]:
        """Records of ``collections`` changed after ``cursor`` by a replica other than one,
        sorted.

        ``cursor=None`` means every record of those collections. Records changed only by
        ``exclude_origin`` since the cursor are left out (an implementation may forget old
        origins and list such records too: a few extra diffs, never a missed change);
        ``exclude_origin=None`` leaves out nobody.
        """
        ...

    async def head(self, tenant: str) -> int:
        """The newest committed change seq of ``tenant`` (0 when it has none)."""
        ...

    async def purge_tombstones(self, deleted_before: float) -> list[Purged]:
        """Remove every record whose tombstone was first stored before ``deleted_before``
        (Unix seconds): its state, log, change rows and tombstone. Each gets a new change seq
        of its tenant and a row of the purged records. Returns them, in purge order."""
        ...

    async def removed_since(
        self, tenant: str, collections: Iterable[str], cursor: int
    ) -> list[tuple[str, str, str]]:
        """``(collection, record_id, tombstone)`` of the records of ``collections`` purged
        after change seq ``cursor``, sorted."""
        ...

    async def purged(self, tenant: str, keys: Iterable[RecordKey]) -> dict[RecordKey, str]:
        """The tombstone of each purged record among ``keys``."""
        ...

    async def members(self, tenant: str, selection: Selection) -> set[str]:
        """The ids of the stored records of ``selection.collection`` that the resolved
        ``selection`` holds, judged on their indexed fields (an indexed query)."""
        ...

    async def fields(
        self, tenant: str, keys: Iterable[RecordKey]
    ) -> dict[RecordKey, IndexedFields]:
        """The indexed top-level fields of each stored record among ``keys`` as last
        committed (a record without any is present with ``{}``)."""
        ...

    @property
    def healthy(self) -> bool:
        """Whether the storage is open and committing (``/healthz`` answers 503 otherwise)."""
        ...

    def numbers(self) -> StorageNumbers:
        """The counters exported at ``/metrics``; cheap (read at every scrape)."""
        ...
