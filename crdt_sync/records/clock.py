"""Hybrid logical clock (HLC) for the last-write-wins field layer. Pure: the caller passes ``now``.

A timestamp is ``(physical ms, counter, replica id)``; timestamps are totally ordered in that
order, so two replicas never produce equal timestamps. The clock:

* never goes backwards, also across restarts (the store persists :meth:`HybridClock.state`);
* advances past every remote timestamp it observes, so an edit made after seeing a remote
  write always carries a greater timestamp;
* bounds clock skew: a remote timestamp more than ``max_skew_ms`` ahead of our physical clock
  is *not* adopted (our clock would otherwise run ahead forever). :meth:`observe` returns
  ``False`` for it; see ``docs/lww.md`` for the full rule, which also makes sure such a write
  cannot win forever.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidEdit

#: Default bound on how far ahead of our physical clock a remote timestamp may be (5 minutes).
DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000

_MS_DIGITS = 12  # hex digits of the physical part: good until the year 10889
_COUNTER_DIGITS = 6
#: Largest physical part a timestamp can hold.
MAX_MS = 16**_MS_DIGITS - 1
#: Largest counter a timestamp can hold; a clock that would pass it moves to the next ms.
MAX_COUNTER = 16**_COUNTER_DIGITS - 1


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """One HLC timestamp. Ordered by ``(ms, counter, replica)``.

    Raises :class:`InvalidEdit` if ``ms`` is outside ``0..MAX_MS``, ``counter`` outside
    ``0..MAX_COUNTER`` or ``replica`` is empty: such a timestamp has no fixed-width encoding,
    and its string order would not be its timestamp order.
    """

    ms: int
    counter: int
    replica: str

    def __post_init__(self) -> None:
        if not 0 <= self.ms <= MAX_MS:
            raise InvalidEdit(f"HLC physical time {self.ms} is outside 0..{MAX_MS}")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise InvalidEdit(f"HLC counter {self.counter} is outside 0..{MAX_COUNTER}")
        if not self.replica:
            raise InvalidEdit("an HLC timestamp needs a non-empty replica id")

    def successor(self, replica: str) -> Timestamp:
        """The smallest ``(ms, counter)`` after this one, stamped with ``replica``.

        The result is greater than ``self`` whatever the two replica ids are.
        """
        if self.counter < MAX_COUNTER:
            return Timestamp(self.ms, self.counter + 1, replica)
        return Timestamp(self.ms + 1, 0, replica)

    def encode(self) -> str:
        """Return the fixed-width string form whose string order equals timestamp order."""
        return f"{self.ms:0{_MS_DIGITS}x}.{self.counter:0{_COUNTER_DIGITS}x}.{self.replica}"

    @classmethod
    def decode(cls, text: str) -> Timestamp:
        """Parse :meth:`encode`'s output. Raises :class:`InvalidEdit` on malformed input.

        Only the canonical form is accepted (lowercase hex of the exact widths, non-empty
        replica): two different strings never decode to the same timestamp, so peers that
        compare keys as strings (Yjs) and peers that compare decoded timestamps agree.
        """
        match = _CANONICAL.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidEdit(f"not an HLC timestamp: {text!r}")
        return cls(int(match[1], 16), int(match[2], 16), match[3])

    def __str__(self) -> str:
        return self.encode()


class HybridClock:
    """A hybrid logical clock owned by one replica.

    Args:
        replica: this replica's id (the tie-breaker inside timestamps).
        last: the last timestamp this clock issued or adopted (from :meth:`state`), if any.
        max_skew_ms: how far ahead of ``now`` a remote timestamp may be and still be adopted.
    """

    def __init__(
        self,
        replica: str,
        last: Timestamp | None = None,
        *,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        if not replica:
            raise InvalidEdit("an HLC needs a non-empty replica id")
        self.replica = replica
        self.max_skew_ms = max_skew_ms
        self._ms = last.ms if last else 0
        self._counter = last.counter if last else 0
        # The greatest timestamp :meth:`after` stepped to past a skewed winner (not adopted by
        # the clock itself); later steps go beyond it, so no two writes share a timestamp.
        self._stepped: Timestamp | None = None

    def state(self) -> Timestamp:
        """The clock's current position, to persist and pass back as ``last`` after a restart."""
        return Timestamp(self._ms, self._counter, self.replica)

    def tick(self, now_ms: int) -> Timestamp:
        """Issue a timestamp for a local event at physical time ``now_ms``.

        The result is greater than every timestamp issued or adopted before.
        """
        if now_ms > self._ms:
            ts = Timestamp(now_ms, 0, self.replica)
        else:
            ts = Timestamp(self._ms, self._counter, self.replica).successor(self.replica)
        self._ms, self._counter = ts.ms, ts.counter
        return ts

    def after(self, other: Timestamp, now_ms: int) -> Timestamp:
        """Issue a local timestamp that is also greater than ``other`` (which may be skewed).

        Used when overwriting a field whose current winner is ``other``: the new write must win
        over what its author saw, even if ``other`` came from a clock running ahead. The clock
        itself only adopts ``other`` within the skew bound; past it, the result is the timestamp
        just after ``other`` (and after any earlier such result of this clock, so results are
        never repeated), while :meth:`tick` and :meth:`state` keep following our own time.
        """
        self.observe(other, now_ms)
        ts = self.tick(now_ms)
        if ts > other:
            return ts
        # ``other`` is beyond the skew bound: step just past it without moving our clock there
        # (the clock keeps the tick it just issued, below ``other``).
        stepped = other.successor(self.replica)
        if self._stepped is not None and stepped <= self._stepped:
            stepped = self._stepped.successor(self.replica)
        self._stepped = stepped
        return stepped

    def observe(self, remote: Timestamp, now_ms: int) -> bool:
        """Advance past a remote timestamp. Returns ``False`` (and ignores it) if it is skewed.

        A timestamp more than ``max_skew_ms`` ahead of ``now_ms`` is not adopted.
        """
        if remote.ms > now_ms + self.max_skew_ms:
            return False
        if (remote.ms, remote.counter) > (self._ms, self._counter):
            self._ms, self._counter = remote.ms, remote.counter
        return True


#: The canonical encoding: fixed-width lowercase hex ms and counter, a non-empty replica id.
_CANONICAL = re.compile(
    rf"([0-9a-f]{{{_MS_DIGITS}}})\.([0-9a-f]{{{_COUNTER_DIGITS}}})\.(.+)", re.DOTALL | re.ASCII
)
