"""Keeping the local cache in bounds: retention, quota, expiry, and their events.

:class:`CacheKeeper` is the driver of the pure decisions in :mod:`crdt_sync.cache_policy`, one
per :class:`~crdt_sync.store.sqlite.LocalStore` (``store.cache``). It runs by itself (shortly
after the store opens, then every ``policy.check_interval`` seconds, and at each expiry
warning's time) and on demand (:meth:`CacheKeeper.apply_policy`, :meth:`CacheKeeper.clear`).

A check first reads two totals (the records' size, the oldest last use) on a read-only
connection of its own, in a worker thread (WAL: it neither waits for the store's writer nor
holds it up); only if retention or quota has work are the records measured (same
connection; reads whose time is not written yet are written first) and the plan made. The
chosen records are then removed in short writes of the store's group commit
(:data:`_REMOVE_CHUNK` records each, edits held off during each), and each write checks again,
in its transaction, that a record still has no outbox entry (and, for retention and quota,
was not read or changed since it was measured): a record cannot gain an unsynced change
between being judged and being removed. ``remove_records`` refuses a record with outbox
entries as a last guard.

**Size of a record** (what the quota counts): the bytes of its snapshot, of its cached state
vector and of every row of its update log, plus :data:`ROW_OVERHEAD` bytes per row (its
``records`` row and each ``updates`` row) for keys and bookkeeping. Pages, indexes, the WAL,
the outbox and the conflict log are not counted: :meth:`LocalStore.disk_usage
<crdt_sync.store.sqlite.LocalStore.disk_usage>` is what the file takes.

**Expiry**: the relay sets a maximum age of the offline cache per tenant (``welcome``); the
replica passes it here (:meth:`set_max_age`), and the time of each completed sync
(:meth:`synced`); while a sync is under way (:meth:`set_syncing`) the expiry waits for its
outcome; while the replica is online (:meth:`set_live`) the cache is current and does
not age. Both are persisted as store settings, so an offline restart keeps counting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache_policy import (
    CachedRecord,
    CacheEvent,
    CacheEventKind,
    CachePolicy,
    expiry_step,
    plan_eviction,
    unsynced_too_old,
)
from ..errors import InvalidState
from .projection import Row
from .removal import remove_records

if TYPE_CHECKING:
    from .sqlite import LocalStore

__all__ = ["ROW_OVERHEAD", "CacheKeeper", "CacheReport"]

log = logging.getLogger("crdt_sync.store")

#: Bytes counted per stored row of a record on top of its blobs (keys, times, rowid).
ROW_OVERHEAD = 64

#: Store setting: the relay's maximum cache age in seconds ("" when it sets none).
MAX_AGE_SETTING = "cache.max_age"

#: Store setting: Unix time of the last completed sync (or the last moment online).
LAST_SYNCED_SETTING = "cache.last_synced_at"

#: Store setting: "1" once records were removed (live updates of records not here then ask
#: for their whole state: :meth:`CacheKeeper.absent`). Written in the removal's transaction.
REMOVED_SETTING = "cache.removed"

#: Seconds after opening before the first background check.
FIRST_CHECK_AFTER = 1.0

# A record's size is its row plus its update rows (see the module docstring): three plain
# scans merged in Python (a correlated subquery per record is several times slower).
_MEASURE_RECORDS_SQL = f"""
SELECT collection, id, length(confirmed) + coalesce(length(state_vector), 0) + {ROW_OVERHEAD},
       max(accessed_at, updated_at)
FROM records
"""
_MEASURE_UPDATES_SQL = (
    f"SELECT collection, id, SUM(length(data) + {ROW_OVERHEAD}) FROM updates"
    " GROUP BY collection, id"
)
_PENDING_SQL = "SELECT DISTINCT collection, id FROM outbox"

# Records per removal write (edits wait for one such write at most).
_REMOVE_CHUNK = 200

# Keys per existence query (two parameters each).
_KEYS_PER_QUERY = 400

# What a check looks at first (two plain scans, no per-record work): the records' total size
# and the oldest last use. Only if retention or quota may have work does the full plan run.
_TOTALS_SQL = f"""
SELECT (SELECT coalesce(SUM(length(confirmed) + coalesce(length(state_vector), 0)
                            + {ROW_OVERHEAD}), 0) FROM records)
       + (SELECT coalesce(SUM(length(data) + {ROW_OVERHEAD}), 0) FROM updates),
       (SELECT MIN(max(accessed_at, updated_at)) FROM records)
"""

_UNSYNCED_SQL = (
    "SELECT COUNT(*), MIN(created_at), (SELECT COUNT(*) FROM"
    " (SELECT DISTINCT collection, id FROM outbox)) FROM outbox"
)

Key = tuple[str, str]
Listener = Callable[[CacheEvent], None]


@dataclass(frozen=True, slots=True)
class CacheReport:
    """What one run of the policy (or a clear) did.

    Attributes:
        evicted: records removed.
        freed: their bytes (as the quota counts them).
        total: bytes of the records kept.
        blocked: the quota could not be met because of unsynced records.
        unsynced_records: records kept because they have unsynced changes.
    """

    evicted: int = 0
    freed: int = 0
    total: int = 0
    blocked: bool = False
    unsynced_records: int = 0


class CacheKeeper:
    """Retention, quota and expiry of one store's cache (see the module docstring).

    Created by :meth:`LocalStore.open <crdt_sync.store.sqlite.LocalStore.open>` as
    ``store.cache``.
    """

    def __init__(self, store: LocalStore, policy: CachePolicy) -> None:
        self._store = store
        self.policy = policy
        self._listeners: list[Listener] = []
        self._max_age: float | None = None
        self._last_synced: float | None = None
        self._live = False
        self._syncing = False
        self._sent: frozenset[float] = frozenset()  # expiry warnings announced
        self._sent_for: float | None = None  # ... for this expiry time
        self._warned_unsynced: float | None = None  # oldest unsynced time warned about
        self._next_periodic = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._removed_any = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the persisted expiry settings and schedule the first check."""
        raw = await self._store.get_setting(MAX_AGE_SETTING)
        self._max_age = float(raw) if raw else None
        raw = await self._store.get_setting(LAST_SYNCED_SETTING)
        self._last_synced = float(raw) if raw else None
        self._removed_any = await self._store.get_setting(REMOVED_SETTING) == "1"
        self._next_periodic = self._store._time() + FIRST_CHECK_AFTER
        self._schedule()

    async def close(self) -> None:
        """Stop the background checks (waits for one under way)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.wait([self._task])

    # -- events -----------------------------------------------------------------------------

    def on_event(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for each :class:`CacheEvent` from now on; returns a
        function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def _emit(self, event: CacheEvent) -> None:
        log.log(
            logging.WARNING if event.is_warning else logging.INFO,
            "%s: %s",
            self._store.path,
            event.describe(),
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("%s: a cache event listener failed", self._store.path)

    # -- expiry inputs ----------------------------------------------------------------------

    @property
    def max_age(self) -> float | None:
        """The relay's maximum cache age (seconds), as last delivered; None: no expiry."""
        return self._max_age

    @property
    def last_synced_at(self) -> float | None:
        """Unix time of the last completed sync (or last moment online), if any."""
        return self._last_synced

    @property
    def expires_at(self) -> float | None:
        """When the cache expires (None: it does not, or it is online now)."""
        if self._live or self._max_age is None or self._last_synced is None:
            return None
        return self._last_synced + self._max_age

    def set_max_age(self, max_age: float | None) -> None:
        """The relay's maximum cache age (None: the relay sets none). Persisted."""
        if max_age == self._max_age:
            return
        self._max_age = max_age
        self._store.set_setting_lazily(MAX_AGE_SETTING, "" if max_age is None else repr(max_age))
        self._reschedule()

    def synced(self, at: float | None = None) -> None:
        """A sync completed (or the replica was online until now): the cache is current at
        ``at`` (default: now). Persisted."""
        now = self._store._time() if at is None else at
        self._last_synced = now
        self._store.set_setting_lazily(LAST_SYNCED_SETTING, repr(now))
        self._reschedule()

    def set_syncing(self, syncing: bool) -> None:
        """A sync is under way (the relay answered): no expiry warning or clearing until it
        ends, online (:meth:`set_live`) or not (then what fell due meanwhile runs at once)."""
        if syncing == self._syncing:
            return
        self._syncing = syncing
        self._reschedule()

    def set_live(self, live: bool) -> None:
        """The replica is online (the cache is current and does not age) or not any more."""
        if live == self._live:
            return
        self._live = live
        self.synced()

    # -- on demand --------------------------------------------------------------------------

    async def measure(self) -> list[CachedRecord]:
        """Every record as the policy sees it (size, last use, pending).

        Read on a connection of its own, in a worker thread (WAL: it neither waits for nor
        holds up the store's writes), after the writes queued so far. Reads not written yet
        (``accessed_at`` is written lazily) are missing: removals check again.
        """
        store = self._store
        store.conn  # noqa: B018 (raises InvalidState once closed)
        if store._accessed:  # reads not written yet: written first (they ride with any write)
            await store._write(_nothing)
        await store._writer.drain()
        return await asyncio.to_thread(_measure_file, store.path)

    async def remove(self, keys: Sequence[Key]) -> list[Key]:
        """Remove these records now, except those with unsynced changes (checked in the
        removal's transaction); returns the kept ones. For records that left what the replica
        keeps (a subscription no longer matching them)."""
        wanted = list(dict.fromkeys(keys))
        watched = self._store.watched
        kept: list[Key] = []
        for start in range(0, len(wanted), _REMOVE_CHUNK):
            chunk = wanted[start : start + _REMOVE_CHUNK]

            def body(
                db: sqlite3.Connection, chunk: Sequence[Key] = chunk
            ) -> tuple[dict[Key, Row | None], list[Key]]:
                pending = [
                    key
                    for key in chunk
                    if db.execute(
                        "SELECT 1 FROM outbox WHERE collection = ? AND id = ? LIMIT 1", key
                    ).fetchone()
                ]
                gone = [key for key in chunk if key not in set(pending)]
                return _remove(db, gone, watched), pending

            kept += await self._store._removing(body)
        self._removed_any = self._removed_any or len(kept) < len(wanted)
        return kept

    async def _remove_unchanged(
        self, rows: Sequence[CachedRecord], *, check_use: bool
    ) -> list[CachedRecord]:
        """Remove these measured records, in short writes of :data:`_REMOVE_CHUNK` records
        (edits held off during each), skipping those that gained unsynced changes since they
        were measured (and, with ``check_use``, those used since). Returns those removed."""
        removed: list[CachedRecord] = []
        watched = self._store.watched
        for start in range(0, len(rows), _REMOVE_CHUNK):
            chunk = rows[start : start + _REMOVE_CHUNK]

            def body(
                db: sqlite3.Connection, chunk: Sequence[CachedRecord] = chunk
            ) -> tuple[dict[Key, Row | None], list[CachedRecord]]:
                gone = _still_removable(db, chunk, check_use)
                return _remove(db, [r.key for r in gone], watched), gone

            removed += await self._store._removing(body)
        self._removed_any = self._removed_any or bool(removed)
        return removed

    async def apply_policy(self) -> CacheReport:
        """Apply retention and quota now; raises events (``evicted``, ``eviction_blocked``).

        A first look (the total size and the oldest last use, two plain scans) skips the
        per-record plan when neither rule has work: a check of a cache in bounds costs little.
        """
        now = self._store._time()
        policy = self.policy
        self._store.conn  # noqa: B018 (raises InvalidState once closed)
        total, oldest = await asyncio.to_thread(_read_file, self._store.path, _TOTALS_SQL)
        # The oldest last use read here may miss reads not written yet: it can only look
        # older than it is, so the full plan (and the removal's re-check) decides.
        too_old = (
            policy.retention is not None and oldest is not None and now - oldest >= policy.retention
        )
        if not too_old and (policy.quota is None or total <= policy.quota):
            records = (await self._unsynced())[2]
            return CacheReport(0, 0, int(total), False, records)
        measured = await self.measure()
        plan = plan_eviction(measured, policy, now)
        by_key = {r.key: r for r in measured}
        removed = await self._remove_unchanged([by_key[k] for k in plan.evict], check_use=True)
        gone = {r.key for r in removed}
        freed = sum(r.size for r in removed)
        kept_total = plan.total + plan.freed - freed  # records skipped at removal stay
        unsynced = await self._unsynced()
        for reason, keys in (("retention", plan.retention), ("quota", plan.quota)):
            done = [by_key[k] for k in keys if k in gone]
            if done:
                self._emit(
                    CacheEvent(
                        CacheEventKind.EVICTED,
                        now,
                        records=len(done),
                        bytes=sum(r.size for r in done),
                        reason=reason,
                        unsynced_records=plan.pending_records,
                    )
                )
        if plan.blocked:
            assert policy.quota is not None
            self._emit(
                CacheEvent(
                    CacheEventKind.EVICTION_BLOCKED,
                    now,
                    bytes=kept_total - policy.quota,
                    unsynced_entries=unsynced[0],
                    unsynced_records=unsynced[2],
                    oldest_unsynced_at=unsynced[1],
                )
            )
        return CacheReport(len(removed), freed, kept_total, plan.blocked, unsynced[2])

    async def clear(self, reason: str = "cleared") -> CacheReport:
        """Remove every record without unsynced changes; keep the others."""
        now = self._store._time()
        measured = await self.measure()
        removed = await self._remove_unchanged(
            [r for r in measured if not r.pending], check_use=False
        )
        freed = sum(r.size for r in removed)
        unsynced = await self._unsynced()
        report = CacheReport(
            len(removed), freed, sum(r.size for r in measured) - freed, False, unsynced[2]
        )
        if report.evicted:
            self._emit(
                CacheEvent(
                    CacheEventKind.EVICTED,
                    now,
                    records=report.evicted,
                    bytes=report.freed,
                    reason=reason,
                    unsynced_records=report.unsynced_records,
                )
            )
        return report

    async def absent(self, keys: Sequence[Key]) -> list[Key]:
        """Those of these records that are not in the store, if records were ever removed from
        it (else none, without a query). A live update of such a record carries only the
        latest change: the sync run then asks the relay for the whole record."""
        if not self._removed_any:
            return []
        store = self._store
        candidates = [
            k
            for k in dict.fromkeys(keys)
            if k not in store._cache and not store._writer.in_flight(k)
        ]
        present: set[Key] = set()
        for start in range(0, len(candidates), _KEYS_PER_QUERY):
            chunk = candidates[start : start + _KEYS_PER_QUERY]
            match = " OR ".join(["(collection = ? AND id = ?)"] * len(chunk))
            rows = await store.conn.execute_fetchall(
                f"SELECT collection, id FROM records WHERE {match}",
                [part for key in chunk for part in key],
            )
            present.update((str(c), str(r)) for c, r in rows)
        return [k for k in candidates if k not in present]

    async def check(self) -> None:
        """Run every check now: expiry, retention and quota, unsynced age."""
        await self._check_expiry()
        await self.apply_policy()
        await self._check_unsynced()

    # -- background -------------------------------------------------------------------------

    async def _unsynced(self) -> tuple[int, float | None, int]:
        """``(entries, oldest entry's time, records)`` of the outbox."""
        rows = await self._store.conn.execute_fetchall(_UNSYNCED_SQL)
        entries, oldest, records = next(iter(rows))
        return int(entries), oldest, int(records)

    async def _check_unsynced(self) -> None:
        entries, oldest, records = await self._unsynced()
        now = self._store._time()
        if not unsynced_too_old(oldest, now, self.policy.unsynced_warning_after):
            return
        if oldest == self._warned_unsynced:
            return  # warned about this one already
        self._warned_unsynced = oldest
        self._emit(
            CacheEvent(
                CacheEventKind.UNSYNCED_OLD,
                now,
                unsynced_entries=entries,
                unsynced_records=records,
                oldest_unsynced_at=oldest,
            )
        )

    def _step(self, now: float) -> tuple[float | None, float | None, bool, bool]:
        """``(warning due, expires_at, expired, announce expired)``; updates what was sent."""
        if self._live or self._syncing:
            return None, None, False, False
        step = expiry_step(
            self._last_synced,
            self._max_age,
            now,
            self.policy.expiry_warnings,
            self._sent if self._sent_for == _expires(self._last_synced, self._max_age) else (),
        )
        self._sent, self._sent_for = step.sent, step.expires_at
        return step.warn, step.expires_at, step.expired, step.announce_expired

    async def _check_expiry(self) -> None:
        now = self._store._time()
        if self._live:
            self.synced(now)  # online: the cache is current (persisted for a crash)
            return
        warn, expires_at, expired, announce = self._step(now)
        if warn is not None:
            entries, oldest, records = await self._unsynced()
            self._emit(
                CacheEvent(
                    CacheEventKind.EXPIRY_SOON,
                    now,
                    expires_at=expires_at,
                    unsynced_entries=entries,
                    unsynced_records=records,
                    oldest_unsynced_at=oldest,
                )
            )
        if expired:
            # Cleared at the expiry, and again at each check while it lasts (records whose
            # changes were acknowledged since, by a sync that did not complete).
            report = await self.clear("expired")
            if announce:
                entries, oldest, records = await self._unsynced()
                self._emit(
                    CacheEvent(
                        CacheEventKind.EXPIRED,
                        now,
                        records=report.evicted,
                        bytes=report.freed,
                        expires_at=expires_at,
                        unsynced_entries=entries,
                        unsynced_records=records,
                        oldest_unsynced_at=oldest,
                    )
                )

    def _next_expiry_check(self) -> float | None:
        if self._live or self._syncing:
            return None
        expires = _expires(self._last_synced, self._max_age)
        if expires is None:
            return None
        sent = self._sent if self._sent_for == expires else frozenset()
        times = [expires - w for w in self.policy.expiry_warnings if w not in sent]
        if 0.0 not in sent:
            times.append(expires)
        return min(times) if times else None

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._schedule()

    def _schedule(self) -> None:
        if self._closed or self._timer is not None:
            return
        due = self._next_periodic
        expiry = self._next_expiry_check()
        if expiry is not None:
            due = min(due, expiry)
        delay = max(0.0, due - self._store._time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._task is not None and not self._task.done():
            self._schedule_later()
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _schedule_later(self) -> None:
        if not self._closed and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(0.05, self._fire)

    async def _run(self) -> None:
        now = self._store._time()
        try:
            await self._check_expiry()
            if now >= self._next_periodic:
                self._next_periodic = now + self.policy.check_interval
                await self.apply_policy()
                await self._check_unsynced()
        except InvalidState:
            return  # the store closed meanwhile
        except Exception:
            log.exception("%s: the cache check failed", self._store.path)
            self._next_periodic = now + self.policy.check_interval
        self._schedule()


def _remove(db: sqlite3.Connection, keys: Sequence[Key], watched: bool) -> dict[Key, Row | None]:
    """Remove the records and remember, in the same transaction, that records were removed.
    Returns each key with its projection row before (when ``watched``: live queries hear of
    it), else None."""
    before: dict[Key, Row | None] = dict.fromkeys(keys)
    if not keys:
        return before
    if watched:
        match = " OR ".join(["(collection = ? AND id = ?)"] * len(keys))
        params = [part for key in keys for part in key]
        for c, r, fields, nested in db.execute(
            f"SELECT collection, id, fields, nested FROM projection WHERE {match}", params
        ):
            before[(c, r)] = (fields, nested)
    remove_records(db, keys)
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, '1')"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (f"setting:{REMOVED_SETTING}",),
    )
    return before


def _expires(last_synced: float | None, max_age: float | None) -> float | None:
    return None if last_synced is None or max_age is None else last_synced + max_age


def _nothing(db: sqlite3.Connection) -> None:
    """A write of its own: what rides with it (lazily written reads) is written."""


def _measure_file(path: Path) -> list[CachedRecord]:
    """:func:`_measure` on a read-only connection of its own (run in a worker thread)."""
    db = _reader(path)
    try:
        return _measure(db)
    finally:
        db.close()


def _read_file(path: Path, query: str) -> tuple[Any, ...]:
    """The first row of ``query`` on a read-only connection of its own (worker thread)."""
    db = _reader(path)
    try:
        row: tuple[Any, ...] = db.execute(query).fetchone()
        return row
    finally:
        db.close()


def _reader(path: Path) -> sqlite3.Connection:
    # WAL: a reader neither waits for the store's writer nor holds it up.
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    db.execute("PRAGMA busy_timeout = 5000")
    return db


def _still_removable(
    db: sqlite3.Connection, rows: Sequence[CachedRecord], check_use: bool
) -> list[CachedRecord]:
    """Those of ``rows`` still in the store, still without unsynced changes and (with
    ``check_use``) not used since they were measured. On the store's SQLite thread, in the
    removal's transaction (after the lazily written reads)."""
    match = " OR ".join(["(collection = ? AND id = ?)"] * len(rows))
    params = [part for r in rows for part in r.key]
    pending = {
        (c, r) for c, r in db.execute(f"SELECT collection, id FROM outbox WHERE {match}", params)
    }
    used = {
        (c, r): u
        for c, r, u in db.execute(
            f"SELECT collection, id, max(accessed_at, updated_at) FROM records WHERE {match}",
            params,
        )
    }
    return [
        r
        for r in rows
        if r.key in used and r.key not in pending and (not check_use or used[r.key] <= r.last_used)
    ]


def _measure(db: sqlite3.Connection) -> list[CachedRecord]:
    logs = {(c, r): int(size) for c, r, size in db.execute(_MEASURE_UPDATES_SQL)}
    pending = {(c, r) for c, r in db.execute(_PENDING_SQL)}
    return [
        CachedRecord((c, r), int(size) + logs.get((c, r), 0), float(used), (c, r) in pending)
        for c, r, size, used in db.execute(_MEASURE_RECORDS_SQL)
    ]
