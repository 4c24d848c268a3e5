"""The token bucket behind the per-connection rate limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_sync.rate_limit import TokenBucket


def test_a_burst_then_the_refill_rate() -> None:
    bucket = TokenBucket(10)  # burst 20
    assert all(bucket.admit(0.0) for _ in range(20))
    assert not bucket.admit(0.0)
    assert bucket.admit(0.1)  # one token back after 1/rate
    assert not bucket.admit(0.1)
    assert all(bucket.admit(10.0) for _ in range(20))  # refilled, never beyond the burst
    assert not bucket.admit(10.0)


def test_a_refused_message_spends_nothing() -> None:
    bucket = TokenBucket(1, burst=1)
    assert bucket.admit(0.0)
    assert not bucket.admit(0.5)
    assert bucket.admit(1.0)


@pytest.mark.parametrize("rate", [0, -1])
def test_the_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        TokenBucket(rate)


@given(
    rate=st.floats(0.5, 1000),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_never_more_than_the_burst_plus_the_rate_over_any_window(
    rate: float, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate)
    now = 0.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        if bucket.admit(now):
            admitted.append(now)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= bucket.burst + rate * (admitted[j] - start) + 1e-6


@given(rate=st.floats(0.5, 1000), count=st.integers(1, 300))
def test_a_steady_sender_at_the_rate_is_never_refused(rate: float, count: int) -> None:
    bucket = TokenBucket(rate)
    assert all(bucket.admit(i / rate) for i in range(count))


def test_credit_lets_messages_through_beyond_the_burst_and_refill_keeps_it() -> None:
    bucket = TokenBucket(1, burst=2)
    assert bucket.admit(0.0) and bucket.admit(0.0)
    assert not bucket.admit(0.0)
    bucket.credit(5)  # e.g. a document's handshake: more than the burst
    assert bucket.admit(0.0)
    assert all(bucket.admit(10.0) for _ in range(4))  # a refill never takes credit away
    assert not bucket.admit(10.0)
