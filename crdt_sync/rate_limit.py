"""A token bucket: the per-connection message rate limit (docs/protocol.md, "Limits").

Pure (the caller passes the time): the native protocol core and the relay's Yjs and Hocuspocus
links use the same one.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]

_EPSILON = 1e-9


class TokenBucket:
    """Allows ``rate`` messages per second in the long run and bursts of ``burst``.

    Args:
        rate: tokens added per second (messages per second in the long run); > 0.
        burst: the bucket's size, full at the start; defaults to ``2 * rate``.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, not {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else 2 * rate)
        self._tokens = self.burst
        self._refilled_at: float | None = None

    def admit(self, now: float) -> bool:
        """Spend one token for a message arriving at ``now`` (seconds, monotonic); False when
        the bucket is empty (the message is over the limit and nothing is spent)."""
        if self._refilled_at is not None and self._tokens < self.burst:
            elapsed = max(0.0, now - self._refilled_at)
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._refilled_at = now
        if self._tokens < 1.0 - _EPSILON:  # a sender exactly at the rate never loses to rounding
            return False
        self._tokens -= 1.0
        return True

    def credit(self, count: float) -> None:
        """Add ``count`` tokens, beyond the burst if need be: messages a legitimate event
        makes the peer send (e.g. the handshake of a document it just opened)."""
        self._tokens += count
