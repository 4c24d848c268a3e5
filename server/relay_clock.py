"""The relay's clock for subscriptions, and the test-only way to move it.

The relay evaluates rolling windows (``field("date").window(0, 3, tz=...)``) at its own clock
in the time zone the replica's subscription gives: the relay decides what a replica receives,
so the relay's clock decides, and a device whose clock is wrong cannot widen its window.

**Test only**: ``CRDT_SYNC_TEST_NOW=2026-12-02T09:00:00+00:00 crdt-sync serve ...`` starts
the relay's clock at that time (then it runs on with the real elapsed time), so that an
end-to-end test can restart a relay days later without waiting days. Never set it in
production.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

#: Environment variable that starts the relay's clock at a given time (tests only).
TEST_NOW_ENV = "CRDT_SYNC_TEST_NOW"


def system_clock() -> dt.datetime:
    """The current time (UTC)."""
    return dt.datetime.now(dt.UTC)


def relay_clock(start: str | None) -> Callable[[], dt.datetime]:
    """The system clock, or (``start``: an ISO-8601 time with its offset) a clock that starts
    at ``start`` and runs on with the real elapsed time.

    Raises:
        ValueError: ``start`` is not an ISO-8601 time with an offset.
    """
    if not start:
        return system_clock
    origin = dt.datetime.fromisoformat(start)
    if origin.tzinfo is None:
        raise ValueError(f"${TEST_NOW_ENV} needs a time with its offset, got {start!r}")
    began = time.monotonic()

    def clock() -> dt.datetime:
        return origin + dt.timedelta(seconds=time.monotonic() - began)

    return clock
