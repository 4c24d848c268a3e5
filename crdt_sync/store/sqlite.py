"""LocalStore: one replica's records, outbox and sync state in one SQLite file (aiosqlite).

Durability rules (``docs/architecture.md``):

* a local edit writes its update, its outbox entry and the record's metadata in ONE
  transaction; when :meth:`LocalStore.edit` returns, the edit is on disk (WAL, synchronous=NORMAL:
  it survives a killed process);
* a batch of remote updates is applied in one transaction (:meth:`LocalStore.apply_remote`);
* compaction replaces confirmed updates by a snapshot in one transaction.

Writes go through one group commit (:mod:`crdt_sync.store.group_commit`): the writes submitted
while a commit is running share the next transaction, each in its own savepoint. Edits are
serialized in memory (one pycrdt transaction at a time) but do not wait for each other's
commit: many concurrent edits cost one commit. The in-memory documents hold what is committed
plus what is being committed; a reader of a record with a write in flight waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import sqlite3
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from pycrdt import Doc, TransactionEvent, get_state, merge_updates

from ..cache_policy import CachePolicy
from ..errors import (
    BatchError,
    CorruptStoreError,
    InvalidQuery,
    InvalidState,
    OutboxError,
    RecordNotFound,
    SchemaVersionError,
    StoreError,
    UnsyncedChangesError,
)
from ..outbox import OutboxEntry, OutboxStatus
from ..query import Filter, Query, parse_where, resolve
from ..records.clock import DEFAULT_MAX_SKEW_MS, HybridClock, Timestamp
from ..records.layout import Conflict, Written, layout_of, read_fields, tombstones_in
from ..records.lww import Kind, LwwPolicy
from ..records.record import Record, RecordEditor
from ..records.rollback import compensate
from ..yjs.integrate import apply_updates, covers
from ..yjs.lib0 import Reader, write_var_bytes
from ..yjs.merge import merge
from ..yjs.updates import EMPTY_UPDATE, decode_state_vector
from . import batch as batches
from . import deletion
from .cache_keeper import CacheKeeper, CacheReport
from .checkpoints import Checkpointer
from .group_commit import GroupCommit, Key, WriteBody
from .idle_compaction import IdleCompactor
from .idle_work import IdleWork
from .live_query import LiveQuery
from .local_query import SearchHit, count_rows, query_rows, record_from_row, search_rows
from .projection import ProjectionSpec, Row, encode_fields, fts_query, write_or_remove_row
from .record_changes import ChangeListeners, Origin, RecordChanged
from .schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from .sqlite_thread import on_thread

log = logging.getLogger("crdt_sync.store")

#: Compact a record when it has more update rows than this and they outweigh the snapshot.
COMPACT_MIN_ROWS = 64

#: Origin of the pycrdt transactions of local edits.
LOCAL_ORIGIN = "crdt-sync:local"


@dataclass(frozen=True, slots=True)
class RemoteUpdate:
    """An update of one record that came from elsewhere (the relay)."""

    collection: str
    record_id: str
    update: bytes


@dataclass(frozen=True, slots=True)
class ConflictLogEntry:
    """A write that lost to a concurrent one, as this replica logged it.

    ``path`` is the slot (the field, then keys of nested maps); ``lost_*`` and ``won_*`` say
    what each side wrote: its kind (``value``, ``deleted``, ``text``, ``map``, ``array``), its
    plain value (a container's content) and, when known, its HLC timestamp, whose replica id
    says who wrote it. ``seq`` orders entries across records (newest is greatest).
    """

    seq: int
    collection: str
    record_id: str
    key: str
    path: tuple[str, ...]
    lost_kind: Kind
    lost_value: Any
    lost_ts: Timestamp | None
    won_kind: Kind
    won_value: Any
    won_ts: Timestamp | None
    detected_at: float

    @property
    def field(self) -> str:
        """The top-level field."""
        return self.path[0]

    @property
    def lost_deleted(self) -> bool:
        """Whether what lost was a deletion."""
        return self.lost_kind is Kind.DELETED

    @property
    def won_deleted(self) -> bool:
        """Whether what won was a deletion."""
        return self.won_kind is Kind.DELETED

    @property
    def lost_replica(self) -> str | None:
        """Who wrote what lost, when known."""
        return self.lost_ts.replica if self.lost_ts else None

    @property
    def won_replica(self) -> str | None:
        """Who wrote what won, when known."""
        return self.won_ts.replica if self.won_ts else None

    def describe(self) -> str:
        """``status: 'open' from replica tech-17 was overwritten by 'closed' from replica
        office at 2026-11-23T09:15:00.000Z``-style text."""
        return self.as_conflict().describe()

    def as_conflict(self) -> Conflict:
        """The same conflict as :func:`crdt_sync.records.layout.Layout.conflicts` reports it."""
        return Conflict(
            self.key,
            self.path,
            Written(self.lost_kind, self.lost_value, self.lost_ts),
            Written(self.won_kind, self.won_value, self.won_ts),
        )


class LocalStore:
    """The local store of one replica (one account). Open with :meth:`open`.

    Use as an async context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        conn: aiosqlite.Connection,
        replica_id: str,
        policy: LwwPolicy,
        clock: HybridClock,
        time_source: Callable[[], float],
        conflict_log_limit: int,
        cache_size: int,
        projection: ProjectionSpec,
    ) -> None:
        self.path = path
        #: The indexes and full-text fields declared at open.
        self.projection = projection
        self._record_listeners = ChangeListeners()
        # A second connection, read-only, used on the event loop's thread for point reads
        # (get): a primary-key lookup costs less than a hop to the writer's thread.
        self._reader: sqlite3.Connection | None = None
        self._watched: Counter[str] = Counter()  # collections with live queries
        self._scan_now: dict[tuple[str, str], None] = {}
        self._scanning: asyncio.Task[None] | None = None
        self.replica_id = replica_id
        self.lww_policy = policy
        self._conn: aiosqlite.Connection | None = conn
        self._clock = clock
        # The HLC position last queued for writing (None: unknown, write it with the next edit).
        self._clock_written: str | None = None
        self._time = time_source
        self._conflict_log_limit = conflict_log_limit
        self._cache: OrderedDict[tuple[str, str], Doc[Any]] = OrderedDict()
        self._cache_size = cache_size
        self._checkpointer = Checkpointer(path)
        self._compactor = IdleCompactor(self.compact, COMPACT_MIN_ROWS)
        self._writer = GroupCommit(
            conn,
            path,
            before_group=self._accessed_write,
            on_failed=self._forget,
            after_commit=self._after_commit,
        )
        self._write_lock = self._writer.lock
        self._in_transaction = False
        self._edit_lock = asyncio.Lock()
        self._editing: tuple[str, str] | None = None
        self._editing_task: asyncio.Task[Any] | None = None
        self._accessed: dict[tuple[str, str], float] = {}
        self._settings: dict[str, str | None] = {}  # committed values, once read or written
        self._stale_vectors: set[tuple[str, str]] = set()  # NULL state vectors to recompute
        self._refresher: asyncio.TimerHandle | None = None
        self._refreshing: asyncio.Task[None] | None = None
        # Records changed by remote updates whose conflicts are not logged yet.
        self._conflict_scan = IdleWork(self._scan, "conflict scan", batch=_SCAN_BATCH)
        self._conflict_listeners: list[Callable[[ConflictLogEntry], None]] = []
        # Deleted records still in the store -> their tombstone key (docs/records.md): as
        # committed plus what is being committed, like the documents in memory.
        self._deleted: dict[tuple[str, str], str] = {}
        self.outbox = Outbox(self)
        #: Remote timestamps refused by the HLC because they were too far ahead.
        self.skewed_timestamps = 0
        #: Retention, quota and expiry of the cached records (crdt_sync.store.cache_keeper).
        self.cache = CacheKeeper(self, CachePolicy())
        self._removals = 0  # bumped when records are removed: a read racing it caches nothing

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        replica_id: str | None = None,
        lww: LwwPolicy | Mapping[str, Any] | None = None,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        conflict_log_limit: int = 1000,
        cache_size: int = 256,
        indexes: Mapping[str, Iterable[str | Sequence[str]]] | None = None,
        text_fields: Mapping[str, Iterable[str]] | None = None,
        time_source: Callable[[], float] = time.time,
        cache: CachePolicy | None = None,
    ) -> LocalStore:
        """Open (or create) the store file at ``path``.

        Args:
            path: the SQLite file of this replica (one per account).
            replica_id: this replica's id, used when the file is created (default: random).
            lww: which collections/fields are last-write-wins (see :class:`LwwPolicy`).
            max_skew_ms: how far ahead of local time a remote LWW timestamp may be adopted.
            conflict_log_limit: how many LWW conflicts to keep (oldest dropped first).
            cache_size: how many record documents to keep in memory.
            indexes: per collection, the fields (or tuples of fields) to index for queries,
                e.g. ``{"appointments": ["date", ("assigned_to", "date")]}``.
            text_fields: per collection, the fields full-text search looks in, e.g.
                ``{"jobs": ["title", "notes"]}``.
            time_source: the wall clock (seconds), replaceable in tests.
            cache: retention, quota and warnings of the cache (default: :class:`CachePolicy`,
                30-day retention, no quota); applied in the background while the store is open.

        Raises:
            SchemaVersionError: the file was written by a newer crdt-sync.
            CorruptStoreError: the file is not a crdt-sync store, or is damaged.
            InvalidQuery: an index or text field declaration that cannot be used.
        """
        file = Path(path)
        policy = lww if isinstance(lww, LwwPolicy) else LwwPolicy(lww)
        spec = ProjectionSpec.of(indexes, text_fields)
        try:
            conn = await aiosqlite.connect(file, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(file, f"cannot open: {exc}") from exc
        try:
            await _prepare(conn, file)
            stored = await _meta(conn, "replica_id")
            if stored is None:
                stored = replica_id or uuid.uuid4().hex[:16]
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('replica_id', ?)", (stored,)
                )
            elif replica_id is not None and replica_id != stored:
                raise InvalidState(
                    f"{file} belongs to replica {stored!r}, not {replica_id!r}; "
                    "open it without replica_id or use another file"
                )
            hlc_raw = await _meta(conn, "hlc")
            last = Timestamp.decode(hlc_raw) if hlc_raw else None
            clock = HybridClock(stored, last, max_skew_ms=max_skew_ms)
            # Crash recovery: an upload in flight when the process died is queued again.
            await conn.execute("UPDATE outbox SET status = 'queued' WHERE status = 'uploading'")
            await on_thread(conn, _apply_spec, spec)
        except BaseException:
            await conn.close()
            raise
        store = cls(
            file, conn, stored, policy, clock, time_source, conflict_log_limit, cache_size, spec
        )
        await store.outbox._load_counts()
        # Conflict scans a crash interrupted resume now.
        due = await conn.execute_fetchall("SELECT collection, id FROM conflict_scan")
        store._conflict_scan.add((str(c), str(r)) for c, r in due)
        deleted = await conn.execute_fetchall(
            "SELECT collection, id, deleted FROM records WHERE deleted IS NOT NULL"
        )
        store._deleted = {(str(c), str(r)): str(d) for c, r, d in deleted}
        if cache is not None:
            store.cache.policy = cache
        await store.cache.start()
        return store

    async def close(self) -> None:
        """Close the file. The store cannot be used afterwards."""
        if self._conn is not None:
            await self.cache.close()
            await self._compactor.close()
            if self._refresher is not None:
                self._refresher.cancel()
                self._refresher = None
            if self._refreshing is not None:
                self._refreshing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._refreshing
            if self._scanning is not None:
                self._scanning.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._scanning
            await self._conflict_scan.close()
            await self._writer.drain()
            if self._accessed:
                async with self._transaction():
                    pass  # flushes the deferred accessed_at times
            await self._checkpointer.close()
            conn, self._conn = self._conn, None
            self._cache.clear()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            await conn.close()

    async def __aenter__(self) -> LocalStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wipe(self, *, force: bool = False) -> None:
        """Delete this account's local data (logout): closes the store and removes its files.

        Refused while changes are not synced yet, unless ``force`` (they are lost then).

        Raises:
            UnsyncedChangesError: unsynced changes exist and ``force`` is false (says how
                many); the store stays as it was (open if it was).
        """
        if not force:
            if self._conn is not None:
                entries, records = await self.unsynced()
                if entries:
                    raise UnsyncedChangesError(self.path, entries, records)
            await self.close()
            # Checked again on the file: an edit may have committed while closing.
            entries, records = _unsynced_in_file(self.path)
            if entries:
                raise UnsyncedChangesError(self.path, entries, records)
        await self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.path}{suffix}")

    async def unsynced(self) -> tuple[int, int]:
        """``(outbox entries, records with entries)``: the changes the relay does not have."""
        row = _first(
            await self.conn.execute_fetchall(
                "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT collection, id"
                " FROM outbox)) FROM outbox"
            )
        )
        return int(row[0]), int(row[1])

    async def absent(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Those of these records that were removed from the cache (evicted, expired,
        cleared) and are not here (see :meth:`CacheKeeper.absent
        <crdt_sync.store.cache_keeper.CacheKeeper.absent>`)."""
        return await self.cache.absent(keys)

    async def clear_cache(self) -> CacheReport:
        """Remove every record without unsynced changes (records with outbox entries, whatever
        their status, stay, with everything they need). Raises an ``evicted`` cache event."""
        return await self.cache.clear()

    async def _removing(
        self,
        body: Callable[[sqlite3.Connection], tuple[Mapping[tuple[str, str], Row | None], _T]],
    ) -> _T:
        """Run ``body`` as one write with edits held off; it removes records (with
        :func:`~crdt_sync.store.removal.remove_records`) and returns their keys, each with its
        projection row before the removal (or None), and a result. Then the removed records
        are forgotten in memory, so they load again from disk (a re-download) instead of from
        a stale document or state vector, and live queries hear that they left (origin
        ``local``)."""
        async with self._edit_lock:  # no edit builds on a document being removed
            removed, result = await self._write(body)
            self._forget_removed(removed, "local")
        return result

    def _forget_removed(
        self, removed: Mapping[tuple[str, str], Row | None], origin: Origin
    ) -> None:
        """Records were removed from the file: forget them in memory (a read racing the
        removal caches nothing) and tell live queries they left (those with a row before)."""
        self._removals += 1
        for key, before in removed.items():
            self._cache.pop(key, None)
            self._accessed.pop(key, None)
            self._stale_vectors.discard(key)
            self._scan_now.pop(key, None)
            if before is not None:
                self._changed(*key, origin, before, None)

    @property
    def watched(self) -> bool:
        """Whether anything listens to record changes (live queries): removals then report
        the removed records' fields."""
        return bool(self._record_listeners)

    @property
    def conn(self) -> aiosqlite.Connection:
        """The open connection (raises :class:`InvalidState` once closed)."""
        if self._conn is None:
            raise InvalidState(f"{self.path}: the store is closed")
        return self._conn

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A multi-statement write transaction (awaited statement by statement), after every
        write submitted before it."""
        conn = self.conn
        await self._writer.drain()
        async with self._write_lock:
            self._in_transaction = True
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._accessed:
                        accessed, self._accessed = self._accessed, {}
                        await conn.executemany(_ACCESSED_SQL, _accessed_rows(accessed))
                        await conn.executemany(_PROJECTION_ACCESSED_SQL, _accessed_rows(accessed))
                    yield conn
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
            finally:
                self._in_transaction = False

    def _submit(
        self, body: WriteBody, keys: Iterable[Key] = (), *, lazy: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``body`` for the group commit; the future completes once it is committed.

        ``keys``: the records whose in-memory documents already hold this write's change.
        ``lazy``: commit it with the next write (or within 10 ms), see :class:`GroupCommit`.
        """
        self.conn  # noqa: B018 (raises InvalidState once closed)
        return self._writer.submit(body, keys, lazy=lazy)

    async def _write(
        self, body: Callable[[sqlite3.Connection], _T], keys: Iterable[Key] = ()
    ) -> _T:
        """Run ``body`` in the next group commit on the store's SQLite thread; wait for it.

        One round trip to aiosqlite's worker thread per group, not per statement or per write
        (:mod:`crdt_sync.store.sqlite_thread`).
        """
        result: _T = await asyncio.shield(self._submit(body, keys))
        return result

    def _accessed_write(self) -> WriteBody | None:
        """The deferred ``accessed_at`` times, written first in the next group."""
        if not self._accessed:
            return None
        accessed, self._accessed = self._accessed, {}
        return lambda db: _flush_accessed(db, accessed)

    def _after_commit(self) -> None:
        self._checkpointer.committed()
        self._compactor.wrote()
        self._conflict_scan.wrote()

    def _forget(self, keys: set[Key]) -> None:
        """Writes of these records failed: drop their in-memory documents (reloaded from disk)."""
        for key in keys:
            self._cache.pop(key, None)

    # ----------------------------------------------------------------- reading

    async def get(self, collection: str, record_id: str) -> Record:
        """The record's current fields, from the local store (works offline).

        From the record's document when it is in memory, else from its projection row
        (:meth:`query`), which holds the same fields without decoding the document.

        Raises:
            RecordNotFound: the record is not in this store.
        """
        key = (collection, record_id)
        await self._writer.settled(key)  # read what was written
        tombstone = self._deleted.get(key)
        if tombstone is not None:
            raise deletion.deleted_error(collection, record_id, tombstone)
        now = self._time()
        if key not in self._cache and not self._conflict_scan.is_due(key):
            # Not in memory and its projection row is up to date: read that, not the document.
            record = await self._point_read(record_from_row, collection, record_id, now)
            if record is not None:
                self._accessed[key] = now
                return record
        row = await self._record_row(collection, record_id)
        if row is None:
            raise RecordNotFound(collection, record_id)
        if row[6] is not None:
            raise deletion.deleted_error(collection, record_id, row[6])
        doc = await self._doc(collection, record_id)
        # Written with the next write transaction (or at close): a read costs no write.
        self._accessed[key] = now
        return self._snapshot(collection, record_id, doc, row, accessed_at=now)

    async def _point_read(
        self, body: Callable[[sqlite3.Connection, str, str, float], _T], *args: Any
    ) -> _T:
        """Run a short read on the reader connection, on this thread (committed data, as
        every read here); on the writer's thread if the reader cannot be used."""
        conn = self.conn
        try:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, timeout=0, isolation_level=None)
                self._reader.execute("PRAGMA query_only = 1")
            return body(self._reader, *args)
        except sqlite3.OperationalError:  # busy (a checkpoint): not worth waiting here
            return await on_thread(conn, body, *args)

    async def exists(self, collection: str, record_id: str) -> bool:
        """Whether the record is in this store (and not deleted)."""
        row = await self._record_row(collection, record_id)
        return row is not None and row[6] is None

    def is_deleted(self, collection: str, record_id: str) -> bool:
        """Whether the record is in this store, deleted (its tombstone is here; reads say it
        is gone). From memory, no query."""
        return (collection, record_id) in self._deleted

    async def delete(self, collection: str, record_id: str) -> None:
        """Delete the record: a tombstone, synced like any edit (one outbox entry, pending
        until the relay acknowledges it). Reads say the record is gone at once
        (:class:`~crdt_sync.errors.RecordDeleted`). A concurrent edit from another replica
        loses to the deletion and is logged in the conflict log (docs/records.md, "Deleting a
        record"). Deleting a deleted record does nothing.

        Raises:
            RecordNotFound: the record is not in this store.
        """
        await deletion.delete(self, collection, record_id)

    async def forget_purged(
        self, items: Iterable[tuple[str, str, str | None]]
    ) -> list[tuple[str, str]]:
        """The relay purged these deleted records (``(collection, record_id, tombstone key or
        None)``): remove them from this store. Pending local changes of such a record are not
        lost silently: each write they hold is logged in the conflict log as lost to the
        deletion, then their outbox entries leave the outbox. Returns the records removed."""
        return await deletion.forget_purged(self, items)

    async def ids(self, collection: str) -> list[str]:
        """The ids of every record of ``collection`` in this store, sorted (deleted records
        left out)."""
        async with self.conn.execute(
            "SELECT id FROM records WHERE collection = ? AND deleted IS NULL ORDER BY id",
            (collection,),
        ) as cursor:
            return [row[0] async for row in cursor]

    async def records(self, collection: str) -> list[Record]:
        """Every record of ``collection`` in this store, sorted by id (from the projection:
        see :meth:`query`)."""
        return await self.query(collection)

    async def search(
        self,
        collection: str,
        text: str | None = None,
        where: Filter | Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """Records of ``collection`` whose string fields (nested ones too) contain ``text``
        (case-insensitive substring) and that match ``where``. Local data only.

        Reads every matching record's projection row; for word search ranked by relevance
        over declared fields, use :meth:`search_text`."""
        needle = text.casefold() if text else None
        found = []
        for record in await self.query(collection, where):
            if needle and not any(needle in v.casefold() for v in _strings(record.fields)):
                continue
            found.append(record)
        return found

    async def query(
        self,
        collection: str,
        where: Filter | Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Record]:
        """The records of ``collection`` matching ``where``, read from the projection (no
        document is decoded). Local data only; works offline.

        ``where``: a filter (:func:`crdt_sync.query.field`) or ``{"field": value}``;
        windows are evaluated now. ``order_by``: field names, ``"-date"`` for descending
        (ties by id, in the direction of the last field). Results carry ``pending``
        (unsynced local changes) and their times, not their ``state_vector`` (empty: see
        :meth:`get`). Declare indexes (``open(indexes=...)``) on the fields you filter and
        order by.

        Raises:
            InvalidQuery: a malformed filter or order.
        """
        q = Query(collection, parse_where(where), _order(order_by), limit, offset)
        resolved = await self._prepare_query(collection, q.where)
        return await on_thread(self.conn, query_rows, q, resolved, dict(self._accessed))

    async def count(self, collection: str, where: Filter | Mapping[str, Any] | None = None) -> int:
        """How many records of ``collection`` match ``where`` (see :meth:`query`)."""
        resolved = await self._prepare_query(collection, parse_where(where))
        return await on_thread(self.conn, count_rows, collection, resolved)

    async def search_text(
        self,
        collection: str,
        text: str,
        *,
        where: Filter | Mapping[str, Any] | None = None,
        limit: int = 20,
        prefix: bool = True,
        marks: tuple[str, str] = ("[", "]"),
    ) -> list[SearchHit]:
        """Full-text search in the fields declared with ``open(text_fields=...)``: records of
        ``collection`` holding every word of ``text`` (case and accents folded; the last word
        as a prefix unless ``prefix`` is false), that match ``where``, best first, each with a
        snippet whose matches are wrapped in ``marks``. Local data only.

        Raises:
            InvalidQuery: ``collection`` has no declared text fields, or a malformed filter.
        """
        if collection not in self.projection.text_fields:
            raise InvalidQuery(
                f"collection {collection!r} has no text fields to search: declare them with"
                f" LocalStore.open(text_fields={{{collection!r}: [...]}})"
            )
        match = fts_query(text, prefix=prefix)
        if match is None or limit <= 0:
            return []
        resolved = await self._prepare_query(collection, parse_where(where))
        return await on_thread(
            self.conn, search_rows, collection, match, resolved, limit, marks, dict(self._accessed)
        )

    async def _prepare_query(self, collection: str, where: Filter | None) -> Filter | None:
        """Bring the collection's projection up to date (writes in flight landed, remote
        updates scanned) and resolve ``where``'s windows at the store's current time."""
        await self._writer.drain()
        due = [key for key in self._conflict_scan.due if key[0] == collection]
        if due:
            await self.scan_conflicts(due)
        if where is None:
            return None
        return resolve(where, now=dt.datetime.fromtimestamp(self._time(), dt.UTC))

    async def state_vector(self, collection: str, record_id: str) -> bytes:
        """The record's state vector (empty if the record is not here)."""
        return (await self.state_vectors([(collection, record_id)]))[0]

    async def state_vectors(self, keys: Sequence[tuple[str, str]]) -> list[bytes]:
        """The state vectors of many records at once (``b""`` for records not here).

        Batched: a few queries per 400 records instead of a few per record, which is what a
        catch-up after reconnect asks for.
        """
        for key in keys:
            if self._writer.in_flight(key):
                await self._writer.settled(key)
        found: dict[tuple[str, str], bytes] = {}
        by_collection: dict[str, list[str]] = {}
        for collection, record_id in dict.fromkeys(keys):
            by_collection.setdefault(collection, []).append(record_id)
        conn = self.conn
        # Every chunk's query is queued at once: the SQLite thread reads the next chunk while
        # this one is handled here.
        reads = []
        for collection, all_ids in by_collection.items():
            for ids in _chunks(all_ids, _KEYS_PER_QUERY):
                query = on_thread(conn, _read_state_vectors, collection, ids)
                reads.append((collection, ids, asyncio.ensure_future(query)))
        try:
            for collection, ids, read in reads:
                # One hop: the column where it is set, the rows to merge where it is not.
                known, stale = await read
                computed = []
                for record_id in ids:
                    key = (collection, record_id)
                    cached = self._cache.get(key) if self._editing != key else None
                    if cached is not None:  # the in-memory doc is never behind the disk
                        found[key] = cached.get_state()
                        if record_id in stale and not self._writer.in_flight(key):
                            computed.append((found[key], collection, record_id))
                    elif record_id in known:
                        found[key] = known[record_id]
                    elif record_id in stale:
                        updates, client_id = stale[record_id]
                        found[key] = _state_vector_of(updates, client_id)
                        if not self._writer.in_flight(key):  # else the write in flight sets it
                            computed.append((found[key], collection, record_id))
                if computed:  # a cache of derived data: not waited for
                    self._submit(
                        lambda db, rows=computed: db.executemany(  # type: ignore[misc]
                            "UPDATE records SET state_vector = ? WHERE collection = ? AND id = ?",
                            rows,
                        ),
                        lazy=True,
                    )
        finally:
            for _, _, read in reads:
                if not read.done():
                    read.cancel()
        return [found.get(key, b"") for key in keys]

    async def encode_state(
        self, collection: str, record_id: str, state_vector: bytes | None = None
    ) -> bytes:
        """The record as one update, or only what a peer with ``state_vector`` misses."""
        if await self._record_row(collection, record_id) is None:
            raise RecordNotFound(collection, record_id)
        doc = await self._doc(collection, record_id)
        return doc.get_update(state_vector) if state_vector else doc.get_update()

    async def confirmed_state(self, collection: str, record_id: str) -> bytes:
        """What the relay has confirmed of this record, as one update."""
        doc = await self._confirmed_doc(collection, record_id)
        return doc.get_update()

    async def conflicts(self, collection: str, record_id: str) -> list[ConflictLogEntry]:
        """Writes of this record that lost to a concurrent one, oldest first.

        Conflicts that remote updates brought are logged by a background scan shortly after
        they arrive (:meth:`scan_conflicts`); this scans the record first if it is due.
        """
        if self._conflict_scan.is_due((collection, record_id)):
            await self.scan_conflicts([(collection, record_id)])
        return await self._conflict_rows(
            "WHERE collection = ? AND id = ? ORDER BY rowid", (collection, record_id)
        )

    async def recent_conflicts(
        self, limit: int = 100, *, after: int | None = None
    ) -> list[ConflictLogEntry]:
        """Conflicts of every record, newest first (at most ``limit``); with ``after``, only
        those logged after the entry whose ``seq`` it is (e.g. the last one an app showed)."""
        await self.scan_conflicts()
        if after is None:
            return await self._conflict_rows("ORDER BY rowid DESC LIMIT ?", (limit,))
        return await self._conflict_rows(
            "WHERE rowid > ? ORDER BY rowid DESC LIMIT ?", (after, limit)
        )

    async def _conflict_rows(self, where: str, params: tuple[Any, ...]) -> list[ConflictLogEntry]:
        async with self.conn.execute(
            f"SELECT {_CONFLICT_COLUMNS} FROM conflict_log {where}", params
        ) as cursor:
            rows = await cursor.fetchall()
        return [_conflict_entry(row) for row in rows]

    def on_conflict(self, listener: Callable[[ConflictLogEntry], None]) -> Callable[[], None]:
        """Call ``listener`` for each conflict logged from now on, after its commit; returns a
        function that removes it."""
        self._conflict_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._conflict_listeners.remove(listener)

        return remove

    async def scan_conflicts(self, keys: Iterable[tuple[str, str]] | None = None) -> int:
        """Log the conflicts of records changed by remote updates (all that are due, or the
        due ones among ``keys``), and move the clock past their timestamps. Runs by itself once
        the store has had no write for a second (and stops at the next write); the records stay
        due until then, across restarts. Returns how many conflicts were logged."""
        return await self._conflict_scan.run_due(keys)

    async def _scan(self, keys: Sequence[tuple[str, str]]) -> int:
        """Bring records changed by remote updates up to date: log their conflicts, move the
        clock past their timestamps, write their projection rows; in one write."""
        now = self._time()
        now_ms = int(now * 1000)
        rows: list[tuple[Any, ...]] = []
        projected: list[tuple[str, str, Row | None]] = []
        spec = self.projection
        limit = self._conflict_log_limit
        scanned = [(c, r) for c, r in keys]
        # Under the edit lock: no edit or remote apply of these records comes between reading
        # their documents and queueing the write (it would be overwritten by older rows).
        # Inside an edit (a query in the edit's block) the edit holds it, and writes after.
        inside_edit = (
            self._editing_task is not None and self._editing_task is asyncio.current_task()
        )
        async with contextlib.nullcontext() if inside_edit else self._edit_lock:
            for collection, record_id in keys:
                try:
                    doc = await self._doc(collection, record_id, remember=False)
                except RecordNotFound:
                    continue
                layout = layout_of(doc)
                for entry in layout.all_entries():
                    if not self._clock.observe(entry.ts, now_ms):
                        self.skewed_timestamps += 1
                for c in layout.conflicts():
                    rows.append((collection, record_id, *_conflict_columns(c), now))
                # A deleted record has no projection row (removed when its tombstone came).
                row = None if layout.deletion() is not None else encode_fields(layout.read())
                projected.append((collection, record_id, row))
            clock = self._clock.state().encode()
            replaced: list[Row | None] = []

            def write_log(db: sqlite3.Connection) -> list[ConflictLogEntry]:
                new = _log_conflicts(db, rows, limit)
                for collection, record_id, fields in projected:
                    replaced.append(write_or_remove_row(db, spec, collection, record_id, fields))
                db.executemany("DELETE FROM conflict_scan WHERE collection = ? AND id = ?", scanned)
                db.execute(_SAVE_CLOCK_SQL, (clock,))
                return new

            committed = self._submit(write_log)
        new = await asyncio.shield(committed)
        self._clock_written = clock
        for (collection, record_id, fields), before in zip(projected, replaced, strict=True):
            if before != fields:
                self._changed(collection, record_id, "remote", before, fields)
        self._publish_conflicts(new)
        return len(new)

    def _publish_conflicts(self, logged: Iterable[ConflictLogEntry]) -> None:
        """Call the conflict listeners with each newly logged entry (after its commit)."""
        for entry in logged:
            for listener in list(self._conflict_listeners):
                try:
                    listener(entry)
                except Exception:
                    log.exception("%s: a conflict listener failed", self.path)

    # ----------------------------------------------------------------- record changes

    def on_record_change(self, listener: Callable[[RecordChanged], None]) -> Callable[[], None]:
        """Call ``listener`` after each commit that changed a record's fields, local edits
        and remote updates alike (remote ones once their scan ran: at the next pause, or
        sooner when a query or a watcher asks); returns a function that removes it."""
        return self._record_listeners.add(listener)

    def watch(
        self,
        collection: str,
        where: Filter | Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> LiveQuery:
        """A live :meth:`query`: its result now, then again after each local edit or remote
        update that affects it (the record matched before or matches after), with the changes
        (origin ``"local"``/``"remote"``, fields changed). Remote updates of a watched
        collection are scanned at once rather than at the next pause.

        ``async for result in store.watch("jobs", {"status": "open"}): show(result.records)``

        Raises:
            InvalidQuery: a malformed filter or order.
        """
        filter_ = parse_where(where)
        Query(collection, filter_, _order(order_by), limit, offset)  # checks them now

        async def run() -> list[Record]:
            return await self.query(
                collection, filter_, order_by=order_by, limit=limit, offset=offset
            )

        def subscribe(listener: Callable[[RecordChanged], None]) -> Callable[[], None]:
            remove = self._record_listeners.add(listener)
            self._watched[collection] += 1

            def unsubscribe() -> None:
                remove()
                self._watched[collection] -= 1

            return unsubscribe

        return LiveQuery(collection, filter_, run, subscribe, self._time)

    def _scan_soon(self, keys: Iterable[tuple[str, str]]) -> None:
        """Scan these records now (in a task) rather than at the next pause: a live query
        waits for their projection."""
        self._scan_now.update(dict.fromkeys(keys))
        if self._scan_now and self._scanning is None and self._conn is not None:
            self._scanning = asyncio.get_running_loop().create_task(self._scan_watched())

    async def _scan_watched(self) -> None:
        try:
            while self._scan_now and self._conn is not None:
                keys, self._scan_now = list(self._scan_now), {}
                await self.scan_conflicts(keys)
        except InvalidState:
            pass  # closed meanwhile
        except Exception:
            log.exception("%s: scanning watched records failed", self.path)
        finally:
            self._scanning = None

    def _changed(
        self, collection: str, record_id: str, origin: Origin, before: Row | None, after: Row | None
    ) -> None:
        if self._record_listeners:
            self._record_listeners.publish(
                RecordChanged(collection, record_id, origin, before, after)
            )

    # ----------------------------------------------------------------- local edits

    @contextlib.asynccontextmanager
    async def edit(
        self, collection: str, record_id: str, *, create: bool = True
    ) -> AsyncIterator[RecordEditor]:
        """Edit one record in one transaction: one update, one outbox entry.

        ``async with store.edit("jobs", "job-42") as job: job["status"] = "done"``.
        When the block exits normally the edit is durable (inside :meth:`batch`: when the
        batch exits). If it raises, nothing is saved.
        Edits are applied one at a time, in the order they are entered; concurrent edits (from
        several tasks) share their commits.

        Raises:
            RecordNotFound: the record does not exist and ``create`` is false.
            RecordDeleted: the record was deleted (a deleted record is never edited again).
            InvalidState: called inside another edit of this store.
            StoreError: the edit could not be written (it is not kept in memory either).
        """
        if self._editing is not None and asyncio.current_task() is self._editing_task:
            raise InvalidState("store.edit() cannot be nested inside another edit")
        key = (collection, record_id)
        committed: asyncio.Future[int] | None = None
        async with self._edit_lock:
            self._editing = key
            self._editing_task = asyncio.current_task()
            try:
                # Out of the cache while the block runs: concurrent readers load their own.
                doc, exists = await self._doc_for_edit(collection, record_id, create)
                captured: list[bytes] = []

                def capture(event: TransactionEvent) -> None:
                    captured.append(event.update)

                subscription = doc.observe(capture)
                editor = RecordEditor(doc, collection, self.lww_policy, self._stamp)
                try:
                    with doc.transaction(origin=LOCAL_ORIGIN):
                        yield editor
                finally:
                    doc.unobserve(subscription)
                update = captured[0] if captured else EMPTY_UPDATE
                self._remember(key, doc)
                if update != EMPTY_UPDATE or not exists:
                    tombstone = editor.deleted.encode() if editor.deleted else None
                    committed = self._submit_edit(
                        collection, record_id, doc, update, new=not exists, deleted=tombstone
                    )
            finally:
                self._editing = None
                self._editing_task = None
        if committed is not None:
            batch = batches.current(self)
            if batch is None:
                await asyncio.shield(committed)
            else:
                batch.add(committed, key)  # the batch's exit waits for it

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Edits made in the block are durable together, when it exits.

        ``async with store.batch(): for job in jobs: async with store.edit(...) as j: ...``.
        Inside the block an edit returns once it is applied in memory and queued for its group
        commit (a read of that record waits for the commit); the exit waits for every commit,
        so an import runs at the group commit's pace instead of one commit round trip per
        edit. Edits made by tasks started inside the block join it; a batch inside a batch is
        part of the outer one.

        Raises:
            BatchError: (at the exit) edits of the batch could not be written; ``failed``
                names their records. Those edits are not kept in memory either; the others are
                durable. If the block itself raises, its exception propagates once the commits
                settled.
        """
        if batches.current(self) is not None:
            yield  # part of the enclosing batch
            return
        batch, token = batches.enter(self)
        try:
            yield
        finally:
            batches.leave(token)
            settled = await batch.settle()
        if settled.first is not None:
            raise BatchError(
                self.path, settled.failed, settled.edits, settled.first
            ) from settled.first

    async def _doc_for_edit(
        self, collection: str, record_id: str, create: bool
    ) -> tuple[Doc[Any], bool]:
        """The record's document, taken out of the cache, and whether the record exists."""
        key = (collection, record_id)
        # A cached doc means the record exists (or its creation is in flight): no query.
        cached = self._cache.pop(key, None)
        if cached is not None:
            deletion.refuse_deleted(self, key, cached)
            return cached, True
        if self._writer.in_flight(key):
            await self._writer.settled(key)
        if await self._record_row(collection, record_id) is None:
            if not create:
                raise RecordNotFound(collection, record_id)
            return Doc(client_id=_new_client_id()), False
        doc = await self._doc(collection, record_id)
        self._cache.pop(key, None)
        deletion.refuse_deleted(self, key, doc)
        return doc, True

    def _stamp(self, current: Timestamp | None) -> Timestamp:
        now_ms = int(self._time() * 1000)
        return self._clock.after(current, now_ms) if current else self._clock.tick(now_ms)

    def _submit_edit(
        self,
        collection: str,
        record_id: str,
        doc: Doc[Any],
        update: bytes,
        *,
        new: bool,
        deleted: str | None = None,
    ) -> asyncio.Future[int]:
        """Queue the edit's rows for the group commit; the future gives its outbox seq.
        ``deleted``: the edit deleted the record (its tombstone key)."""
        now = self._time()
        vector = doc.get_state()
        clock: str | None = self._clock.state().encode()
        if clock == self._clock_written:
            clock = None  # unchanged (no LWW field written): no row to rewrite
        else:
            self._clock_written = clock
        client_id = doc.client_id
        # A deleted record has no projection row: queries, search and get() skip it.
        row = None if deleted else encode_fields(read_fields(doc))
        spec = self.projection
        replaced: list[Row | None] = []

        def commit(db: sqlite3.Connection) -> int:
            if new:
                db.execute(
                    "INSERT INTO records (collection, id, client_id, created_at, updated_at,"
                    " accessed_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (collection, record_id, client_id, now, now, now),
                )
            seq = db.execute(
                "INSERT INTO outbox (collection, id, created_at) VALUES (?, ?, ?)",
                (collection, record_id, now),
            ).lastrowid
            assert seq is not None
            db.execute(
                "INSERT INTO updates (collection, id, data, outbox_seq) VALUES (?, ?, ?, ?)",
                (collection, record_id, update, seq),
            )
            db.execute(
                "UPDATE records SET updated_at = ?, accessed_at = ?, state_vector = ?"
                " WHERE collection = ? AND id = ?",
                (now, now, vector, collection, record_id),
            )
            if clock is not None:
                db.execute(_SAVE_CLOCK_SQL, (clock,))
            if deleted is not None:
                db.execute(
                    "UPDATE records SET deleted = ? WHERE collection = ? AND id = ?",
                    (deleted, collection, record_id),
                )
            replaced.append(write_or_remove_row(db, spec, collection, record_id, row))
            return seq

        future = self._submit(commit, [(collection, record_id)])
        unmark = deletion.mark_deleted(self, {(collection, record_id): deleted} if deleted else {})

        def landed(done: asyncio.Future[int]) -> None:
            if done.cancelled() or done.exception() is not None:
                unmark()
                self._clock_written = None  # not known to be on disk: write it next time
            else:
                self._compactor.rows_added([(collection, record_id)])
                if replaced and (replaced[0] != row or deleted):
                    self._changed(collection, record_id, "local", replaced[0], row)
            self.outbox._committed(done, collection, record_id, now, update)

        future.add_done_callback(landed)
        return future

    async def _save_clock(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(_SAVE_CLOCK_SQL, (self._clock.state().encode(),))

    # ----------------------------------------------------------------- remote updates

    async def apply_remote(
        self,
        updates: Iterable[RemoteUpdate | tuple[str, str, bytes]],
        settings: Mapping[str, str] | None = None,
        *,
        on_committed: Callable[[BaseException | None], None] | None = None,
    ) -> list[tuple[str, str]]:
        """Apply updates that came from elsewhere, across many records, in one transaction.

        The updates become part of each record's confirmed state. Records not yet in the store
        are created. ``settings`` (e.g. the sync cursor these updates bring the replica to) are
        written in the same transaction. Returns the ``(collection, record_id)`` keys that
        changed, in first-seen order. The changed records are scanned for conflicts (which
        are logged, see :meth:`conflicts`) and their timestamps move the clock, in the
        background once updates stop arriving (:meth:`scan_conflicts`); the scan is due in
        the same transaction, so a crash only delays it.

        With ``on_committed``, returns as soon as the updates are applied in memory and queued
        for the commit (readers of those records wait for it), and calls
        ``on_committed(None)``, or ``on_committed(error)`` if the commit failed (the updates
        are then not kept: fetch them again), once it is done.
        """
        items = [u if isinstance(u, RemoteUpdate) else RemoteUpdate(*u) for u in updates]
        setting_rows = [(f"setting:{k}", v) for k, v in (settings or {}).items()]
        if not items:
            if setting_rows:
                await self._write(lambda db: db.executemany(_SET_SETTING_SQL, setting_rows))
                self._settings.update(settings or {})
            return []
        now = self._time()
        keys = list(dict.fromkeys((u.collection, u.record_id) for u in items))
        # One row per record per batch: several updates go in one length-prefixed bundle.
        by_key: dict[tuple[str, str], list[bytes]] = {k: [] for k in keys}
        for u in items:
            by_key[(u.collection, u.record_id)].append(u.update)
        rows = [
            (c, r, ups[0], 0) if len(ups) == 1 else (c, r, _bundle(ups), 1)
            for (c, r), ups in by_key.items()
        ]
        # The state vector of each record: exact when its document is in memory (applied
        # below before the write), else NULL until the background refresh recomputes it.
        vectors: dict[tuple[str, str], bytes | None] = dict.fromkeys(keys)
        # Records whose updates bring a tombstone (read from the bytes, no document built).
        tombstones: dict[tuple[str, str], str] = {}
        for u in items:
            found = tombstones_in(u.update)
            if found:
                key = (u.collection, u.record_id)
                tombstones[key] = max([*found, tombstones.get(key, "")])
        deleted_rows = [(t, c, r, t) for (c, r), t in tombstones.items()]
        spec = self.projection
        unprojected: dict[tuple[str, str], Row | None] = {}

        def write_rows(db: sqlite3.Connection) -> None:
            # One upsert per record: created if new, else its times and state vector.
            db.executemany(
                "INSERT INTO records (collection, id, client_id, created_at, updated_at,"
                " accessed_at, state_vector) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (collection, id) DO UPDATE SET updated_at = excluded.updated_at,"
                " state_vector = excluded.state_vector",
                [(c, r, _new_client_id(), now, now, now, v) for (c, r), v in vectors.items()],
            )
            db.executemany(
                "INSERT INTO updates (collection, id, data, bundle) VALUES (?, ?, ?, ?)", rows
            )
            db.executemany(
                "INSERT OR IGNORE INTO conflict_scan (collection, id) VALUES (?, ?)", keys
            )
            if deleted_rows:
                db.executemany(
                    "UPDATE records SET deleted = ? WHERE collection = ? AND id = ?"
                    " AND (deleted IS NULL OR deleted < ?)",
                    deleted_rows,
                )
                # Deleted: out of queries, counts and search in this same transaction.
                for key in tombstones:
                    unprojected[key] = write_or_remove_row(db, spec, *key, None)
            if setting_rows:
                db.executemany(_SET_SETTING_SQL, setting_rows)

        async with self._edit_lock:  # not in the middle of an edit's pycrdt transaction
            # The in-memory documents take the updates now (they hold what is committed plus
            # what is being committed); a record whose update waits for a dependency is
            # dropped from memory: Yrs may lose it when more arrive; reloaded from disk.
            for key in keys:
                doc = self._cache.get(key)
                if doc is None:
                    continue
                if apply_updates(doc, by_key[key]):
                    vectors[key] = doc.get_state()
                else:
                    del self._cache[key]
            # The settings join the write's keys: if it fails, a queued write of the same
            # setting (a later cursor, which would claim these updates) fails with it.
            committed = self._submit(write_rows, [*keys, *_setting_keys(settings)])
            # Due now, not once committed: a query that waits for this write (drain) must also
            # find these records due, or it could read their rows before the scan. A scan
            # that comes first waits for the write (the records are in flight).
            self._conflict_scan.add(keys)
            unmark = deletion.mark_deleted(self, tombstones)
        stale = [k for k, v in vectors.items() if v is None]

        def landed(done: asyncio.Future[None]) -> None:
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            if error is not None:
                unmark()
            if error is None:
                self._settings.update(settings or {})
                self._refresh_vectors_soon(stale)
                self._compactor.rows_added(keys)
                self._scan_soon(k for k in keys if self._watched[k[0]])
                for key, before in unprojected.items():
                    if before is not None:
                        self._changed(*key, "remote", before, None)
            if on_committed is not None:
                on_committed(error)

        committed.add_done_callback(landed)
        if on_committed is None:
            await asyncio.shield(committed)
        return keys

    def _refresh_vectors_soon(self, keys: Iterable[tuple[str, str]]) -> None:
        """Recompute these records' state vectors in the background, once remote updates
        stop arriving (debounced): the next catch-up then answers from the column."""
        self._stale_vectors.update(keys)
        if not self._stale_vectors:
            return
        if self._refresher is not None:
            self._refresher.cancel()  # a later batch: wait for quiet again
        self._refresher = asyncio.get_running_loop().call_later(
            _REFRESH_VECTORS_AFTER, self._start_refresh
        )

    def _start_refresh(self) -> None:
        self._refresher = None
        if self._conn is not None and self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_vectors())

    async def _refresh_vectors(self) -> None:
        try:
            await self.refresh_state_vectors()
        except InvalidState:
            pass  # closed meanwhile
        except Exception:
            log.exception("%s: refreshing state vectors failed", self.path)
        finally:
            self._refreshing = None

    async def refresh_state_vectors(self) -> int:
        """Recompute the state vectors that remote updates left unknown (records that were
        not in memory), so that the next catch-up answers from stored ones. Runs by itself in
        the background once remote updates stop arriving. Returns how many were recomputed."""
        done = 0
        while self._stale_vectors and self._conn is not None:
            count = min(_KEYS_PER_QUERY, len(self._stale_vectors))
            chunk = [self._stale_vectors.pop() for _ in range(count)]
            await self.state_vectors(chunk)  # computes and stores the missing ones
            done += count
        return done

    # ----------------------------------------------------------------- compaction

    async def compact(self, collection: str, record_id: str) -> None:
        """Merge the record's confirmed updates into its snapshot (content is unchanged).

        Crash-safe: the new snapshot and the removal of the merged rows commit together.
        """
        async with self._transaction() as conn:
            await self._compact(conn, collection, record_id)

    async def compact_due(self) -> int:
        """Compact now the records whose logs grew by :data:`COMPACT_MIN_ROWS` rows since their
        last compaction (done by itself after a second without writes). Returns how many."""
        return await self._compactor.run_due()

    async def compact_all(self) -> int:
        """Compact every record whose update log is long. Returns how many were compacted."""
        async with self.conn.execute(
            "SELECT collection, id FROM updates WHERE outbox_seq IS NULL"
            " GROUP BY collection, id HAVING COUNT(*) >= ?",
            (COMPACT_MIN_ROWS,),
        ) as cursor:
            keys = [(r[0], r[1]) async for r in cursor]
        for collection, record_id in keys:
            await self.compact(collection, record_id)
        return len(keys)

    async def _compact(self, conn: aiosqlite.Connection, collection: str, record_id: str) -> None:
        row = await self._base(conn, collection, record_id)
        rows = [
            (rowid, _unpack(data, bundle))
            for rowid, data, bundle in await conn.execute_fetchall(
                "SELECT rowid, data, bundle FROM updates WHERE collection = ? AND id = ?"
                " AND outbox_seq IS NULL ORDER BY rowid",
                (collection, record_id),
            )
        ]
        if not rows:
            return
        doc: Doc[Any] = Doc()
        apply_updates(doc, ([bytes(row[0])] if row[0] else []) + [u for r in rows for u in r[1]])
        # Encoding a document drops what Yrs still holds pending (updates whose dependencies
        # have not arrived): such rows stay in the log, only integrated ones are merged.
        encoded = doc.get_state()
        state = decode_state_vector(encoded)
        merged = [
            rowid
            for rowid, parts in rows
            if all(covers(state, u, encoded_state=encoded) for u in parts)
        ]
        if not merged:
            return
        await conn.execute(
            "UPDATE records SET confirmed = ? WHERE collection = ? AND id = ?",
            (doc.get_update(), collection, record_id),
        )
        await conn.executemany("DELETE FROM updates WHERE rowid = ?", [(r,) for r in merged])

    async def disk_usage(self) -> int:
        """Bytes used by the store's pages (after a checkpoint of the WAL)."""
        await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        async with self.conn.execute("PRAGMA page_count") as c1:
            pages = (await c1.fetchone() or (0,))[0]
        async with self.conn.execute("PRAGMA freelist_count") as c2:
            free = (await c2.fetchone() or (0,))[0]
        async with self.conn.execute("PRAGMA page_size") as c3:
            size = (await c3.fetchone() or (0,))[0]
        return int((pages - free) * size)

    # ----------------------------------------------------------------- dropping records

    async def drop_records(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove these records from the store (they left what the replica keeps), except
        those with unsynced local changes, which are kept; returns the kept ones.

        The check and the removal are one transaction after every write submitted before
        (:meth:`CacheKeeper.remove <crdt_sync.store.cache_keeper.CacheKeeper.remove>`): live
        queries hear that the records left, their documents leave memory.
        """
        return await self.cache.remove(keys)

    # ----------------------------------------------------------------- sync state

    async def get_setting(self, key: str) -> str | None:
        """A persisted setting of this replica (e.g. the relay's sync cursor).

        Committed values only; kept in memory once read or written.
        """
        if key not in self._settings:
            self._settings[key] = await _meta(self.conn, f"setting:{key}")
        return self._settings[key]

    async def set_setting(self, key: str, value: str) -> None:
        """Persist a setting of this replica."""
        await asyncio.shield(self._save_setting(key, value, lazy=False))

    def set_setting_lazily(self, key: str, value: str) -> asyncio.Future[None]:
        """Persist a setting with the next write (or within 10 ms), for values whose loss to
        a crash is harmless (e.g. a newer sync cursor: the older one re-downloads a little).
        Returns the write's future; :meth:`get_setting` gives the value once committed."""
        return self._save_setting(key, value, lazy=True)

    def _save_setting(self, key: str, value: str, *, lazy: bool) -> asyncio.Future[None]:
        def write(db: sqlite3.Connection) -> None:
            db.execute(_SET_SETTING_SQL, (f"setting:{key}", value))

        future = self._submit(write, _setting_keys([key]), lazy=lazy)

        def landed(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._settings[key] = value

        future.add_done_callback(landed)
        return future

    # ----------------------------------------------------------------- internals

    async def _base(
        self, conn: aiosqlite.Connection, collection: str, record_id: str
    ) -> tuple[bytes, int]:
        """The record's confirmed snapshot and its local client id. The record must exist."""
        row = _first(
            await conn.execute_fetchall(
                "SELECT confirmed, client_id FROM records WHERE collection = ? AND id = ?",
                (collection, record_id),
            )
        )
        if row is None:
            raise RecordNotFound(collection, record_id)
        return bytes(row[0]), int(row[1])

    async def _record_row(self, collection: str, record_id: str) -> Any:
        """(client_id, state_vector, created_at, updated_at, accessed_at, pending, deleted) or
        None."""
        rows = await self.conn.execute_fetchall(
            "SELECT client_id, state_vector, created_at, updated_at, accessed_at,"
            " EXISTS (SELECT 1 FROM outbox o WHERE o.collection = r.collection AND o.id = r.id),"
            " deleted FROM records r WHERE collection = ? AND id = ?",
            (collection, record_id),
        )
        return _first(rows)

    async def _read(self, collection: str, record_id: str) -> Record:
        row = await self._record_row(collection, record_id)
        if row is None:
            raise RecordNotFound(collection, record_id)
        if row[6] is not None:
            raise deletion.deleted_error(collection, record_id, row[6])
        doc = await self._doc(collection, record_id)
        accessed = max(row[4], self._accessed.get((collection, record_id), row[4]))
        return self._snapshot(collection, record_id, doc, row, accessed_at=accessed)

    def _snapshot(
        self, collection: str, record_id: str, doc: Doc[Any], row: Any, accessed_at: float
    ) -> Record:
        return Record(
            collection=collection,
            id=record_id,
            fields=read_fields(doc),
            created_at=row[2],
            updated_at=row[3],
            accessed_at=accessed_at,
            pending=bool(row[5]),
            state_vector=doc.get_state(),
        )

    def _remember(self, key: tuple[str, str], doc: Doc[Any]) -> None:
        self._cache[key] = doc
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _doc(
        self,
        collection: str,
        record_id: str,
        *,
        conn: aiosqlite.Connection | None = None,
        remember: bool = True,
    ) -> Doc[Any]:
        """The record's current document (cached unless ``remember`` is false: a background
        pass over many records keeps the working set in memory). The record must exist."""
        key = (collection, record_id)
        doc = self._cache.get(key)
        if doc is not None:
            self._cache.move_to_end(key)
            return doc
        if conn is None and self._writer.in_flight(key):
            # Not in memory but being written: read it once it is on disk.
            await self._writer.settled(key)
            return await self._doc(collection, record_id)
        conn = conn or self.conn
        removals = self._removals
        row = await self._base(conn, collection, record_id)
        rows = await conn.execute_fetchall(
            "SELECT data, bundle FROM updates WHERE collection = ? AND id = ? ORDER BY rowid", key
        )
        updates = [u for data, bundle in rows for u in _unpack(data, bundle)]
        doc = Doc(client_id=row[1])
        try:
            apply_updates(doc, [bytes(row[0]), *updates] if row[0] else updates)
        except Exception as exc:  # pycrdt raises bare exceptions on undecodable updates
            raise CorruptStoreError(
                self.path, f"record {collection}/{record_id} holds an undecodable update: {exc}"
            ) from exc
        # Cache only committed state: outside a write transaction, or inside it when asked to
        # (``conn`` given), never while another coroutine's transaction is half done, nor
        # while a write of the record is in flight (this read may not have seen it).
        if (
            remember
            and self._editing != key
            and (conn is not self.conn or not self._in_transaction)
            and not self._writer.in_flight(key)
            and self._removals == removals
        ):
            self._remember(key, doc)
        return doc

    async def _confirmed_doc(
        self,
        collection: str,
        record_id: str,
        *,
        before_seq: int | None = None,
        include_seq: int | None = None,
    ) -> Doc[Any]:
        """A document of the confirmed state, optionally plus the pending updates with outbox
        seq < ``before_seq`` and the one with seq ``include_seq``."""
        row = await self._base(self.conn, collection, record_id)
        rows = await self.conn.execute_fetchall(
            "SELECT data, bundle, outbox_seq FROM updates WHERE collection = ? AND id = ?"
            " ORDER BY rowid",
            (collection, record_id),
        )
        doc: Doc[Any] = Doc()
        apply_updates(
            doc,
            ([bytes(row[0])] if row[0] else [])
            + [
                update
                for data, bundle, seq in rows
                if seq is None
                or (before_seq is not None and seq < before_seq)
                or (include_seq is not None and seq == include_seq)
                for update in _unpack(data, bundle)
            ],
        )
        return doc

    # ----------------------------------------------------------------- outbox actions

    async def _rework(
        self, seq: int, change: Callable[[Doc[Any], RecordEditor, Doc[Any], Doc[Any]], None]
    ) -> None:
        """Apply ``change`` to the record of errored entry ``seq`` as a local transaction and
        fold the resulting update into that entry, which is queued again.

        The record's later pending updates are folded in too: the change comes after them in
        the record's Yjs clock sequence, so the entry would otherwise depend on them while they
        depend on it (the relay refuses such an entry as ``blocked``). They stay entries of
        their own and go up after it, as a harmless re-send."""
        entry = await self.outbox.get(seq)
        if entry.status is not OutboxStatus.ERROR:
            raise OutboxError(f"outbox entry {seq} is {entry.status.value}, not in error")
        collection, record_id = entry.collection, entry.record_id
        async with self._edit_lock:
            before = await self._confirmed_doc(collection, record_id, before_seq=seq)
            after = await self._confirmed_doc(
                collection, record_id, before_seq=seq, include_seq=seq
            )
            current = await self._doc(collection, record_id)
            captured: list[bytes] = []
            subscription = current.observe(lambda e: captured.append(e.update))
            try:
                with current.transaction(origin=LOCAL_ORIGIN):
                    editor = RecordEditor(current, collection, self.lww_policy, self._stamp)
                    change(current, editor, before, after)
            except BaseException:
                self._cache.pop((collection, record_id), None)
                raise
            finally:
                current.unobserve(subscription)
            try:
                async with self._transaction() as conn:
                    merged = entry.update
                    if captured:
                        later = await conn.execute_fetchall(
                            "SELECT data FROM updates WHERE collection = ? AND id = ?"
                            " AND outbox_seq > ? ORDER BY outbox_seq",
                            (collection, record_id, seq),
                        )
                        merged = merge([entry.update, *(bytes(r[0]) for r in later), *captured])
                    await conn.execute(
                        "UPDATE updates SET data = ? WHERE outbox_seq = ?", (merged, seq)
                    )
                    await conn.execute(
                        "UPDATE outbox SET status = 'queued', error_code = NULL,"
                        " error_reason = NULL WHERE seq = ?",
                        (seq,),
                    )
                    await conn.execute(
                        "UPDATE records SET updated_at = ?, state_vector = ?"
                        " WHERE collection = ? AND id = ?",
                        (self._time(), current.get_state(), collection, record_id),
                    )
                    await self._save_clock(conn)
                    # Discarding a delete takes its tombstone back: the record is live again.
                    tombstone = layout_of(current).deletion()
                    await conn.execute(
                        "UPDATE records SET deleted = ? WHERE collection = ? AND id = ?",
                        (tombstone.encode() if tombstone else None, collection, record_id),
                    )
                    row = None if tombstone is not None else encode_fields(read_fields(current))
                    replaced = await on_thread(
                        conn, write_or_remove_row, self.projection, collection, record_id, row
                    )
                    waits = _first(await conn.execute_fetchall(_WAITS_SQL, (collection, record_id)))
            except BaseException:
                self._cache.pop((collection, record_id), None)
                raise
            deletion.set_deleted(self, (collection, record_id), tombstone)
            if replaced != row:
                self._changed(collection, record_id, "local", replaced, row)
            self.outbox._errors -= 1  # the entry is queued again
            self.outbox._waits_changed({(collection, record_id): (waits[0], waits[1])})


class Outbox:
    """The outbox of a :class:`LocalStore`: local edits waiting for the relay, in order.

    The numbers of entries waiting and in error are kept in memory (loaded when the store
    opens, then moved by each committed write), so counting costs no query. So is, per record
    with an entry in error, the first such entry and how many later entries of the record wait
    behind it (*held*: a later update of a record builds on the earlier ones, see
    :mod:`crdt_sync.outbox`).
    """

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        self._total = 0
        self._errors = 0
        # (collection, id) -> (seq of its first entry in error, entries after it not in error)
        self._waits: dict[tuple[str, str], tuple[int, int]] = {}
        self._listeners: list[Callable[[OutboxEntry], None]] = []

    async def _load_counts(self) -> None:
        row = _first(
            await self._store.conn.execute_fetchall(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'error') FROM outbox"
            )
        )
        self._total, self._errors = (int(row[0]), int(row[1])) if row else (0, 0)
        rows = await self._store.conn.execute_fetchall(_ALL_WAITS_SQL)
        self._waits = {(str(c), str(r)): (int(first), int(held)) for c, r, first, held in rows}

    def _waits_changed(self, waits: _Waits) -> None:
        for key, (first, held) in waits.items():
            if first is None:
                self._waits.pop(key, None)
            else:
                self._waits[key] = (first, held)

    def first_error(self, collection: str, record_id: str) -> int | None:
        """The seq of the record's first entry in error (committed, from memory), or None.
        The record's later entries wait until it is resolved or discarded."""
        waits = self._waits.get((collection, record_id))
        return None if waits is None else waits[0]

    def held(self) -> int:
        """How many entries (not in error) wait behind an earlier entry of their record in
        error, as committed, from memory (no query)."""
        self._store.conn  # noqa: B018 (raises InvalidState once closed)
        return sum(held for _, held in self._waits.values())

    def on_queued(self, callback: Callable[[OutboxEntry], None]) -> Callable[[], None]:
        """Call ``callback(entry)`` for each new entry once its edit is committed, in seq
        order (the sync run pushes it without listing the outbox). Returns an unsubscribe."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def _committed(
        self,
        done: asyncio.Future[int],
        collection: str,
        record_id: str,
        created_at: float,
        update: bytes,
    ) -> None:
        """An edit's write landed: count its entry and tell the listeners."""
        if done.cancelled() or done.exception() is not None:
            return
        self._total += 1
        waits = self._waits.get((collection, record_id))
        if waits is not None:  # a new entry comes after the record's entry in error
            self._waits[(collection, record_id)] = (waits[0], waits[1] + 1)
        entry = OutboxEntry(
            done.result(), collection, record_id, OutboxStatus.QUEUED, created_at, update
        )
        for callback in list(self._listeners):
            callback(entry)

    async def _select(self, where: str, params: Sequence[Any]) -> list[OutboxEntry]:
        async with self._store.conn.execute(
            "SELECT o.seq, o.collection, o.id, o.status, o.created_at, u.data, o.attempts,"
            " o.error_code, o.error_reason, (SELECT MIN(e.seq) FROM outbox e"
            " WHERE e.collection = o.collection AND e.id = o.id AND e.status = 'error'"
            " AND e.seq < o.seq) FROM outbox o JOIN updates u ON u.outbox_seq = o.seq"
            f" {where} ORDER BY o.seq",
            params,
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            OutboxEntry(
                r[0], r[1], r[2], OutboxStatus(r[3]), r[4], bytes(r[5]), r[6], r[7], r[8], r[9]
            )
            for r in rows
        ]

    async def entries(self, status: OutboxStatus | None = None) -> list[OutboxEntry]:
        """Entries in order, optionally only those with ``status``."""
        if status is None:
            return await self._select("", ())
        return await self._select("WHERE o.status = ?", (status.value,))

    async def pending(self) -> list[OutboxEntry]:
        """Every entry not yet acknowledged, in order (same as :meth:`list`)."""
        return await self.entries()

    async def get(self, seq: int) -> OutboxEntry:
        """One entry. Raises :class:`OutboxError` if there is none with that seq."""
        found = await self._select("WHERE o.seq = ?", (seq,))
        if not found:
            raise OutboxError(f"no outbox entry {seq} (already acknowledged or discarded?)")
        return found[0]

    async def for_record(self, collection: str, record_id: str) -> list[OutboxEntry]:
        """The entries of one record, in order."""
        return await self._select("WHERE o.collection = ? AND o.id = ?", (collection, record_id))

    async def count(self, status: OutboxStatus | None = None) -> int:
        """How many entries wait (optionally only those with ``status``)."""
        query = "SELECT COUNT(*) FROM outbox"
        params: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            params = (status.value,)
        async with self._store.conn.execute(query, params) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def counts(self) -> tuple[int, int]:
        """``(entries waiting, entries in error)``, committed ones (see :meth:`tally`)."""
        return self.tally()

    def tally(self) -> tuple[int, int]:
        """``(entries waiting, entries in error)`` as committed, from memory (no query)."""
        self._store.conn  # noqa: B018 (raises InvalidState once closed)
        return self._total, self._errors

    async def has_pending(self, collection: str, record_id: str) -> bool:
        """Whether the record has local changes the relay has not acknowledged."""
        async with self._store.conn.execute(
            "SELECT 1 FROM outbox WHERE collection = ? AND id = ? LIMIT 1",
            (collection, record_id),
        ) as cursor:
            return await cursor.fetchone() is not None

    def mark_uploading(self, seqs: Iterable[int], *, lazy: bool = False) -> asyncio.Future[None]:
        """Mark queued entries as sent (and count the attempt; the reason of an earlier
        ``blocked`` refusal is cleared).

        Queued at once in the group commit, in order with later writes; await the returned
        future to wait for the commit. ``lazy``: committed with the next write (or within
        10 ms) rather than in a commit of its own.
        """
        rows = [(s,) for s in seqs]

        def mark(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE outbox SET status = 'uploading', attempts = attempts + 1,"
                " error_code = NULL, error_reason = NULL WHERE seq = ? AND status = 'queued'",
                rows,
            )

        return self._store._submit(mark, lazy=lazy)

    def requeue_uploading(self, *, lazy: bool = False) -> asyncio.Future[None]:
        """Put entries whose upload was interrupted (connection lost) back in the queue.

        Queued at once in the group commit; await the returned future to wait for the commit.
        ``lazy``: as for :meth:`mark_uploading`.
        """

        def requeue(db: sqlite3.Connection) -> None:
            db.execute("UPDATE outbox SET status = 'queued' WHERE status = 'uploading'")

        return self._store._submit(requeue, lazy=lazy)

    async def mark_blocked(self, items: Iterable[tuple[int, str]]) -> None:
        """The relay refused these ``(seq, reason)`` entries as ``blocked`` (an earlier update
        of their record is missing there): they are queued again, not in error, with the
        relay's reason (``error_code`` ``blocked``) until their next upload."""
        rows = [(reason, seq) for seq, reason in items]

        def mark(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE outbox SET status = 'queued', error_code = 'blocked', error_reason = ?"
                " WHERE seq = ? AND status != 'error'",
                rows,
            )

        await self._store._write(mark)

    def acknowledge(self, seqs: Iterable[int], *, lazy: bool = False) -> asyncio.Future[int]:
        """The relay stored these entries: they leave the outbox and their updates become
        confirmed. Unknown seqs (already acknowledged) are ignored.

        Queued at once in the group commit; the returned future (await it to wait for the
        commit) gives how many entries left. ``lazy``: as for :meth:`mark_uploading` (a lost
        acknowledgement only means the entries are sent again).
        """
        pairs = [(s,) for s in seqs]

        def ack(db: sqlite3.Connection) -> tuple[int, int, _Waits]:
            touched = _records_waiting(db, [s for (s,) in pairs])
            db.executemany("UPDATE updates SET outbox_seq = NULL WHERE outbox_seq = ?", pairs)
            errors = db.executemany(
                "DELETE FROM outbox WHERE seq = ? AND status = 'error'", pairs
            ).rowcount
            removed = errors + db.executemany("DELETE FROM outbox WHERE seq = ?", pairs).rowcount
            return removed, errors, {key: _waits_of(db, key) for key in touched}

        written = self._store._submit(ack, lazy=lazy)
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def landed(done: asyncio.Future[tuple[int, int, _Waits]]) -> None:
            if done.cancelled():
                result.cancel()
            elif (exc := done.exception()) is not None:
                result.set_exception(exc)
                result.exception()  # nobody may await it: not an "unretrieved" error
            else:
                removed, errors, waits = done.result()
                self._total -= removed
                self._errors -= errors
                self._waits_changed(waits)
                result.set_result(removed)

        written.add_done_callback(landed)
        return result

    async def acknowledge_upto(self, seq: int) -> int:
        """Acknowledge every entry with seq <= ``seq`` that is not in error."""
        async with self._store.conn.execute(
            "SELECT seq FROM outbox WHERE seq <= ? AND status != 'error'", (seq,)
        ) as cursor:
            seqs = [r[0] async for r in cursor]
        return await self.acknowledge(seqs)

    async def mark_error(self, seq: int, code: str, reason: str) -> None:
        """The relay refused entry ``seq``: it stays in the outbox, in error, until resolved
        or discarded. Other entries are unaffected."""

        def mark(db: sqlite3.Connection) -> tuple[int, int, _Waits]:
            newly = db.execute(
                "UPDATE outbox SET status = 'error', error_code = ?, error_reason = ?"
                " WHERE seq = ? AND status != 'error'",
                (code, reason, seq),
            ).rowcount
            again = db.execute(
                "UPDATE outbox SET error_code = ?, error_reason = ? WHERE seq = ?",
                (code, reason, seq),
            ).rowcount
            return newly, again, {key: _waits_of(db, key) for key in _records_waiting(db, [seq])}

        newly, found, waits = await self._store._write(mark)
        self._errors += newly
        self._waits_changed(waits)
        if found == 0:
            raise OutboxError(f"no outbox entry {seq}")

    async def discard(self, seq: int) -> None:
        """Take back errored entry ``seq``: the record returns to its confirmed state plus its
        other pending updates. A compensating update is folded into the entry, which is
        queued again as a net no-op (see :mod:`crdt_sync.records.rollback`)."""

        def undo(current: Doc[Any], _: RecordEditor, before: Doc[Any], after: Doc[Any]) -> None:
            compensate(before, after, current)

        await self._store._rework(seq, undo)

    async def resolve(self, seq: int, fix: Callable[[RecordEditor], None]) -> None:
        """Fix errored entry ``seq``: ``fix(editor)`` edits the record, and that edit is folded
        into the entry, which is queued again (keeping its place in the order)."""
        await self._store._rework(seq, lambda _c, editor, _b, _a: fix(editor))


#: Per record: its first entry in error (None: none), and how many later ones are not in error
#: (held behind it).
_Waits = dict[tuple[str, str], tuple[int | None, int]]

_ALL_WAITS_SQL = (
    "SELECT e.collection, e.id, e.first, (SELECT COUNT(*) FROM outbox o"
    " WHERE o.collection = e.collection AND o.id = e.id AND o.seq > e.first"
    " AND o.status != 'error') FROM (SELECT collection, id, MIN(seq) AS first FROM outbox"
    " WHERE status = 'error' GROUP BY collection, id) e"
)
_WAITS_SQL = (
    "SELECT e.first, (SELECT COUNT(*) FROM outbox o WHERE o.collection = ?1 AND o.id = ?2"
    " AND o.seq > e.first AND o.status != 'error') FROM (SELECT MIN(seq) AS first FROM outbox"
    " WHERE collection = ?1 AND id = ?2 AND status = 'error') e"
)


def _waits_of(db: sqlite3.Connection, key: tuple[str, str]) -> tuple[int | None, int]:
    """``(first entry in error or None, entries held behind it)`` of one record."""
    first, held = db.execute(_WAITS_SQL, key).fetchone()
    return first, held


def _records_waiting(db: sqlite3.Connection, seqs: Sequence[int]) -> set[tuple[str, str]]:
    """The records of those entries that are in error or held behind an entry in error: their
    waits change when these entries change."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(seqs, 500):
        marks = ",".join("?" for _ in chunk)
        rows = db.execute(
            "SELECT DISTINCT o.collection, o.id FROM outbox o"
            f" WHERE o.seq IN ({marks}) AND (o.status = 'error' OR EXISTS (SELECT 1 FROM"
            " outbox e WHERE e.collection = o.collection AND e.id = o.id"
            " AND e.status = 'error' AND e.seq < o.seq))",
            chunk,
        )
        found.update((str(c), str(r)) for c, r in rows)
    return found


async def _prepare(conn: aiosqlite.Connection, path: Path) -> None:
    """Check that the file is ours and healthy, set pragmas, run migrations."""
    try:
        async with conn.execute("PRAGMA quick_check") as cursor:
            check = list(await cursor.fetchall())
        if [r[0] for r in check] != ["ok"]:
            raise CorruptStoreError(path, f"integrity check failed: {check[0][0]}")
        async with conn.execute("PRAGMA application_id") as cursor:
            app_id = (await cursor.fetchone() or (0,))[0]
        async with conn.execute("PRAGMA user_version") as cursor:
            version = (await cursor.fetchone() or (0,))[0]
        async with conn.execute("SELECT COUNT(*) FROM sqlite_master") as cursor:
            objects = (await cursor.fetchone() or (0,))[0]
    except sqlite3.DatabaseError as exc:
        raise CorruptStoreError(path, f"not a crdt-sync store or damaged ({exc})") from exc
    if app_id != APPLICATION_ID and (objects or version):
        raise CorruptStoreError(path, "not a crdt-sync store (another application's database)")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(path, version, SCHEMA_VERSION)
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    # Checkpoints run in the background (crdt_sync.store.checkpoints), not inside a commit.
    await conn.execute("PRAGMA wal_autocheckpoint = 0")
    await conn.execute("PRAGMA busy_timeout = 5000")
    while version < SCHEMA_VERSION:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            version += 1
            await conn.execute(f"PRAGMA user_version = {version}")
            await conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise


def _unsynced_in_file(path: Path) -> tuple[int, int]:
    """``(outbox entries, records)`` of a closed store file (0, 0 if there is no file)."""
    if not path.exists():
        return 0, 0
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT collection, id"
            " FROM outbox)) FROM outbox"
        ).fetchone()
    except sqlite3.Error as exc:
        raise StoreError(path, f"cannot count unsynced changes: {exc}") from exc
    finally:
        db.close()
    return int(row[0]), int(row[1])


def _apply_spec(db: sqlite3.Connection, spec: ProjectionSpec) -> None:
    """Make the file's projection indexes and full-text rows match ``spec`` (one transaction)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        spec.apply(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


async def _meta(conn: aiosqlite.Connection, key: str) -> str | None:
    async with conn.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row else None


_T = TypeVar("_T")

#: Record ids per ``IN (...)`` query (SQLite's default limit is 32,766 parameters).
_KEYS_PER_QUERY = 400

#: Records per conflict-scan step (the scan stops between steps when a write comes in).
_SCAN_BATCH = 50

#: Seconds without remote updates before NULL state vectors are recomputed in the background.
_REFRESH_VECTORS_AFTER = 0.1

#: Records with at most this many updates get their state vector from merged bytes
#: (merge_updates is quadratic: long logs go through a document instead).
_MERGE_FOR_STATE_VECTOR = 32

_SAVE_CLOCK_SQL = (
    "INSERT INTO meta (key, value) VALUES ('hlc', ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_SET_SETTING_SQL = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_ACCESSED_SQL = (
    "UPDATE records SET accessed_at = max(accessed_at, ?) WHERE collection = ? AND id = ?"
)
_PROJECTION_ACCESSED_SQL = (
    "UPDATE projection SET accessed_at = max(accessed_at, ?) WHERE collection = ? AND id = ?"
)


def _accessed_rows(accessed: dict[tuple[str, str], float]) -> list[tuple[Any, ...]]:
    return [(t, c, r) for (c, r), t in accessed.items()]


def _flush_accessed(db: sqlite3.Connection, accessed: dict[tuple[str, str], float]) -> None:
    if accessed:
        rows = _accessed_rows(accessed)
        db.executemany(_ACCESSED_SQL, rows)
        db.executemany(_PROJECTION_ACCESSED_SQL, rows)


def _bundle(updates: Sequence[bytes]) -> bytes:
    return b"".join(write_var_bytes(u) for u in updates)


def _unpack(data: bytes, bundle: int) -> list[bytes]:
    """The updates of one ``updates`` row (a bundle holds several, length-prefixed)."""
    if not bundle:
        return [bytes(data)]
    reader = Reader(bytes(data))
    parts = []
    while not reader.done:
        parts.append(reader.var_bytes())
    return parts


def _setting_keys(settings: Iterable[str] | None) -> list[tuple[str, str]]:
    """Group-commit keys standing for settings (no record has an empty collection name)."""
    return [("", name) for name in settings or ()]


def _read_state_vectors(
    db: sqlite3.Connection, collection: str, ids: Sequence[str]
) -> tuple[dict[str, bytes], dict[str, tuple[list[bytes], int]]]:
    """On the SQLite thread: ``(known state vectors, {id: (all updates, client id)})`` for
    the records of ``ids`` that exist; the second part for those whose column is NULL."""
    marks = ",".join("?" * len(ids))
    known: dict[str, bytes] = {}
    stale: dict[str, tuple[list[bytes], int]] = {}
    for record_id, vector, client_id in db.execute(
        f"SELECT id, state_vector, client_id FROM records WHERE collection = ? AND id IN ({marks})",
        (collection, *ids),
    ):
        if vector is not None:
            known[record_id] = bytes(vector)
        else:
            stale[record_id] = ([], client_id)
    if stale:
        marks = ",".join("?" * len(stale))
        for record_id, confirmed in db.execute(
            f"SELECT id, confirmed FROM records WHERE collection = ? AND id IN ({marks})",
            (collection, *stale),
        ):
            if confirmed:
                stale[record_id][0].append(bytes(confirmed))
        for record_id, data, bundle in db.execute(
            f"SELECT id, data, bundle FROM updates WHERE collection = ? AND id IN ({marks})"
            " ORDER BY rowid",
            (collection, *stale),
        ):
            stale[record_id][0].extend(_unpack(data, bundle))
    return known, stale


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _state_vector_of(updates: Sequence[bytes], client_id: int) -> bytes:
    """The state vector of a record made of ``updates`` (its snapshot first)."""
    if not updates:
        return b"\x00"
    if len(updates) <= _MERGE_FOR_STATE_VECTOR:
        # Byte level, no document: what integrates into an empty doc from all of the
        # record's updates is exactly what the record's doc holds.
        return get_state(updates[0] if len(updates) == 1 else merge_updates(*updates))
    doc: Doc[Any] = Doc(client_id=client_id)
    apply_updates(doc, updates)
    return doc.get_state()


def _order(order_by: str | Sequence[str]) -> tuple[str, ...]:
    return (order_by,) if isinstance(order_by, str) else tuple(order_by)


def _first(rows: Iterable[Any]) -> Any:
    for row in rows:
        return row
    return None


def _new_client_id() -> int:
    # Yjs (JavaScript) draws 32-bit client ids; stay in that range for interop.
    return random.getrandbits(32)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


_CONFLICT_COLUMNS = (
    "rowid, collection, id, conflict_key, path, lost_kind, lost_value, lost_ts, won_kind,"
    " won_value, won_ts, detected_at"
)


def _conflict_columns(c: Conflict) -> tuple[Any, ...]:
    """``conflict_key .. won_ts`` of a conflict_log row."""
    return (
        c.key,
        json.dumps(list(c.slot), ensure_ascii=False),
        c.lost.kind.value,
        _json(c.lost.value),
        c.lost.ts.encode() if c.lost.ts else None,
        c.won.kind.value,
        _json(c.won.value),
        c.won.ts.encode() if c.won.ts else None,
    )


def _log_conflicts(
    db: sqlite3.Connection, rows: Iterable[tuple[Any, ...]], limit: int
) -> list[ConflictLogEntry]:
    """Insert ``conflict_log`` rows (``collection, id, conflict key .. detected_at``), each
    once, keeping the newest ``limit``; return the entries new to the log. On the SQLite
    thread, inside a write."""
    new = []
    for row in rows:
        cursor = db.execute(
            "INSERT OR IGNORE INTO conflict_log (collection, id, conflict_key, path,"
            " lost_kind, lost_value, lost_ts, won_kind, won_value, won_ts, detected_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        if cursor.rowcount:
            new.append(_conflict_entry((cursor.lastrowid, *row)))
    if new:
        db.execute(
            "DELETE FROM conflict_log WHERE rowid <= (SELECT MAX(rowid) FROM conflict_log) - ?",
            (limit,),
        )
    return new


def _conflict_entry(row: Sequence[Any]) -> ConflictLogEntry:
    def ts(raw: str | None) -> Timestamp | None:
        return Timestamp.decode(raw) if raw else None

    def value(raw: str | None) -> Any:
        return json.loads(raw) if raw is not None else None

    return ConflictLogEntry(
        seq=int(row[0]),
        collection=row[1],
        record_id=row[2],
        key=row[3],
        path=tuple(json.loads(row[4])),
        lost_kind=Kind(row[5]),
        lost_value=value(row[6]),
        lost_ts=ts(row[7]),
        won_kind=Kind(row[8]),
        won_value=value(row[9]),
        won_ts=ts(row[10]),
        detected_at=row[11],
    )
