"""The embedded default :class:`~crdt_sync.server.storage.base.RelayStorage`: one SQLite file.

:class:`SQLiteRelayStorage` keeps the relay's data in ``relay.sqlite3`` in the data directory,
in WAL mode, through aiosqlite.

What is stored, per tenant:

- a change sequence ``seq`` that increases by one for every accepted update (the cursor
  replicas send back in ``sub``);
- per record ``(collection, record_id)``: a compacted snapshot (one Yjs update) plus a log of
  the updates accepted since; when a record's log reaches ``compact_every`` entries it is
  merged at the byte level by :func:`crdt_sync.yjs.merge.merge` (at most 64 updates per
  ``pycrdt.merge_updates`` call, level by level, so a log that grew long under load never
  costs the quadratic huge merge nor holds the GIL for long; a ``Doc`` is not used because
  encoding a ``Doc`` drops updates still waiting for their dependencies, which would lose
  data). Compaction is never part of a group
  commit (so it never delays an ack): a background task reads snapshot and log and merges them
  on a connection of its own, then stores the new snapshot and deletes the merged log rows
  (``seq <= upto``) in a short transaction of its own between group commits. Log rows written
  meanwhile have higher seqs and stay. A crash at any point leaves either the old snapshot and
  the whole log or the new snapshot and the newer log rows: both hold every update;
- per deleted record, its tombstone and when it was first stored (``tombstones``), and per
  purged record its tombstone and the change seq of its purge (``purged``; docs/relay.md,
  "Deletion and purge");
- a change table with one row per (record, origin replica) holding the newest ``seq`` that
  replica wrote to that record: "records changed since cursor C by a replica other than R" is
  one indexed query. :meth:`SQLiteRelayStorage.forget_origins` collapses old rows into one row
  per record with the empty origin ``""``, which matches every replica: a cursor older than
  the forgotten history then gets those records too (conservative, never a missed change).

Writes go through ONE writer task doing group commit: the queued writes of all connections
become one transaction, then every waiting caller is resolved. A write's future resolves only
after the commit, so the relay acknowledges only what is durably stored. ``synchronous=NORMAL``
(default) survives a killed process; ``durable=True`` sets ``synchronous=FULL`` (survives power
loss), and group commit keeps the throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from crdt_sync.errors import InvalidState, StoreError
from crdt_sync.records.layout import tombstones_in
from crdt_sync.store.checkpoints import Checkpointer
from crdt_sync.store.sqlite_thread import on_thread
from crdt_sync.subscriptions import Selection
from crdt_sync.yjs.merge import merge

from ..record_fields import FieldReader
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
from .field_index import (
    FIELDS_SCHEMA,
    backfill_fields_in_thread,
    members_query,
    read_fields_in_thread,
    rewrite_fields_in_thread,
)
from .state_cache import DEFAULT_STATE_CACHE_BYTES, StateCache

log = logging.getLogger(__name__)

#: Default ``forget_origins_after`` (``crdt-sync serve --forget-origins-after``).
DEFAULT_FORGET_ORIGINS_AFTER = 1_000_000
_FORGET_SEQS = 10_000  # seqs per forget_origins transaction (short: commits wait for it)

#: 2: record_fields (server/storage/field_index.py); 3: tombstones and purged (deletion,
#: docs/relay.md "Deletion and purge").
SCHEMA_VERSION = 3
DB_FILENAME = "relay.sqlite3"

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    tenant TEXT NOT NULL, collection TEXT NOT NULL, record_id TEXT NOT NULL,
    state BLOB NOT NULL, upto INTEGER NOT NULL,
    PRIMARY KEY (tenant, collection, record_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL, collection TEXT NOT NULL, record_id TEXT NOT NULL,
    seq INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_record ON log (tenant, collection, record_id, seq);
CREATE TABLE IF NOT EXISTS changes (
    tenant TEXT NOT NULL, collection TEXT NOT NULL, record_id TEXT NOT NULL,
    origin TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, collection, record_id, origin)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS changes_by_seq ON changes (tenant, seq);
CREATE TABLE IF NOT EXISTS tombstones (
    tenant TEXT NOT NULL, collection TEXT NOT NULL, record_id TEXT NOT NULL,
    tombstone TEXT NOT NULL, deleted_at REAL NOT NULL,
    PRIMARY KEY (tenant, collection, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstones_by_time ON tombstones (deleted_at);
CREATE TABLE IF NOT EXISTS purged (
    tenant TEXT NOT NULL, collection TEXT NOT NULL, record_id TEXT NOT NULL,
    tombstone TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, collection, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS purged_by_seq ON purged (tenant, seq);
"""
    + FIELDS_SCHEMA
)

#: Tables whose rows belong to one record (keyed by tenant, collection, record_id): a purge
#: deletes from each. A table added for records (e.g. queryable field values) joins this list.
RECORD_TABLES = ("snapshots", "log", "changes", "tombstones", "record_fields")
_PURGE_BATCH = 500  # records per purge transaction (short: commits wait for it)

_PREMERGE_SLICE = 16  # cached states merged per loop iteration after commits
_PREMERGE_MAX_BYTES = 16 * 1024  # larger ones are merged when read
_KEYS_PER_QUERY = 400  # (collection, record_id) pairs per IN (VALUES ...) query


def states_query(count: int) -> str:
    """SQL reading snapshot and log rows of ``count`` records of one tenant, in order.

    Parameters: ``count`` (collection, record_id) pairs, then the tenant twice. ``k CROSS
    JOIN`` makes SQLite look each wanted key up in the indexes (left to itself, it scans the
    tenant's whole log once per key: 30x slower for 1,000 records).
    """
    values = ",".join("(?,?)" for _ in range(count))
    return (
        f"WITH k(c, r) AS (VALUES {values}) "
        "SELECT s.collection, s.record_id, 0, 0, s.state FROM k CROSS JOIN snapshots s "
        "ON s.tenant = ? AND s.collection = k.c AND s.record_id = k.r "
        "UNION ALL "
        "SELECT l.collection, l.record_id, 1, l.seq, l.data FROM k CROSS JOIN log l "
        "ON l.tenant = ? AND l.collection = k.c AND l.record_id = k.r "
        "ORDER BY 1, 2, 3, 4"
    )


@dataclass(slots=True)
class _WriteRequest:
    tenant: str
    origin: str
    items: Sequence[Row]
    future: asyncio.Future[list[int]]


@dataclass(slots=True)
class StorageStats:
    """Counters the relay exports as metrics."""

    commits: int = 0
    updates: int = 0
    compactions: int = 0
    #: Records whose compaction failed, plus compaction rounds that failed as a whole (each
    #: one is logged). Failed WAL checkpoints are counted by the storage's Checkpointer.
    compaction_failures: int = 0


class SQLiteRelayStorage(RelayStorage):
    """:class:`~crdt_sync.server.storage.base.RelayStorage` on one SQLite file (WAL) through
    aiosqlite.

    Args:
        directory: the data directory (created if missing); the file is ``relay.sqlite3``.
        durable: ``synchronous=FULL`` (commits survive power loss) instead of ``NORMAL``
            (commits survive a killed process).
        compact_every: log length at which a record's log is merged into its snapshot.
        max_batch: most updates the writer puts in one transaction.
        checkpoint_every: commits between WAL checkpoints. Automatic checkpoints are off on
            the writer connection; a third connection checkpoints (PASSIVE) in the background
            so that no commit (and no ack) waits for one.
        compact_batch: most records merged by one compaction transaction.
        state_cache_bytes: memory budget of the merged states kept for :meth:`get_states`
            (:class:`StateCache`); 0 disables it.
        background_compaction: compact due records (and forget due origins) in a background
            task (default). When false, only :meth:`compact_pending` and
            :meth:`forget_due_origins` do it (tests use them to control timing).
        forget_origins_after: how many changes of a tenant a change row keeps its origin
            (the replica that made it) before :meth:`forget_origins` collapses it, in the
            background; 0 never. A replica offline for longer then gets its own older changes
            reported in its catch-up too (a few extra diffs), and the ``changes`` table stays
            about one row per record instead of one per record and replica that ever wrote it.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        durable: bool = False,
        compact_every: int = 64,
        max_batch: int = 4096,
        checkpoint_every: int = 256,
        compact_batch: int = 16,
        background_compaction: bool = True,
        state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
        forget_origins_after: int = DEFAULT_FORGET_ORIGINS_AFTER,
    ) -> None:
        self.states = StateCache(state_cache_bytes)
        self._premerge_scheduled = False
        self.path = Path(directory) / DB_FILENAME
        self.durable = durable
        self.compact_every = compact_every
        self.compact_batch = compact_batch
        self.background_compaction = background_compaction
        self._compact_due: dict[tuple[str, str, str], None] = {}  # ordered set
        self._compact_wakeup = asyncio.Event()
        self._compact_lock = asyncio.Lock()  # one compaction round at a time
        self._compactor_task: asyncio.Task[None] | None = None
        self._compacted = asyncio.Condition()  # notified after every compaction round
        self.forget_origins_after = forget_origins_after
        self._forgotten: dict[str, int] = {}  # tenant -> origins forgotten below this seq
        self._forget_due: dict[str, int] = {}  # tenant -> forget below this seq, when idle
        self.max_batch = max_batch
        self.checkpoint_every = checkpoint_every
        self._background_db: aiosqlite.Connection | None = None  # compaction + checkpoints
        self._checkpointer: Checkpointer | None = None
        self.stats = StorageStats()
        self._writer_db: aiosqlite.Connection | None = None
        self._reader_db: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_WriteRequest | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False
        self._heads: dict[str, int] = {}  # committed seq per tenant (loaded lazily)
        self._log_lengths: dict[tuple[str, str, str], int] = {}
        self._lock = asyncio.Lock()  # one transaction at a time on the writer connection
        # The field index's decoder, used on the writer connection's thread only.
        self._field_reader = FieldReader()

    async def open(self) -> None:
        """Open the database, create the schema, start the writer task."""
        if self._writer_db is not None:
            raise InvalidState("storage already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer_db = await aiosqlite.connect(self.path, isolation_level=None)
            db = self._writer_db
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            await db.execute("PRAGMA wal_autocheckpoint=0")
            await db.executescript(_SCHEMA)
            async with db.execute("SELECT value FROM meta WHERE key='schema'") as cursor:
                row = await cursor.fetchone()
            if row is None:
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) in (1, 2):
                # The tables are created above (IF NOT EXISTS); their rows are filled here,
                # once. Schema 1 had no field index: fill it from every record's state.
                if int(row[0]) == 1:
                    await on_thread(db, backfill_fields_in_thread, states_query)
                # Schemas 1 and 2 had no tombstone table: find the tombstones already stored
                # (their TTL counts from now).
                await on_thread(db, backfill_tombstones_in_thread, time.time())
                await db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(self.path, f"relay schema {row[0]} is not {SCHEMA_VERSION}")
            async with db.execute("SELECT tenant, seq FROM tenants") as cursor:
                self._heads = {str(t): int(s) async for t, s in cursor}
            # Log lengths survive a restart: long logs are compacted soon, not only after
            # another compact_every writes.
            async with db.execute(
                "SELECT tenant, collection, record_id, COUNT(*) FROM log "
                "GROUP BY tenant, collection, record_id"
            ) as cursor:
                async for tenant, collection, record_id, count in cursor:
                    key = (str(tenant), str(collection), str(record_id))
                    if int(count) >= self.compact_every:
                        self._compact_due[key] = None
                    else:
                        self._log_lengths[key] = int(count)
            self._reader_db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader_db.execute("PRAGMA query_only=1")
            self._background_db = await aiosqlite.connect(self.path, isolation_level=None)
            self._checkpointer = Checkpointer(
                self.path, self.checkpoint_every, connection=self._background_db
            )
        except aiosqlite.DatabaseError as exc:
            await self._close_connections()
            raise StoreError(self.path, f"cannot open relay storage: {exc}") from exc
        self._writer_task = asyncio.create_task(self._writer(), name="relay-storage-writer")
        if self.background_compaction:
            self._compactor_task = asyncio.create_task(
                self._compactor(), name="relay-storage-compactor"
            )
            if self._compact_due:
                self._compact_wakeup.set()

    async def close(self) -> None:
        """Commit what is queued, then stop the writer and close both connections."""
        if self._closing:
            if self._writer_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._writer_task)
            return
        self._closing = True
        if self._writer_task is not None:
            self._queue.put_nowait(None)
            await self._writer_task
        if self._compactor_task is not None:
            self._compact_wakeup.set()  # it stops after its current round (if any)
            with contextlib.suppress(Exception):
                await self._compactor_task
        await self._close_connections()

    async def _close_connections(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.close()
        for db in (self._reader_db, self._background_db, self._writer_db):
            if db is not None:
                await db.close()  # the last connection to close checkpoints the WAL
        self._reader_db = self._writer_db = self._background_db = None

    def submit(self, tenant: str, origin: str, items: Sequence[Row]) -> asyncio.Future[list[int]]:
        """See :meth:`RelayStorage.submit`."""
        if self._closing or self._writer_task is None:
            raise InvalidState("relay storage is closed")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if not items:
            future.set_result([])
        else:
            self._queue.put_nowait(_WriteRequest(tenant, origin, list(items), future))
        return future

    def wal_bytes(self) -> int:
        """Size of the write-ahead log file now (0 if there is none). Checkpoints keep it
        small; steady growth means they cannot complete."""
        try:
            return os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return 0

    @property
    def healthy(self) -> bool:
        """True while the storage is open and its writer task is running."""
        task = self._writer_task
        return task is not None and not task.done() and not self._closing

    def numbers(self) -> StorageNumbers:
        """See :meth:`RelayStorage.numbers`."""
        stats = self.stats
        return StorageNumbers(
            stats.commits,
            stats.compactions,
            stats.compaction_failures,
            0 if self._checkpointer is None else self._checkpointer.failures,
            self.wal_bytes(),
        )

    async def head(self, tenant: str) -> int:
        """See :meth:`RelayStorage.head`."""
        return self._heads.get(tenant, 0)

    async def get_states(self, tenant: str, keys: Iterable[RecordKey]) -> dict[RecordKey, bytes]:
        """See :meth:`RelayStorage.get_states`.

        Snapshot and log are read by one statement (one consistent read snapshot), so a
        compaction committing meanwhile cannot make an update vanish from the answer.
        """
        db = self._require(self._reader_db)
        cache = self.states
        found: dict[RecordKey, bytes] = {}
        missing: list[RecordKey] = []
        for key in dict.fromkeys(keys):
            state = cache.get((tenant, *key))
            if state is None:
                missing.append(key)
            else:
                found[key] = state
        if not missing:
            return found
        token = cache.read_started()
        read: dict[tuple[str, str, str], bytes] = {}
        try:
            # Every chunk's query in one hop to the reader's thread.
            rows = await on_thread(db, _read_states_in_thread, tenant, missing)
            parts: dict[RecordKey, list[bytes]] = {}
            for collection, record_id, data in rows:
                parts.setdefault((collection, record_id), []).append(data)
            for key, updates in parts.items():
                state = merge(updates)
                found[key] = state
                read[(tenant, *key)] = state
        finally:
            cache.read_done(token, read)
        return found

    async def changed_since(
        self,
        tenant: str,
        collections: Iterable[str],
        cursor: int | None,
        exclude_origin: str | None,
    ) -> list[RecordKey]:
        """See :meth:`RelayStorage.changed_since`."""
        db = self._require(self._reader_db)
        names = sorted(set(collections))
        if not names:
            return []
        marks = ",".join("?" for _ in names)
        if cursor is None:
            sql = (
                "SELECT DISTINCT collection, record_id FROM changes "
                f"WHERE tenant = ? AND collection IN ({marks}) ORDER BY collection, record_id"
            )
            params: list[object] = [tenant, *names]
        elif exclude_origin is None:
            sql = (
                "SELECT DISTINCT collection, record_id FROM changes "
                f"WHERE tenant = ? AND seq > ? AND collection IN ({marks}) "
                "ORDER BY collection, record_id"
            )
            params = [tenant, cursor, *names]
        else:
            sql = (
                "SELECT DISTINCT collection, record_id FROM changes "
                f"WHERE tenant = ? AND seq > ? AND origin != ? AND collection IN ({marks}) "
                "ORDER BY collection, record_id"
            )
            params = [tenant, cursor, exclude_origin, *names]
        rows = await db.execute_fetchall(sql, params)
        return [(str(c), str(r)) for c, r in rows]

    async def members(self, tenant: str, selection: Selection) -> set[str]:
        """See :meth:`RelayStorage.members`: one indexed query (:func:`members_query`)."""
        db = self._require(self._reader_db)
        sql, params = members_query(tenant, selection)
        rows = await db.execute_fetchall(sql, params)
        return {str(r) for (r,) in rows if r is not None}

    async def fields(
        self, tenant: str, keys: Iterable[RecordKey]
    ) -> dict[RecordKey, IndexedFields]:
        """See :meth:`RelayStorage.fields`."""
        db = self._require(self._reader_db)
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        return await on_thread(db, read_fields_in_thread, tenant, wanted)

    async def forget_origins(self, tenant: str, before_seq: int) -> int:
        """Collapse change rows older than ``before_seq`` into one origin-less row per record.

        Afterwards a replica whose cursor predates ``before_seq`` also gets records it changed
        itself (conservative: a few extra diffs, never a missed change). Runs in short
        transactions of :data:`_FORGET_SEQS` seqs each, between group commits.

        Returns:
            The number of rows removed.
        """
        removed = 0
        start = self._forgotten.get(tenant, 0)
        for low in range(start, before_seq, _FORGET_SEQS):
            if self._closing:
                break  # a shutdown does not wait for the rest (it is resumed later)
            high = min(low + _FORGET_SEQS, before_seq)
            db = self._require(self._writer_db)
            # The writer's connection, outside its batches: serialize with them.
            async with self._lock:
                removed += await on_thread(db, _forget_in_thread, tenant, low, high)
            self._forgotten[tenant] = max(self._forgotten.get(tenant, 0), high)
        return removed

    async def forget_due_origins(self) -> int:
        """Forget the origins that ``forget_origins_after`` made due; the background task
        does this by itself. Returns the number of rows removed."""
        removed = 0
        while self._forget_due and not self._closing:
            tenant, before = next(iter(self._forget_due.items()))
            del self._forget_due[tenant]
            removed += await self.forget_origins(tenant, before)
        return removed

    async def purge_tombstones(self, deleted_before: float) -> list[Purged]:
        """See :meth:`RelayStorage.purge_tombstones`. Runs in short transactions of
        :data:`_PURGE_BATCH` records between group commits, never during a compaction round."""
        done: list[Purged] = []
        while not self._closing:
            db = self._require(self._writer_db)
            async with self._compact_lock, self._lock:
                heads = dict(self._heads)
                batch = await on_thread(db, _purge_in_thread, deleted_before, heads)
                self._heads = heads
            self._field_reader.forget((p.tenant, p.collection, p.record_id) for p in batch)
            for purged in batch:
                key = (purged.tenant, purged.collection, purged.record_id)
                self.states.removed(key)
                self._log_lengths.pop(key, None)
                self._compact_due.pop(key, None)
            done.extend(batch)
            if len(batch) < _PURGE_BATCH:
                break
        return done

    async def removed_since(
        self, tenant: str, collections: Iterable[str], cursor: int
    ) -> list[tuple[str, str, str]]:
        """See :meth:`RelayStorage.removed_since`."""
        db = self._require(self._reader_db)
        names = sorted(set(collections))
        if not names:
            return []
        marks = ",".join("?" for _ in names)
        rows = await db.execute_fetchall(
            "SELECT collection, record_id, tombstone FROM purged "
            f"WHERE tenant = ? AND seq > ? AND collection IN ({marks}) "
            "ORDER BY collection, record_id",
            [tenant, cursor, *names],
        )
        return [(str(c), str(r), str(t)) for c, r, t in rows]

    async def purged(self, tenant: str, keys: Iterable[RecordKey]) -> dict[RecordKey, str]:
        """See :meth:`RelayStorage.purged`."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        db = self._require(self._reader_db)
        found: dict[RecordKey, str] = {}
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start : start + _KEYS_PER_QUERY]
            values = ",".join("(?,?)" for _ in chunk)
            rows = await db.execute_fetchall(
                f"WITH k(c, r) AS (VALUES {values}) SELECT p.collection, p.record_id, "
                "p.tombstone FROM k CROSS JOIN purged p ON p.tenant = ? "
                "AND p.collection = k.c AND p.record_id = k.r",
                [*(v for key in chunk for v in key), tenant],
            )
            found.update({(str(c), str(r)): str(t) for c, r, t in rows})
        return found

    def _require(self, db: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if db is None:
            raise InvalidState("relay storage is not open")
        return db

    # -- the writer ------------------------------------------------------------------------

    async def _writer(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            count = len(first.items)
            while count < self.max_batch:
                try:
                    request = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if request is None:
                    stop = True
                    break
                batch.append(request)
                count += len(request.items)
            async with self._lock:
                try:
                    await self._commit(batch)
                except Exception as exc:  # a bug: never leave a writer waiting forever
                    log.exception("relay storage writer failed on a batch")
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(StoreError(self.path, str(exc)))
        # Anything queued after the stop marker is refused, never silently dropped.
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if request is not None and not request.future.done():
                request.future.set_exception(InvalidState("relay storage is closed"))

    async def _commit(self, batch: list[_WriteRequest]) -> None:
        while batch:
            purged = await self._commit_once(batch)
            if not purged:
                return
            # Records purged since their writes were accepted: those writes fail as a whole,
            # the others commit (docs/relay.md, "Deletion and purge").
            kept = []
            for request in batch:
                hit = sorted(
                    (c, r) for c, r, _ in request.items if (request.tenant, c, r) in purged
                )
                if not hit:
                    kept.append(request)
                elif not request.future.done():
                    request.future.set_exception(
                        RecordPurged(self.path, f"records {hit} were purged (deleted)")
                    )
            batch = kept

    async def _commit_once(self, batch: list[_WriteRequest]) -> set[tuple[str, str, str]]:
        """Commit ``batch``; or, if it writes to purged records, nothing: returns those."""
        db = self._require(self._writer_db)
        heads = dict(self._heads)
        log_rows: list[tuple[str, str, str, int, bytes]] = []
        change_rows: dict[tuple[str, str, str, str], int] = {}
        results: list[list[int]] = []
        touched: dict[tuple[str, str, str], int] = {}
        for request in batch:
            seqs = []
            head = heads.get(request.tenant, 0)
            for collection, record_id, update in request.items:
                head += 1
                seqs.append(head)
                log_rows.append((request.tenant, collection, record_id, head, update))
                change_rows[(request.tenant, collection, record_id, request.origin)] = head
                key = (request.tenant, collection, record_id)
                touched[key] = touched.get(key, 0) + 1
            heads[request.tenant] = head
            results.append(seqs)
        new_tenants = [(t, s) for t, s in heads.items() if self._heads.get(t) != s]
        now = time.time()
        tombstone_rows = [
            (tenant, collection, record_id, max(found), now)
            for tenant, collection, record_id, _seq, update in log_rows
            if (found := tombstones_in(update))
        ]
        lengths = dict(self._log_lengths)
        due = []
        for key, added in touched.items():
            lengths[key] = lengths.get(key, 0) + added
            if lengths[key] >= self.compact_every:
                due.append(key)
                lengths[key] = 0
        try:
            # One hop to aiosqlite's thread for the whole transaction (on_thread).
            # Records not cached are probed in the same transaction: those that did not exist
            # before it are cached from their updates (their whole state), so the first
            # catch-up that reads a new record does not go to the database.
            cache = self.states
            probe = [key for key in touched if key not in cache] if cache.max_bytes else []
            # Each touched record's committed updates before this write (from the cache when
            # it has them, else read in the transaction) and the write's own, for the field
            # index rewritten in the same transaction.
            new_updates: dict[tuple[str, str, str], list[bytes]] = {}
            for tenant, collection, record_id, _seq, update in log_rows:
                new_updates.setdefault((tenant, collection, record_id), []).append(update)
            reindex = [(key, cache.parts(key), updates) for key, updates in new_updates.items()]
            existing, fields, states, purged = await on_thread(
                db,
                _commit_in_thread,
                log_rows,
                [(*key, seq) for key, seq in change_rows.items()],
                new_tenants,
                probe,
                tombstone_rows,
                list(touched),
                reindex,
                self._field_reader,
            )
        except Exception as exc:
            log.exception("relay storage commit failed (%d writes)", len(batch))
            error = StoreError(self.path, f"commit failed: {exc}")
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return set()
        if purged:
            return purged
        self._heads = heads
        self._log_lengths = lengths
        created: dict[tuple[str, str, str], list[bytes]] = {
            key: [] for key in probe if key not in existing
        }
        committed = cache.committed
        for tenant, collection, record_id, _seq, update in log_rows:
            key = (tenant, collection, record_id)
            new = created.get(key)
            if new is None:
                committed(key, update)
            else:
                new.append(update)
        for key, updates in created.items():
            cache.created(key, updates)
        if cache.unmerged and not self._premerge_scheduled:
            self._premerge_scheduled = True
            asyncio.get_running_loop().call_soon(self._premerge)
        self.stats.commits += 1
        self.stats.updates += len(log_rows)
        for request, seqs in zip(batch, results, strict=True):
            if not request.future.done():
                t = request.tenant
                request_fields = {(c, r): fields[(t, c, r)] for c, r, _ in request.items}
                request_states = {
                    (c, r): states[(t, c, r)] for c, r, _ in request.items if (t, c, r) in states
                }
                request.future.set_result(Committed(seqs, request_fields, request_states))
        if due:
            self._compact_due.update(dict.fromkeys(due))
            self._compact_wakeup.set()
        if self.forget_origins_after and new_tenants:
            step = max(1, self.forget_origins_after // 10)  # not after every commit
            for tenant, head in new_tenants:
                below = head - self.forget_origins_after
                if below - self._forgotten.get(tenant, 0) >= step:
                    self._forget_due[tenant] = below
                    self._compact_wakeup.set()
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return set()

    def _premerge(self) -> None:
        """Merge a few cached states changed by commits, then yield to the loop (and repeat)."""
        if self.states.merge_some(_PREMERGE_SLICE, _PREMERGE_MAX_BYTES) and not self._closing:
            asyncio.get_running_loop().call_soon(self._premerge)
        else:
            self._premerge_scheduled = False

    # -- compaction (off the commit path) -----------------------------------------------

    async def compact_pending(self) -> int:
        """Compact every record whose log reached ``compact_every`` entries; wait for it.

        The background task does this by itself; this runs it now (tests, maintenance).

        Returns:
            The number of records whose compaction was attempted.
        """
        attempted = 0
        while self._compact_due and self._background_db is not None:
            attempted += await self._compact_round()
        return attempted

    async def _compactor(self) -> None:
        while not self._closing:
            await self._compact_wakeup.wait()
            self._compact_wakeup.clear()
            while self._compact_due and not self._closing:
                try:
                    await self._compact_round()
                except Exception:  # a bug: keep the relay up, the logs are intact
                    self.stats.compaction_failures += 1
                    log.exception("relay storage compaction failed")
                    break
            if self._forget_due and not self._closing:
                try:
                    await self.forget_due_origins()
                except Exception:  # the change rows are intact: retried at the next step
                    log.exception("forgetting old change origins failed")

    async def _compact_round(self) -> int:
        """Merge up to ``compact_batch`` due records, then store them in one transaction."""
        async with self._compact_lock:
            keys = list(itertools.islice(self._compact_due, self.compact_batch))
            if not keys:
                return 0
            for key in keys:
                del self._compact_due[key]
            reader = self._require(self._background_db)
            # Read + merge on the compaction connection's thread: neither the writer nor the
            # loop waits for the merge.
            failed: list[tuple[str, str, str]] = []
            merged = await on_thread(reader, _merge_in_thread, keys, failed)
            self.stats.compaction_failures += len(failed)
            if merged:
                writer = self._require(self._writer_db)
                async with self._lock:
                    await on_thread(writer, _store_compacted_in_thread, merged)
            self.stats.compactions += len(keys)
        async with self._compacted:
            self._compacted.notify_all()
        return len(keys)

    async def checkpoint(self) -> None:
        """Checkpoint the WAL now (PASSIVE); the background does it every ``checkpoint_every``
        commits by itself. A failure is logged and counted (:meth:`numbers`), not raised."""
        if self._checkpointer is not None:
            await self._checkpointer.checkpoint()

    async def wait_compactions(self, count: int) -> None:
        """Wait until ``stats.compactions`` reaches ``count`` (the caller bounds the wait)."""
        async with self._compacted:
            await self._compacted.wait_for(lambda: self.stats.compactions >= count)


def _read_states_in_thread(
    conn: sqlite3.Connection, tenant: str, keys: list[RecordKey]
) -> list[tuple[str, str, bytes]]:
    """Snapshot and log rows of ``keys``, per record in order (runs on the reader's thread)."""
    rows: list[tuple[str, str, bytes]] = []
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        flat = [v for key in chunk for v in key]
        for collection, record_id, _kind, _seq, data in conn.execute(
            states_query(len(chunk)), [*flat, tenant, tenant]
        ):
            rows.append((str(collection), str(record_id), bytes(data)))
    return rows


def _commit_in_thread(
    conn: sqlite3.Connection,
    log_rows: list[tuple[str, str, str, int, bytes]],
    change_rows: list[tuple[str, str, str, str, int]],
    tenant_rows: list[tuple[str, int]],
    probe: list[tuple[str, str, str]],
    tombstone_rows: list[tuple[str, str, str, str, float]],
    touched: list[tuple[str, str, str]],
    reindex: list[tuple[tuple[str, str, str], list[bytes] | None, list[bytes]]],
    reader: FieldReader,
) -> tuple[
    set[tuple[str, str, str]],
    dict[tuple[str, str, str], tuple[IndexedFields | None, IndexedFields]],
    dict[tuple[str, str, str], list[bytes]],
    set[tuple[str, str, str]],
]:
    """One group-commit transaction (runs on the writer connection's thread).

    Returns:
        The records among ``probe`` that existed before this transaction, the indexed
        fields of every record written, before and after it, the whole state of those
        whose fields changed, and the records among ``touched`` that are purged: if there
        are any, nothing was written.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        purged = _purged_among(conn, touched)
        if purged:
            conn.execute("ROLLBACK")
            return set(), {}, {}, purged
        states: dict[tuple[str, str, str], list[bytes]] = {}
        fields = rewrite_fields_in_thread(conn, reindex, states_query, reader, states)
        existing: set[tuple[str, str, str]] = set()
        for start in range(0, len(probe), _KEYS_PER_QUERY):
            chunk = probe[start : start + _KEYS_PER_QUERY]
            values = ",".join("(?,?,?)" for _ in chunk)
            existing.update(
                conn.execute(
                    f"WITH k(t, c, r) AS (VALUES {values}) SELECT t, c, r FROM k "
                    "WHERE EXISTS (SELECT 1 FROM changes WHERE tenant = k.t "
                    "AND collection = k.c AND record_id = k.r)",
                    [v for key in chunk for v in key],
                )
            )
        conn.executemany(
            "INSERT INTO log (tenant, collection, record_id, seq, data) VALUES (?,?,?,?,?)",
            log_rows,
        )
        conn.executemany(
            "INSERT INTO changes (tenant, collection, record_id, origin, seq) "
            "VALUES (?,?,?,?,?) ON CONFLICT (tenant, collection, record_id, origin) "
            "DO UPDATE SET seq = excluded.seq",
            change_rows,
        )
        conn.executemany(
            "INSERT INTO tenants (tenant, seq) VALUES (?, ?) "
            "ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq",
            tenant_rows,
        )
        if tombstone_rows:
            conn.executemany(
                "INSERT INTO tombstones (tenant, collection, record_id, tombstone, deleted_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (tenant, collection, record_id) "
                "DO UPDATE SET tombstone = MAX(tombstone, excluded.tombstone)",
                tombstone_rows,
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        reader.forget(key for key, _, _ in reindex)  # their documents hold what was not stored
        raise
    return existing, fields, states, set()


def _purged_among(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """The purged records among ``keys`` (one indexed lookup per chunk)."""
    found: set[tuple[str, str, str]] = set()
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        values = ",".join("(?,?,?)" for _ in chunk)
        found.update(
            (str(t), str(c), str(r))
            for t, c, r in conn.execute(
                f"WITH k(t, c, r) AS (VALUES {values}) SELECT t, c, r FROM k "
                "WHERE EXISTS (SELECT 1 FROM purged WHERE tenant = k.t "
                "AND collection = k.c AND record_id = k.r)",
                [v for key in chunk for v in key],
            )
        )
    return found


def backfill_tombstones_in_thread(conn: sqlite3.Connection, now: float) -> int:
    """Record the tombstones of the stored records (opening a schema 1 or 2 storage, which
    had no ``tombstones`` table), with ``deleted_at = now``; one transaction. Reads each
    stored update's bytes (:func:`~crdt_sync.records.layout.tombstones_in`), no document is
    built. Returns the number of deleted records found."""
    found: dict[tuple[str, str, str], str] = {}
    for table, column in (("snapshots", "state"), ("log", "data")):
        for tenant, collection, record_id, data in conn.execute(
            f"SELECT tenant, collection, record_id, {column} FROM {table}"
        ):
            keys = tombstones_in(bytes(data))
            if keys:
                key = (str(tenant), str(collection), str(record_id))
                found[key] = max([*keys, found.get(key, "")])
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO tombstones (tenant, collection, record_id, tombstone, deleted_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT (tenant, collection, record_id) "
            "DO UPDATE SET tombstone = MAX(tombstone, excluded.tombstone)",
            [(*key, tombstone, now) for key, tombstone in found.items()],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(found)


def _purge_in_thread(
    conn: sqlite3.Connection, deleted_before: float, heads: dict[str, int]
) -> list[Purged]:
    """One purge transaction: up to :data:`_PURGE_BATCH` records deleted before
    ``deleted_before``; ``heads`` (the tenants' committed seqs) is advanced in place."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        due = conn.execute(
            "SELECT tenant, collection, record_id, tombstone FROM tombstones "
            "WHERE deleted_at < ? ORDER BY deleted_at LIMIT ?",
            (deleted_before, _PURGE_BATCH),
        ).fetchall()
        done: list[Purged] = []
        for tenant, collection, record_id, tombstone in due:
            key = (str(tenant), str(collection), str(record_id))
            seq = heads[key[0]] = heads.get(key[0], 0) + 1
            for table in RECORD_TABLES:
                conn.execute(
                    f"DELETE FROM {table} WHERE tenant = ? AND collection = ? AND record_id = ?",
                    key,
                )
            conn.execute(
                "INSERT OR REPLACE INTO purged (tenant, collection, record_id, tombstone, seq) "
                "VALUES (?,?,?,?,?)",
                (*key, str(tombstone), seq),
            )
            done.append(Purged(*key, str(tombstone), seq))
        tenants = {p.tenant for p in done}
        conn.executemany(
            "INSERT INTO tenants (tenant, seq) VALUES (?, ?) "
            "ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq",
            [(t, heads[t]) for t in tenants],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return done


_Compacted = tuple[tuple[str, str, str], int, bytes, int]
"""``(key, the snapshot's old upto (-1: none), merged state, new upto)``."""


def _merge_in_thread(
    conn: sqlite3.Connection,
    keys: list[tuple[str, str, str]],
    failed: list[tuple[str, str, str]] | None = None,
) -> list[_Compacted]:
    """Read each record's snapshot and log (one read transaction) and merge them.

    A record whose merge fails (a pycrdt error on stored data) is logged, added to ``failed``
    and left out: its log is kept, and it is retried at its next threshold.
    """
    merged: list[_Compacted] = []
    conn.execute("BEGIN")  # one read snapshot for every record of the round
    try:
        for key in keys:
            row = conn.execute(
                "SELECT state, upto FROM snapshots WHERE tenant=? AND collection=? AND record_id=?",
                key,
            ).fetchone()
            entries = conn.execute(
                "SELECT seq, data FROM log WHERE tenant=? AND collection=? AND record_id=? "
                "ORDER BY seq",
                key,
            ).fetchall()
            if not entries:
                continue
            updates = ([bytes(row[0])] if row is not None else []) + [bytes(d) for _, d in entries]
            try:
                state = merge(updates)
            except Exception:
                log.exception("compaction of %s failed; the log is kept", key)
                if failed is not None:
                    failed.append(key)
                continue
            old_upto = int(row[1]) if row is not None else -1
            merged.append((key, old_upto, state, int(entries[-1][0])))
    finally:
        # Read-only: ROLLBACK ends it even if a statement were still running (COMMIT would
        # refuse and leave the snapshot open, which blocks every later round and checkpoint).
        conn.execute("ROLLBACK")
    return merged


def _forget_in_thread(conn: sqlite3.Connection, tenant: str, low: int, high: int) -> int:
    """One transaction of :meth:`SQLiteRelayStorage.forget_origins`: the rows with
    ``low <= seq < high``. Returns the number of rows removed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO changes (tenant, collection, record_id, origin, seq) "
            "SELECT tenant, collection, record_id, '', MAX(seq) FROM changes "
            "WHERE tenant = ? AND seq >= ? AND seq < ? AND origin != '' "
            "GROUP BY collection, record_id "
            "ON CONFLICT (tenant, collection, record_id, origin) "
            "DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (tenant, low, high),
        )
        removed = conn.execute(
            "DELETE FROM changes WHERE tenant = ? AND seq >= ? AND seq < ? AND origin != ''",
            (tenant, low, high),
        ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(removed)


def _store_compacted_in_thread(conn: sqlite3.Connection, merged: list[_Compacted]) -> None:
    """Store merged snapshots and delete the log rows they hold (runs on the writer's thread).

    Log rows newer than a merge (``seq > upto``) stay. A snapshot changed since the merge read
    it (not expected: one compaction round runs at a time) is left alone.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        for (tenant, collection, record_id), old_upto, state, upto in merged:
            row = conn.execute(
                "SELECT upto FROM snapshots WHERE tenant=? AND collection=? AND record_id=?",
                (tenant, collection, record_id),
            ).fetchone()
            if (int(row[0]) if row is not None else -1) != old_upto:
                continue
            if _purged_among(conn, [(tenant, collection, record_id)]):
                continue  # purged while it was merged: nothing of it is stored again
            conn.execute(
                "INSERT INTO snapshots (tenant, collection, record_id, state, upto) "
                "VALUES (?,?,?,?,?) ON CONFLICT (tenant, collection, record_id) "
                "DO UPDATE SET state = excluded.state, upto = excluded.upto",
                (tenant, collection, record_id, state, upto),
            )
            conn.execute(
                "DELETE FROM log WHERE tenant=? AND collection=? AND record_id=? AND seq <= ?",
                (tenant, collection, record_id, upto),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
