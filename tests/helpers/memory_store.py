"""MemoryStore: a small, real in-memory implementation of the client's store protocol.

What httpx's ``MockTransport`` is to its transports: :class:`MemoryStore` implements
:class:`~crdt_sync.client.sync_store.SyncStore` (and :class:`MemoryOutbox` its
:class:`~crdt_sync.client.sync_store.SyncOutbox`) with dicts, so a
:class:`~crdt_sync.client.sync_run.SyncRun` can run in-process against it
(``tests/client/test_sync_run.py``). Records are pycrdt documents (real updates and state
vectors); the outbox keeps the rules of ``LocalStore``'s (entry statuses, ``blocked``, the
first entry in error of a record, ``held_by``). Every write lands at once: the futures it
returns are already done, and ``on_committed`` is called soon after, as a commit would.

For tests: :meth:`MemoryStore.edit` makes a local edit (one real update, one outbox entry,
announced to ``on_queued``); :meth:`MemoryOutbox.requeue` stands for the app resolving or
discarding an entry in error; :attr:`MemoryStore.commit_error` makes remote updates fail to
commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pycrdt import Doc, Map

from crdt_sync.errors import OutboxError
from crdt_sync.outbox import OutboxEntry, OutboxStatus

_T = TypeVar("_T")


def _done(result: _T) -> asyncio.Future[_T]:
    future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


class MemoryOutbox:
    """The outbox of a :class:`MemoryStore`: :attr:`entries` by seq, in seq order."""

    def __init__(self) -> None:
        self.by_seq: dict[int, OutboxEntry] = {}
        self._last_seq = 0
        self._listeners: list[Callable[[OutboxEntry], None]] = []

    # -- for tests -------------------------------------------------------------------------

    def add(self, collection: str, record_id: str, update: bytes) -> OutboxEntry:
        """A local edit was committed: a new queued entry, announced to ``on_queued``."""
        self._last_seq += 1
        entry = OutboxEntry(
            self._last_seq, collection, record_id, OutboxStatus.QUEUED, time.time(), update
        )
        self.by_seq[entry.seq] = entry
        for callback in list(self._listeners):
            callback(entry)
        return entry

    def requeue(self, seq: int) -> None:
        """The app resolved or discarded entry ``seq`` (in error): it is queued again."""
        self._set(seq, status=OutboxStatus.QUEUED, error_code=None, error_reason=None)

    def status(self, *seqs: int) -> list[OutboxStatus | None]:
        """The status of each entry (None: no longer in the outbox)."""
        return [e.status if (e := self.by_seq.get(s)) else None for s in seqs]

    @property
    def listeners(self) -> int:
        """How many ``on_queued`` callbacks are subscribed."""
        return len(self._listeners)

    def _set(self, seq: int, **changes: Any) -> None:
        self.by_seq[seq] = dataclasses.replace(self.by_seq[seq], **changes)

    # -- SyncOutbox ------------------------------------------------------------------------

    def on_queued(self, callback: Callable[[OutboxEntry], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def tally(self) -> tuple[int, int]:
        errors = sum(e.status is OutboxStatus.ERROR for e in self.by_seq.values())
        return len(self.by_seq), errors

    async def entries(self) -> list[OutboxEntry]:
        entries = []
        for seq in sorted(self.by_seq):
            entry = self.by_seq[seq]
            first = self.first_error(entry.collection, entry.record_id)
            held_by = first if first is not None and first < seq else None
            entries.append(dataclasses.replace(entry, held_by=held_by))
        return entries

    def first_error(self, collection: str, record_id: str) -> int | None:
        return min(
            (
                e.seq
                for e in self.by_seq.values()
                if (e.collection, e.record_id) == (collection, record_id)
                and e.status is OutboxStatus.ERROR
            ),
            default=None,
        )

    def requeue_uploading(self, *, lazy: bool) -> asyncio.Future[None]:
        for entry in list(self.by_seq.values()):
            if entry.status is OutboxStatus.UPLOADING:
                self._set(entry.seq, status=OutboxStatus.QUEUED)
        return _done(None)

    def mark_uploading(self, seqs: Iterable[int], *, lazy: bool) -> asyncio.Future[None]:
        for seq in seqs:
            entry = self.by_seq.get(seq)
            if entry is not None and entry.status is OutboxStatus.QUEUED:
                self._set(
                    seq,
                    status=OutboxStatus.UPLOADING,
                    attempts=entry.attempts + 1,
                    error_code=None,
                    error_reason=None,
                )
        return _done(None)

    def acknowledge(self, seqs: Iterable[int], *, lazy: bool) -> asyncio.Future[int]:
        return _done(sum(self.by_seq.pop(seq, None) is not None for seq in seqs))

    async def mark_blocked(self, items: Iterable[tuple[int, str]]) -> None:
        for seq, reason in items:
            entry = self.by_seq.get(seq)
            if entry is not None and entry.status is not OutboxStatus.ERROR:
                self._set(
                    seq, status=OutboxStatus.QUEUED, error_code="blocked", error_reason=reason
                )

    async def mark_error(self, seq: int, code: str, reason: str) -> None:
        if seq not in self.by_seq:
            raise OutboxError(f"no outbox entry {seq}")
        self._set(seq, status=OutboxStatus.ERROR, error_code=code, error_reason=reason)


class MemoryStore:
    """Records (pycrdt documents), settings and an outbox, in memory."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], Doc[Any]] = {}
        self.settings: dict[str, str] = {}
        self.outbox = MemoryOutbox()
        #: When set, remote updates fail to commit with it (nothing is kept), as on a full disk.
        self.commit_error: BaseException | None = None

    def edit(self, collection: str, record_id: str, **fields: Any) -> OutboxEntry:
        """A local edit: set ``fields`` in the record (one update), queue it in the outbox."""
        doc = self.docs.setdefault((collection, record_id), Doc())
        before = doc.get_state()
        with doc.transaction():
            record = doc.get("fields", type=Map)
            for key, value in fields.items():
                record[key] = value
        return self.outbox.add(collection, record_id, doc.get_update(before))

    def fields(self, collection: str, record_id: str) -> dict[str, Any]:
        """The record's fields as plain values."""
        fields: dict[str, Any] = self.docs[(collection, record_id)].get("fields", type=Map).to_py()
        return fields

    # -- SyncStore -------------------------------------------------------------------------

    async def state_vectors(self, keys: Sequence[tuple[str, str]]) -> list[bytes]:
        return [self.docs[key].get_state() if key in self.docs else b"" for key in keys]

    async def absent(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return [key for key in dict.fromkeys(keys) if key not in self.docs]

    async def apply_remote(
        self,
        updates: Iterable[tuple[str, str, bytes]],
        settings: Mapping[str, str] | None = None,
        *,
        on_committed: Callable[[BaseException | None], None] | None = None,
    ) -> list[tuple[str, str]]:
        items = list(updates)
        error = self.commit_error
        if error is None:
            for collection, record_id, update in items:
                self.docs.setdefault((collection, record_id), Doc()).apply_update(update)
            self.settings.update(settings or {})
        if on_committed is not None:
            asyncio.get_running_loop().call_soon(on_committed, error)
        elif error is not None:
            raise error
        return list(dict.fromkeys((collection, record_id) for collection, record_id, _ in items))

    async def forget_purged(
        self, items: Iterable[tuple[str, str, str | None]]
    ) -> list[tuple[str, str]]:
        # (The conflict logging of pending changes is LocalStore's, tested there.)
        removed = []
        for collection, record_id, _tombstone in items:
            key = (collection, record_id)
            if self.docs.pop(key, None) is not None:
                removed.append(key)
            for seq, entry in list(self.outbox.by_seq.items()):
                if (entry.collection, entry.record_id) == key:
                    del self.outbox.by_seq[seq]
        return removed

    async def get_setting(self, key: str) -> str | None:
        return self.settings.get(key)

    async def ids(self, collection: str) -> list[str]:
        return sorted(r for c, r in self.docs if c == collection)

    async def drop_records(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        pending = {(e.collection, e.record_id) for e in await self.outbox.entries()}
        kept = [key for key in dict.fromkeys(keys) if key in pending]
        for key in keys:
            if key not in pending:
                self.docs.pop(key, None)
        return kept

    async def set_setting(self, key: str, value: str) -> None:
        self.settings[key] = value

    def set_setting_lazily(self, key: str, value: str) -> asyncio.Future[None]:
        self.settings[key] = value
        return _done(None)
