"""The store as a sync run sees it: :class:`SyncStore` and its :class:`SyncOutbox`.

A :class:`~crdt_sync.client.sync_run.SyncRun` is typed against these protocols, not against
the concrete :class:`~crdt_sync.store.sqlite.LocalStore`. They list exactly what it uses: the
records' state vectors, applying remote updates, two settings calls (the sync cursor), and the
outbox's announcements, listing, marks and acknowledgements. ``LocalStore`` satisfies them
structurally (``Replica`` hands its ``LocalStore`` to ``SyncRun``, which ``mypy --strict``
checks); the in-process tests drive a ``SyncRun`` against an in-memory implementation
(``tests/helpers/memory_store.py``).

Writes come in two kinds. The awaited ones (``mark_blocked``, ``mark_error``,
``set_setting``, ``apply_remote`` without ``on_committed``) return once committed. The others
return a future at once and are kept in order with later writes; with ``lazy=True`` they may
ride with a later write: losing one to a crash only means a harmless re-send (the run never
waits for them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from crdt_sync.outbox import OutboxEntry

__all__ = ["SyncOutbox", "SyncStore"]


class SyncOutbox(Protocol):
    """The outbox as a sync run uses it: local edits waiting for the relay, by ``seq``."""

    def on_queued(self, callback: Callable[[OutboxEntry], None]) -> Callable[[], None]:
        """Call ``callback(entry)`` for each new entry once its edit is committed, in seq
        order. Returns a function that unsubscribes."""
        ...

    def tally(self) -> tuple[int, int]:
        """``(entries waiting, entries in error)`` as committed, without I/O."""
        ...

    async def entries(self) -> list[OutboxEntry]:
        """Every entry, in seq order."""
        ...

    def first_error(self, collection: str, record_id: str) -> int | None:
        """The seq of the record's first entry in error (its later entries wait), or None."""
        ...

    def requeue_uploading(self, *, lazy: bool) -> asyncio.Future[None]:
        """Put ``uploading`` entries back to ``queued`` (an earlier connection ended)."""
        ...

    def mark_uploading(self, seqs: Iterable[int], *, lazy: bool) -> asyncio.Future[None]:
        """Mark queued entries as sent, counting the attempt and clearing a ``blocked``
        reason."""
        ...

    def acknowledge(self, seqs: Iterable[int], *, lazy: bool) -> asyncio.Future[int]:
        """The relay stored these entries: they leave the outbox (unknown seqs are ignored).
        The future gives how many left, or the error that kept them."""
        ...

    async def mark_blocked(self, items: Iterable[tuple[int, str]]) -> None:
        """The relay refused these ``(seq, reason)`` entries as ``blocked``: queued again (not
        in error), with ``error_code`` ``blocked`` until their next upload."""
        ...

    async def mark_error(self, seq: int, code: str, reason: str) -> None:
        """Entry ``seq`` was refused: ``error`` until resolved or discarded.

        Raises:
            OutboxError: there is no entry ``seq``.
        """
        ...


class SyncStore(Protocol):
    """The local store as a sync run uses it."""

    @property
    def outbox(self) -> SyncOutbox:
        """The store's outbox."""
        ...

    async def state_vectors(self, keys: Sequence[tuple[str, str]]) -> list[bytes]:
        """The state vectors of these ``(collection, record_id)`` records, in order (``b""``
        for a record not here)."""
        ...

    async def absent(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Those of these records that the store removed from its cache and does not have
        (none if it never removed any): a live update of one carries only the latest change."""
        ...

    async def apply_remote(
        self,
        updates: Iterable[tuple[str, str, bytes]],
        settings: Mapping[str, str] | None = None,
        *,
        on_committed: Callable[[BaseException | None], None] | None = None,
    ) -> list[tuple[str, str]]:
        """Apply ``(collection, record_id, update)`` updates from the relay and write
        ``settings``, in one transaction; return the changed records, in first-seen order.

        Without ``on_committed``, returns once committed. With it, returns once the updates
        are applied in memory and queued for commit, and calls ``on_committed(None)`` (or
        ``on_committed(error)``: the updates are not kept) once the commit is done.
        """
        ...

    async def forget_purged(
        self, items: Iterable[tuple[str, str, str | None]]
    ) -> list[tuple[str, str]]:
        """The relay purged these deleted records (``(collection, record_id, tombstone)``):
        remove them, logging what their pending changes wrote as lost to the deletion and
        settling those outbox entries. Returns the records removed."""
        ...

    async def get_setting(self, key: str) -> str | None:
        """A committed setting, or None."""
        ...

    async def ids(self, collection: str) -> list[str]:
        """The ids of the records of ``collection`` in the store."""
        ...

    async def drop_records(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove these records, except those with unsynced changes; return the kept ones."""
        ...

    async def set_setting(self, key: str, value: str) -> None:
        """Write a setting; returns once committed."""
        ...

    def set_setting_lazily(self, key: str, value: str) -> asyncio.Future[None]:
        """Write a setting with a later write (its loss to a crash is harmless)."""
        ...
