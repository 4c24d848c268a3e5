"""Reconnect delays: capped exponential backoff with full jitter, as a pure iterator.

The policy only; the client runtime does the waiting. Each delay is drawn uniformly from
``[0, min(max_delay, initial * factor ** attempt)]`` ("full jitter": replicas that lost the
relay at the same moment spread their reconnects over the whole window instead of arriving
in waves). Reset after a successful connection by creating a new iterator.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_INITIAL_DELAY",
    "DEFAULT_MAX_DELAY",
    "backoff",
]

#: Upper bound of the first delay, in seconds.
DEFAULT_INITIAL_DELAY = 0.5

#: Growth of the upper bound per attempt.
DEFAULT_FACTOR = 2.0

#: Cap of the upper bound, in seconds.
DEFAULT_MAX_DELAY = 60.0


def backoff(
    initial: float = DEFAULT_INITIAL_DELAY,
    factor: float = DEFAULT_FACTOR,
    max_delay: float = DEFAULT_MAX_DELAY,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield the delay to wait before each reconnect attempt, forever.

    The n-th delay (from 0) is uniform in ``[0, min(max_delay, initial * factor ** n)]``.

    Args:
        initial: the upper bound of the first delay (> 0).
        factor: how much the bound grows per attempt (>= 1).
        max_delay: the cap of the bound (>= ``initial``).
        rng: the random source (pass a seeded ``random.Random`` for reproducible delays);
            a new unseeded one by default.

    Raises:
        ValueError: the arguments violate the bounds above (raised on the first ``next()``).
    """
    if not initial > 0:
        raise ValueError(f"initial must be > 0, got {initial}")
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if not max_delay >= initial:
        raise ValueError(f"max_delay must be >= initial, got {max_delay} < {initial}")
    rng = rng if rng is not None else random.Random()
    bound = initial
    while True:
        yield rng.uniform(0.0, bound)
        # Stop multiplying once capped: no float overflow however long the outage.
        bound = min(max_delay, bound * factor)
