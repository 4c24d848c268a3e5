"""backoff(): capped exponential bounds, full jitter, reproducible with a seeded rng."""

from __future__ import annotations

import itertools
import random

import pytest

from crdt_sync.backoff import backoff


class BoundRng(random.Random):
    """An rng whose uniform(a, b) returns b: exposes the bound of each delay."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_bounds_grow_exponentially_then_cap() -> None:
    delays = list(itertools.islice(backoff(0.5, 2.0, 5.0, rng=BoundRng()), 7))
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_delays_use_the_full_jitter_window() -> None:
    delays = list(itertools.islice(backoff(1.0, 2.0, 8.0, rng=random.Random(7)), 2000))
    capped = delays[10:]
    assert all(0.0 <= d <= 8.0 for d in capped)
    # Full jitter: spread over [0, cap], not bunched near the cap ("equal jitter") or at it.
    assert min(capped) < 0.5
    assert max(capped) > 7.5
    assert 3.5 < sum(capped) / len(capped) < 4.5


def test_each_delay_stays_under_its_own_bound() -> None:
    bounds = itertools.islice(backoff(0.25, 3.0, 10.0, rng=BoundRng()), 20)
    delays = itertools.islice(backoff(0.25, 3.0, 10.0, rng=random.Random(1)), 20)
    for bound, delay in zip(bounds, delays, strict=True):
        assert 0.0 <= delay <= bound


def test_seeded_rng_reproduces_delays_and_a_new_iterator_resets() -> None:
    first = list(itertools.islice(backoff(rng=random.Random(42)), 10))
    again = list(itertools.islice(backoff(rng=random.Random(42)), 10))
    assert first == again
    reset = backoff(0.5, 2.0, 60.0, rng=BoundRng())
    assert next(reset) == 0.5


def test_long_outage_does_not_overflow() -> None:
    delays = backoff(1.0, 10.0, 30.0, rng=BoundRng())
    assert list(itertools.islice(delays, 10_000))[-1] == 30.0


@pytest.mark.parametrize(
    ("initial", "factor", "max_delay"), [(0.0, 2.0, 1.0), (1.0, 0.5, 2.0), (2.0, 2.0, 1.0)]
)
def test_bad_arguments_are_refused(initial: float, factor: float, max_delay: float) -> None:
    with pytest.raises(ValueError):
        next(backoff(initial, factor, max_delay))
