"""RecordClocks: what the relay has of each record, committed or being committed."""

from __future__ import annotations

from typing import Any

from crdt_sync.server.record_clocks import RecordClocks
from pycrdt import Doc, Text

from crdt_sync.yjs.updates import UpdateClocks, read_update_clocks

KEY = ("acme", "jobs", "job-1")


def _updates(count: int, client_id: int = 7) -> list[bytes]:
    doc: Doc[Any] = Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    notes = doc.get("notes", type=Text)
    for i in range(count):
        notes += f"{i}é"  # two clocks each (ASCII digit below 10, then é)
    return updates


def _clocks(update: bytes) -> UpdateClocks:
    return read_update_clocks(update)


def test_loaded_from_the_committed_state_plus_what_is_being_committed() -> None:
    first, second, third = _updates(3)
    clocks = RecordClocks()
    assert clocks.get(KEY) is None
    in_flight = _clocks(second)
    clocks.accept(KEY, in_flight)  # accepted before the state was read
    before = clocks.uncommitted(KEY)
    assert before == (in_flight,)
    clocks.accept(KEY, late := _clocks(third))  # accepted while it was read
    assert clocks.load(KEY, first, before) == {7: 6}
    assert clocks.get(KEY) == {7: 6}
    clocks.settled(KEY, in_flight, stored=True)
    clocks.settled(KEY, late, stored=True)
    assert clocks.uncommitted(KEY) == ()
    assert clocks.get(KEY) == {7: 6}


def test_a_state_committed_meanwhile_or_no_state_at_all() -> None:
    first, second = _updates(2)
    clocks = RecordClocks()
    committed = _clocks(second)
    clocks.accept(KEY, committed)
    before = clocks.uncommitted(KEY)
    clocks.settled(KEY, committed, stored=True)  # committed while the state was read
    assert clocks.load(KEY, first, before) == {7: 4}
    other = ("acme", "jobs", "new")
    assert clocks.load(other, None, ()) == {}


def test_accepted_updates_extend_a_loaded_vector_and_a_failed_commit_forgets_it() -> None:
    first, second = _updates(2)
    clocks = RecordClocks()
    clocks.load(KEY, first, ())
    accepted = _clocks(second)
    clocks.accept(KEY, accepted)
    assert clocks.get(KEY) == {7: 4}
    clocks.settled(KEY, accepted, stored=False)
    assert clocks.get(KEY) is None  # loaded again from what was committed


def test_settled_out_of_order_and_bounded_memory() -> None:
    updates = [_clocks(u) for u in _updates(3)]
    clocks = RecordClocks(max_records=2)
    for clock in updates:
        clocks.accept(KEY, clock)
    clocks.settled(KEY, updates[1], stored=True)
    assert clocks.uncommitted(KEY) == (updates[0], updates[2])
    for n in range(3):
        clocks.load(("acme", "jobs", f"r{n}"), None, ())
    assert clocks.get(("acme", "jobs", "r0")) is None  # least recently used, forgotten
    assert clocks.get(("acme", "jobs", "r2")) == {}
