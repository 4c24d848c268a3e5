"""What the local cache keeps: retention, quota and expiry decisions, pure (no I/O, no clock).

The store's driver (:mod:`crdt_sync.store.cache_keeper`) measures each record, asks
:func:`plan_eviction` what to remove and :func:`expiry_step` which warning is due, and does it.
The rules, in order (docs/client.md, "Retention, quota and expiry"):

1. **A record with unsynced changes is never removed.** A record is *pending* while it has an
   outbox entry, whatever its status (queued, uploading, error, blocked).
2. **Retention**: a record neither accessed nor changed for ``retention`` seconds
   (``last_used = max(accessed_at, updated_at)``) leaves the cache.
3. **Quota**: if the records left still weigh more than ``quota`` bytes, the least recently
   used ones leave first (ties broken by key, so the plan is deterministic) until the total is
   at most ``quota``. If only pending records are left and the total is still over, the plan is
   *blocked*: the driver raises an ``eviction_blocked`` warning.
4. **Expiry**: ``max_age`` seconds after the last completed sync the cache expires (everything
   not pending is cleared); warnings come ``expiry_warnings`` seconds before, the most urgent
   one only when several are due at once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DAY",
    "HOUR",
    "CacheEvent",
    "CacheEventKind",
    "CachePolicy",
    "CachedRecord",
    "EvictionPlan",
    "ExpiryStep",
    "expiry_step",
    "plan_eviction",
    "unsynced_too_old",
]

HOUR = 3600.0
DAY = 24 * HOUR

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How much the local cache keeps, and when it warns.

    Attributes:
        retention: seconds a record may go neither accessed nor changed before it leaves the
            cache (default 30 days); None keeps records however old.
        quota: byte budget of the cached records (see :class:`CachedRecord` for how a record
            is measured); None: no budget.
        expiry_warnings: seconds before the cache expires at which an ``expiry_soon`` event is
            raised (default 24 h and 1 h). The expiry itself comes from the relay.
        unsynced_warning_after: an ``unsynced_old`` event is raised when the oldest unsynced
            change is older than this (seconds, default 24 h); None: never.
        check_interval: seconds between the background checks (retention, quota, unsynced
            age) while the store is open; the first runs shortly after opening.
    """

    retention: float | None = 30 * DAY
    quota: int | None = None
    expiry_warnings: tuple[float, ...] = (DAY, HOUR)
    unsynced_warning_after: float | None = DAY
    check_interval: float = HOUR

    def __post_init__(self) -> None:
        retention = self.retention
        if retention is not None and not (retention > 0 and math.isfinite(retention)):
            raise ValueError(f"retention must be positive seconds or None: {retention!r}")
        if self.quota is not None and self.quota < 0:
            raise ValueError(f"quota must be a number of bytes >= 0 or None: {self.quota!r}")
        if any(not (w > 0 and math.isfinite(w)) for w in self.expiry_warnings):
            raise ValueError(f"expiry_warnings must be positive seconds: {self.expiry_warnings!r}")
        after = self.unsynced_warning_after
        if after is not None and not (after >= 0 and math.isfinite(after)):
            raise ValueError(f"unsynced_warning_after must be seconds >= 0 or None: {after!r}")
        if not (self.check_interval > 0 and math.isfinite(self.check_interval)):
            raise ValueError(f"check_interval must be positive seconds: {self.check_interval!r}")


@dataclass(frozen=True, slots=True)
class CachedRecord:
    """One record as the eviction sees it.

    ``size`` is the record's stored bytes: its snapshot, its state vector and every row of its
    update log, plus a fixed overhead per row (the store's rule,
    :data:`crdt_sync.store.cache_keeper.ROW_OVERHEAD`); ``last_used`` the later of its last
    access and its last change (Unix time); ``pending`` whether it has unsynced changes.
    """

    key: Key
    size: int
    last_used: float
    pending: bool


@dataclass(frozen=True, slots=True)
class EvictionPlan:
    """What :func:`plan_eviction` decided.

    Attributes:
        retention: records to remove because they were unused for too long.
        quota: records to remove to get under the quota, least recently used first.
        retention_freed: bytes of the ``retention`` records.
        quota_freed: bytes of the ``quota`` records.
        total: bytes of the records kept.
        blocked: the quota cannot be met: only records with unsynced changes are left and
            they weigh more than it (``total - quota`` bytes over).
        pending_records: records with unsynced changes (all kept).
    """

    retention: tuple[Key, ...] = ()
    quota: tuple[Key, ...] = ()
    retention_freed: int = 0
    quota_freed: int = 0
    total: int = 0
    blocked: bool = False
    pending_records: int = 0

    @property
    def freed(self) -> int:
        """Bytes of every record to remove."""
        return self.retention_freed + self.quota_freed

    @property
    def evict(self) -> tuple[Key, ...]:
        """Every record to remove (retention first, then quota)."""
        return self.retention + self.quota


def plan_eviction(records: Iterable[CachedRecord], policy: CachePolicy, now: float) -> EvictionPlan:
    """Which records leave the cache under ``policy`` at time ``now`` (see the module rules).

    Never picks a pending record. After the plan, the kept records weigh at most
    ``policy.quota`` unless :attr:`EvictionPlan.blocked`.
    """
    rows = list(records)
    pending = sum(1 for r in rows if r.pending)
    retention: list[CachedRecord] = []
    kept: list[CachedRecord] = []
    for row in rows:
        too_old = policy.retention is not None and now - row.last_used >= policy.retention
        (retention if too_old and not row.pending else kept).append(row)
    total = sum(r.size for r in kept)
    over_quota: list[CachedRecord] = []
    blocked = False
    if policy.quota is not None and total > policy.quota:
        for row in sorted((r for r in kept if not r.pending), key=lambda r: (r.last_used, r.key)):
            if total <= policy.quota:
                break
            over_quota.append(row)
            total -= row.size
        blocked = total > policy.quota
    return EvictionPlan(
        retention=tuple(r.key for r in retention),
        quota=tuple(r.key for r in over_quota),
        retention_freed=sum(r.size for r in retention),
        quota_freed=sum(r.size for r in over_quota),
        total=total,
        blocked=blocked,
        pending_records=pending,
    )


@dataclass(frozen=True, slots=True)
class ExpiryStep:
    """What :func:`expiry_step` decided at one moment.

    Attributes:
        expires_at: when the cache expires (None: it does not).
        warn: the warning due now, as seconds before expiry (one of the policy's
            ``expiry_warnings``), or None.
        expired: the cache is expired (``now >= expires_at``).
        announce_expired: the expiry is new (not announced yet).
        sent: the warnings announced so far for this ``expires_at`` (pass it back next time),
            ``0.0`` standing for the expiry itself.
        next_check: when the next warning (or the expiry) falls due, or None.
    """

    expires_at: float | None
    warn: float | None = None
    expired: bool = False
    announce_expired: bool = False
    sent: frozenset[float] = field(default_factory=frozenset)
    next_check: float | None = None


def expiry_step(
    last_synced_at: float | None,
    max_age: float | None,
    now: float,
    warnings: Sequence[float],
    sent: Collection[float] = frozenset(),
) -> ExpiryStep:
    """Which expiry warning is due at ``now``.

    The cache expires ``max_age`` seconds after ``last_synced_at``; with no max age, or no
    completed sync yet, it does not expire. ``sent`` is what earlier steps announced for the
    same expiry time. When several warnings are due at once (e.g. a device back after two days
    off), only the most urgent is announced and the others count as sent.
    """
    if max_age is None or last_synced_at is None:
        return ExpiryStep(None)
    expires_at = last_synced_at + max_age
    left = expires_at - now
    done = set(sent)
    if left <= 0:
        announce = 0.0 not in done
        done.update(warnings)
        done.add(0.0)
        return ExpiryStep(expires_at, None, True, announce, frozenset(done))
    due = [w for w in warnings if w >= left and w not in done]
    warn = min(due) if due else None
    done.update(w for w in warnings if w >= left)
    upcoming = [expires_at - w for w in warnings if w < left] + [expires_at]
    return ExpiryStep(expires_at, warn, False, False, frozenset(done), min(upcoming))


def unsynced_too_old(oldest_unsynced_at: float | None, now: float, after: float | None) -> bool:
    """Whether the oldest unsynced change (its Unix time, None: there is none) is older than
    ``after`` seconds (None: never warn)."""
    if oldest_unsynced_at is None or after is None:
        return False
    return now - oldest_unsynced_at > after


class CacheEventKind(enum.Enum):
    """What a :class:`CacheEvent` reports."""

    EVICTED = "evicted"
    """Records left the cache (``reason``: ``retention``, ``quota``, ``expired``, ``cleared``)."""
    EXPIRY_SOON = "expiry_soon"
    """The cache expires at ``expires_at``: sync before then."""
    EXPIRED = "expired"
    """The cache expired: what was not pending was cleared."""
    EVICTION_BLOCKED = "eviction_blocked"
    """The quota cannot be met: records with unsynced changes weigh more than it."""
    UNSYNCED_OLD = "unsynced_old"
    """Unsynced changes are older than the policy's threshold."""


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """Something the cache upkeep did or warns about. Warnings are ``EXPIRY_SOON``,
    ``EXPIRED``, ``EVICTION_BLOCKED`` and ``UNSYNCED_OLD``.

    Attributes:
        kind: what happened.
        at: when (Unix time).
        records: ``EVICTED``/``EXPIRED``: records removed.
        bytes: ``EVICTED``/``EXPIRED``: bytes freed; ``EVICTION_BLOCKED``: bytes over quota.
        reason: ``EVICTED``: ``retention``, ``quota``, ``expired`` or ``cleared``.
        expires_at: ``EXPIRY_SOON``/``EXPIRED``: when the cache expires / expired.
        unsynced_entries: outbox entries waiting (kept whatever happens).
        unsynced_records: records with unsynced changes (kept whatever happens).
        oldest_unsynced_at: the time of the oldest unsynced change, if any.
    """

    kind: CacheEventKind
    at: float
    records: int = 0
    bytes: int = 0
    reason: str | None = None
    expires_at: float | None = None
    unsynced_entries: int = 0
    unsynced_records: int = 0
    oldest_unsynced_at: float | None = None

    @property
    def is_warning(self) -> bool:
        """Whether the app should show it to the user."""
        return self.kind is not CacheEventKind.EVICTED

    def describe(self) -> str:
        """A sentence for the user."""
        kept = (
            f"; {self.unsynced_records} record(s) with unsynced changes are kept"
            if self.unsynced_records
            else ""
        )
        match self.kind:
            case CacheEventKind.EVICTED:
                return (
                    f"{self.records} record(s) ({self.bytes} bytes) left the cache ({self.reason})"
                )
            case CacheEventKind.EXPIRY_SOON:
                left = max(0.0, (self.expires_at or self.at) - self.at)
                return f"the offline cache expires in {_duration(left)}: sync before then{kept}"
            case CacheEventKind.EXPIRED:
                return f"the offline cache expired and was cleared{kept}"
            case CacheEventKind.EVICTION_BLOCKED:
                return (
                    f"the storage limit is exceeded by {self.bytes} bytes of unsynced changes "
                    f"({self.unsynced_records} record(s)): sync to free space"
                )
            case CacheEventKind.UNSYNCED_OLD:
                age = self.at - (self.oldest_unsynced_at or self.at)
                return (
                    f"{self.unsynced_entries} change(s) have not been synced for "
                    f"{_duration(age)}: connect to sync them"
                )
        raise AssertionError(self.kind)  # pragma: no cover


def _duration(seconds: float) -> str:
    if seconds >= DAY:
        return f"{seconds / DAY:.1f} days"
    if seconds >= HOUR:
        return f"{seconds / HOUR:.1f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"
