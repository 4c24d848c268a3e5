"""The hybrid logical clock: monotonic, persistent, adopting remote time within a skew bound."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import InvalidEdit
from crdt_sync.records.clock import (
    DEFAULT_MAX_SKEW_MS,
    MAX_COUNTER,
    MAX_MS,
    HybridClock,
    Timestamp,
)

NOW = 1_700_000_000_000  # a plausible Unix time in ms

replicas = st.text(min_size=1, max_size=8)
timestamps = st.builds(
    Timestamp,
    ms=st.integers(0, MAX_MS),
    counter=st.integers(0, MAX_COUNTER),
    replica=replicas,
)


# -- Timestamp ------------------------------------------------------------------------------


def test_timestamp_orders_by_ms_then_counter_then_replica() -> None:
    assert Timestamp(1, 9, "z") < Timestamp(2, 0, "a")
    assert Timestamp(1, 1, "z") < Timestamp(1, 2, "a")
    assert Timestamp(1, 1, "a") < Timestamp(1, 1, "b")


def test_encode_is_fixed_width_lowercase_hex() -> None:
    ts = Timestamp(NOW, 10, "tech-17")
    assert ts.encode() == f"{NOW:012x}.00000a.tech-17"
    assert str(ts) == ts.encode()


@settings(max_examples=300, deadline=None)
@given(timestamps)
def test_decode_inverts_encode(ts: Timestamp) -> None:
    assert Timestamp.decode(ts.encode()) == ts


@settings(max_examples=300, deadline=None)
@given(timestamps, timestamps)
def test_encoded_string_order_is_timestamp_order(a: Timestamp, b: Timestamp) -> None:
    assert (a.encode() < b.encode()) == (a < b)
    assert (a.encode() == b.encode()) == (a == b)


def test_replica_id_may_contain_dots() -> None:
    ts = Timestamp(5, 1, "eu.west.device-3")
    assert Timestamp.decode(ts.encode()) == ts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "00000000000a.000000",  # no replica
        "00000000000a.000000.",  # empty replica
        "0000000000a.000000.r",  # ms too short
        "000000000000a.000000.r",  # ms too long
        "00000000000a.00000.r",  # counter too short
        "00000000000A.000000.r",  # uppercase: a second spelling of the same timestamp
        "+0000000000a.000000.r",  # a sign int() would accept
        "0000_000000a.000000.r",  # an underscore int() would accept
        "00000000000g.000000.r",  # not hex
        " 0000000000a.000000.r",
    ],
)
def test_decode_refuses_non_canonical_text(text: str) -> None:
    with pytest.raises(InvalidEdit):
        Timestamp.decode(text)


@pytest.mark.parametrize(
    ("ms", "counter", "replica"),
    [(-1, 0, "r"), (MAX_MS + 1, 0, "r"), (0, -1, "r"), (0, MAX_COUNTER + 1, "r"), (0, 0, "")],
)
def test_timestamp_refuses_values_without_a_fixed_width_encoding(
    ms: int, counter: int, replica: str
) -> None:
    with pytest.raises(InvalidEdit):
        Timestamp(ms, counter, replica)


def test_successor_carries_a_full_counter_into_the_next_ms() -> None:
    assert Timestamp(7, 3, "b").successor("a") == Timestamp(7, 4, "a")
    assert Timestamp(7, MAX_COUNTER, "b").successor("a") == Timestamp(8, 0, "a")


# -- HybridClock.tick -----------------------------------------------------------------------


def test_clock_needs_a_replica_id() -> None:
    with pytest.raises(InvalidEdit):
        HybridClock("")


def test_tick_follows_physical_time() -> None:
    clock = HybridClock("a")
    assert clock.tick(NOW) == Timestamp(NOW, 0, "a")
    assert clock.tick(NOW + 5) == Timestamp(NOW + 5, 0, "a")


def test_tick_counts_within_one_ms() -> None:
    clock = HybridClock("a")
    assert [clock.tick(NOW).counter for _ in range(3)] == [0, 1, 2]


def test_tick_never_goes_back_when_physical_time_does() -> None:
    clock = HybridClock("a")
    first = clock.tick(NOW)
    second = clock.tick(NOW - 60_000)  # the wall clock was set back a minute
    assert second > first
    assert second.ms == NOW


def test_tick_moves_to_the_next_ms_when_the_counter_is_full() -> None:
    clock = HybridClock("a", Timestamp(NOW, MAX_COUNTER, "a"))
    assert clock.tick(NOW) == Timestamp(NOW + 1, 0, "a")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**13), min_size=1, max_size=50))
def test_ticks_strictly_increase_whatever_physical_time_does(nows: list[int]) -> None:
    clock = HybridClock("a")
    issued = [clock.tick(now) for now in nows]
    assert all(x < y for x, y in pairwise(issued))
    assert all(ts.ms >= now for ts, now in zip(issued, nows, strict=True))


# -- persistence ----------------------------------------------------------------------------


def test_state_round_trip_survives_a_restart() -> None:
    clock = HybridClock("a")
    last = None
    for now in (NOW, NOW, NOW, NOW + 1):
        last = clock.tick(now)
    saved = clock.state()
    assert saved == last
    # After a restart whose wall clock is behind, the clock continues from the saved state.
    restarted = HybridClock("a", Timestamp.decode(saved.encode()))
    assert restarted.state() == saved
    assert restarted.tick(NOW - 10_000) > saved


def test_state_includes_adopted_remote_time() -> None:
    clock = HybridClock("a")
    clock.tick(NOW)
    assert clock.observe(Timestamp(NOW + 1000, 4, "b"), NOW)
    restarted = HybridClock("a", clock.state())
    assert restarted.tick(NOW) > Timestamp(NOW + 1000, 4, "b")


def test_fresh_state_is_zero() -> None:
    assert HybridClock("a").state() == Timestamp(0, 0, "a")


# -- observe --------------------------------------------------------------------------------


def test_observe_adopts_a_remote_time_within_the_skew_bound() -> None:
    clock = HybridClock("a")
    clock.tick(NOW)
    remote = Timestamp(NOW + DEFAULT_MAX_SKEW_MS, 7, "b")
    assert clock.observe(remote, NOW) is True
    assert clock.tick(NOW) > remote


def test_observe_keeps_a_later_own_time() -> None:
    clock = HybridClock("a")
    mine = clock.tick(NOW)
    assert clock.observe(Timestamp(NOW - 1000, 3, "b"), NOW) is True
    assert clock.state() == mine


def test_observe_refuses_a_remote_time_beyond_the_skew_bound() -> None:
    clock = HybridClock("a", max_skew_ms=1000)
    before = clock.tick(NOW)
    assert clock.observe(Timestamp(NOW + 1001, 0, "b"), NOW) is False
    assert clock.state() == before
    assert clock.tick(NOW + 1).ms == NOW + 1


def test_observe_equal_time_from_a_greater_replica_still_ticks_past_it() -> None:
    clock = HybridClock("a")
    clock.tick(NOW)
    remote = Timestamp(NOW, 0, "zz")
    assert clock.observe(remote, NOW)
    assert clock.tick(NOW) > remote


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(NOW - 10**6, NOW + 10**6), timestamps),
        max_size=40,
    )
)
def test_after_any_accepted_observation_the_next_tick_is_greater(
    events: list[tuple[bool, int, Timestamp]],
) -> None:
    clock = HybridClock("me", max_skew_ms=DEFAULT_MAX_SKEW_MS)
    last = clock.state()
    for is_tick, now, remote in events:
        if is_tick:
            ts = clock.tick(now)
            assert ts > last
            last = ts
        else:
            adopted = clock.observe(remote, now)
            assert adopted == (remote.ms <= now + DEFAULT_MAX_SKEW_MS)
            if adopted:
                ts = clock.tick(now)
                assert ts > remote and ts > last
                last = ts


# -- after ----------------------------------------------------------------------------------


def test_after_an_older_winner_is_a_plain_tick() -> None:
    clock = HybridClock("a")
    assert clock.after(Timestamp(NOW - 5, 0, "b"), NOW) == Timestamp(NOW, 0, "a")


def test_after_a_winner_within_skew_adopts_it() -> None:
    clock = HybridClock("a")
    winner = Timestamp(NOW + 2000, 3, "b")
    ts = clock.after(winner, NOW)
    assert ts > winner
    assert ts.replica == "a"
    assert clock.state() == ts  # the clock moved there: within the bound that is allowed


def test_after_a_skewed_winner_beats_it_without_moving_the_clock() -> None:
    clock = HybridClock("a", max_skew_ms=1000)
    clock.tick(NOW)
    skewed = Timestamp(NOW + 3_600_000, 42, "fast")  # an hour ahead
    ts = clock.after(skewed, NOW)
    assert ts > skewed
    assert ts == Timestamp(skewed.ms, skewed.counter + 1, "a")
    assert clock.state().ms == NOW  # not dragged an hour ahead
    assert clock.tick(NOW + 1).ms == NOW + 1


def test_steps_past_skewed_winners_never_repeat() -> None:
    # Two fields whose winners are skewed entries with the same (ms, counter) from two replicas:
    # stepping past each must still give two different timestamps.
    clock = HybridClock("me", max_skew_ms=1000)
    far = NOW + 3_600_000
    first = clock.after(Timestamp(far, 0, "f1"), NOW)
    second = clock.after(Timestamp(far, 0, "f2"), NOW)
    third = clock.after(Timestamp(far - 50, 7, "f3"), NOW)
    assert first == Timestamp(far, 1, "me")
    assert first < second < third
    assert third > Timestamp(far - 50, 7, "f3")
    assert clock.state().ms == NOW


def test_after_a_skewed_winner_with_a_full_counter() -> None:
    clock = HybridClock("a", max_skew_ms=0)
    skewed = Timestamp(NOW + 10, MAX_COUNTER, "fast")
    assert clock.after(skewed, NOW) == Timestamp(NOW + 11, 0, "a")


@settings(max_examples=200, deadline=None)
@given(timestamps, st.integers(0, 10**13), st.integers(0, 10**7))
def test_after_is_always_greater_than_its_argument_and_the_clock(
    other: Timestamp, now: int, skew: int
) -> None:
    clock = HybridClock("me", max_skew_ms=skew)
    before = clock.tick(now)
    if other.ms == MAX_MS and other.counter == MAX_COUNTER:
        return  # no timestamp exists after it
    ts = clock.after(other, now)
    assert ts > other
    assert ts > before
    assert ts.replica == "me"
    if other.ms > now + skew:
        # Skewed: not adopted. The clock only ticked once, at its own time.
        assert clock.state() == Timestamp(now, before.counter + 1, "me")
