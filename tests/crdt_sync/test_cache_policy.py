"""The cache's pure decisions (crdt_sync.cache_policy): eviction plans and expiry warnings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_sync.cache_policy import (
    DAY,
    HOUR,
    CachedRecord,
    CacheEvent,
    CacheEventKind,
    CachePolicy,
    expiry_step,
    plan_eviction,
    unsynced_too_old,
)

NOW = 1_000_000.0

records = st.lists(
    st.builds(
        CachedRecord,
        key=st.tuples(
            st.sampled_from(["jobs", "notes"]), st.text("abcdef", min_size=1, max_size=3)
        ),
        size=st.integers(0, 10_000),
        last_used=st.floats(NOW - 60 * DAY, NOW, allow_nan=False),
        pending=st.booleans(),
    ),
    max_size=40,
    unique_by=lambda r: r.key,
)
policies = st.builds(
    CachePolicy,
    retention=st.one_of(st.none(), st.floats(1.0, 90 * DAY)),
    quota=st.one_of(st.none(), st.integers(0, 200_000)),
)


@given(records, policies)
def test_never_picks_a_pending_record(rows: list[CachedRecord], policy: CachePolicy) -> None:
    plan = plan_eviction(rows, policy, NOW)
    pending = {r.key for r in rows if r.pending}
    assert not pending & set(plan.evict)
    assert len(plan.evict) == len(set(plan.evict))
    assert plan.pending_records == len(pending)


@given(records, policies)
def test_quota_is_met_unless_blocked_by_pending(
    rows: list[CachedRecord], policy: CachePolicy
) -> None:
    plan = plan_eviction(rows, policy, NOW)
    evicted = set(plan.evict)
    kept = [r for r in rows if r.key not in evicted]
    assert plan.total == sum(r.size for r in kept)
    assert plan.freed == sum(r.size for r in rows if r.key in evicted)
    if policy.quota is None:
        assert not plan.quota and not plan.blocked
    elif plan.blocked:
        # Only pending records are left, and they alone weigh more than the quota.
        assert all(r.pending for r in kept if r.size)
        assert plan.total > policy.quota
    else:
        assert plan.total <= policy.quota


@given(records, policies)
def test_quota_evicts_least_recently_used_first_and_no_more_than_needed(
    rows: list[CachedRecord], policy: CachePolicy
) -> None:
    plan = plan_eviction(rows, policy, NOW)
    by_key = {r.key: r for r in rows}
    evicted = set(plan.evict)
    survivors = [r for r in rows if r.key not in evicted and not r.pending]
    for key in plan.quota:  # every quota victim was used no later than any survivor
        victim = by_key[key]
        assert all((victim.last_used, victim.key) <= (s.last_used, s.key) for s in survivors)
    if plan.quota:  # the last victim was needed: without it the total is over the quota
        assert policy.quota is not None
        assert plan.total + by_key[plan.quota[-1]].size > policy.quota


@given(records, policies)
def test_retention_removes_exactly_the_unused_records(
    rows: list[CachedRecord], policy: CachePolicy
) -> None:
    plan = plan_eviction(rows, policy, NOW)
    expected = {
        r.key
        for r in rows
        if policy.retention is not None and NOW - r.last_used >= policy.retention and not r.pending
    }
    assert set(plan.retention) == expected


def test_blocked_when_pending_records_exceed_the_quota() -> None:
    rows = [
        CachedRecord(("jobs", "a"), 500, NOW - 10, pending=True),
        CachedRecord(("jobs", "b"), 300, NOW - 20, pending=False),
        CachedRecord(("jobs", "c"), 100, NOW - 5, pending=False),
    ]
    plan = plan_eviction(rows, CachePolicy(quota=400), NOW)
    assert plan.quota == (("jobs", "b"), ("jobs", "c"))
    assert plan.blocked and plan.total == 500


def test_retention_default_is_thirty_days() -> None:
    rows = [
        CachedRecord(("jobs", "old"), 10, NOW - 31 * DAY, pending=False),
        CachedRecord(("jobs", "old-pending"), 10, NOW - 31 * DAY, pending=True),
        CachedRecord(("jobs", "recent"), 10, NOW - 29 * DAY, pending=False),
    ]
    assert plan_eviction(rows, CachePolicy(), NOW).retention == (("jobs", "old"),)


def test_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="retention"):
        CachePolicy(retention=0)
    with pytest.raises(ValueError, match="quota"):
        CachePolicy(quota=-1)
    with pytest.raises(ValueError, match="expiry_warnings"):
        CachePolicy(expiry_warnings=(-1.0,))
    with pytest.raises(ValueError, match="check_interval"):
        CachePolicy(check_interval=0)


# -- expiry --------------------------------------------------------------------------------


def test_no_expiry_without_max_age_or_sync() -> None:
    assert expiry_step(None, DAY, NOW, (HOUR,)).expires_at is None
    assert expiry_step(NOW, None, NOW, (HOUR,)).expires_at is None


def test_warnings_come_in_turn_then_the_expiry() -> None:
    synced, age, warnings = NOW, 2 * DAY, (DAY, HOUR)
    step = expiry_step(synced, age, NOW + HOUR, warnings)
    assert (step.warn, step.expired, step.next_check) == (None, False, synced + DAY)
    step = expiry_step(synced, age, synced + DAY + 1, warnings, step.sent)
    assert step.warn == DAY and step.next_check == synced + age - HOUR
    again = expiry_step(synced, age, synced + DAY + 2, warnings, step.sent)
    assert again.warn is None  # announced once
    step = expiry_step(synced, age, synced + age - 10, warnings, again.sent)
    assert step.warn == HOUR and step.next_check == synced + age
    step = expiry_step(synced, age, synced + age, warnings, step.sent)
    assert step.expired and step.announce_expired
    step = expiry_step(synced, age, synced + age + 5, warnings, step.sent)
    assert step.expired and not step.announce_expired


def test_only_the_most_urgent_warning_when_several_are_due() -> None:
    step = expiry_step(NOW, 2 * DAY, NOW + 2 * DAY - 60, (DAY, HOUR))
    assert step.warn == HOUR and DAY in step.sent


@given(
    st.floats(0, 10 * DAY),
    st.lists(st.floats(1.0, 5 * DAY), max_size=4, unique=True),
    st.lists(st.floats(0, 12 * DAY), min_size=1, max_size=12),
)
def test_each_warning_at_most_once_and_never_after_expiry(
    age: float, warnings: list[float], offsets: list[float]
) -> None:
    sent: frozenset[float] = frozenset()
    announced: list[float] = []
    expired_announcements = 0
    for offset in sorted(offsets):
        step = expiry_step(NOW, age, NOW + offset, warnings, sent)
        sent = step.sent
        if step.warn is not None:
            assert not step.expired
            assert NOW + age - step.warn <= NOW + offset  # due
            announced.append(step.warn)
        expired_announcements += step.announce_expired
        assert step.expired == (NOW + offset >= NOW + age)
    assert len(announced) == len(set(announced))
    assert expired_announcements <= 1


def test_unsynced_too_old() -> None:
    assert not unsynced_too_old(None, NOW, HOUR)
    assert not unsynced_too_old(NOW - 10, NOW, None)
    assert not unsynced_too_old(NOW - HOUR, NOW, HOUR)
    assert unsynced_too_old(NOW - HOUR - 1, NOW, HOUR)


def test_events_describe_themselves() -> None:
    soon = CacheEvent(CacheEventKind.EXPIRY_SOON, NOW, expires_at=NOW + HOUR, unsynced_records=2)
    assert "expires in 1.0 hours" in soon.describe() and "2 record(s)" in soon.describe()
    assert soon.is_warning
    evicted = CacheEvent(CacheEventKind.EVICTED, NOW, records=3, bytes=99, reason="quota")
    assert evicted.describe() == "3 record(s) (99 bytes) left the cache (quota)"
    assert not evicted.is_warning
    blocked = CacheEvent(CacheEventKind.EVICTION_BLOCKED, NOW, bytes=10, unsynced_records=1)
    assert "exceeded by 10 bytes" in blocked.describe()
    old = CacheEvent(
        CacheEventKind.UNSYNCED_OLD, NOW, unsynced_entries=4, oldest_unsynced_at=NOW - 2 * DAY
    )
    assert "4 change(s) have not been synced for 2.0 days" in old.describe()
