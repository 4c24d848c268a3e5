"""The last-write-wins layer on a pycrdt map: policy, encoding, winners, conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Map

from crdt_sync import lww
from crdt_sync.clock import MAX_MS, Timestamp
from crdt_sync.errors import InvalidEdit

T0 = 1_763_890_500_000  # 2025-11-23T09:35:00Z


def ts(ms: int, replica: str = "a", counter: int = 0) -> Timestamp:
    return Timestamp(T0 + ms, counter, replica)


def new_doc() -> tuple[Doc[Any], Map[Any]]:
    doc: Doc[Any] = Doc()
    return doc, doc.get(lww.LWW_ROOT, type=Map)


def sync(*docs: Doc[Any]) -> None:
    """Bring every doc up to date with every other."""
    for target in docs:
        for source in docs:
            if source is not target:
                target.apply_update(source.get_update(target.get_state()))


def write(doc: Doc[Any], field: str, at: Timestamp, value: Any = None, **kw: Any) -> lww.LwwEntry:
    with doc.transaction():
        return lww.write(doc.get(lww.LWW_ROOT, type=Map), field, at, value, **kw)


# -- policy ---------------------------------------------------------------------------------


def test_policy_star_covers_every_field_of_a_collection() -> None:
    policy = lww.LwwPolicy({"jobs": "*"})
    assert policy.is_lww("jobs", "status")
    assert policy.is_lww("jobs", "anything")
    assert policy.covers("jobs")
    assert not policy.is_lww("contacts", "status")
    assert not policy.covers("contacts")


def test_policy_field_list_covers_only_those_fields() -> None:
    policy = lww.LwwPolicy({"jobs": ["status", "assignee"], "contacts": ()})
    assert policy.is_lww("jobs", "status")
    assert policy.is_lww("jobs", "assignee")
    assert not policy.is_lww("jobs", "notes")
    assert policy.covers("jobs")
    assert not policy.is_lww("contacts", "status")


def test_empty_policy_covers_nothing() -> None:
    assert not lww.LwwPolicy().is_lww("jobs", "status")
    assert not lww.LwwPolicy(None).covers("jobs")


def test_policy_refuses_a_single_field_name_string() -> None:
    # "status" would otherwise be read as the fields "s", "t", "a", "u".
    with pytest.raises(InvalidEdit):
        lww.LwwPolicy({"jobs": "status"})


# -- encoding -------------------------------------------------------------------------------


def test_write_encodes_one_entry_keyed_by_timestamp() -> None:
    doc, root = new_doc()
    entry = write(doc, "status", ts(1), "open")
    assert dict(root.items()) == {ts(1).encode(): {"f": "status", "v": "open", "b": None}}
    assert entry == lww.LwwEntry("status", ts(1), "open", False, None)


def test_overwrite_records_its_base_and_removes_the_older_entry() -> None:
    doc, root = new_doc()
    write(doc, "status", ts(1), "open")
    entry = write(doc, "status", ts(2, "b"), "closed")
    assert dict(root.items()) == {
        ts(2, "b").encode(): {"f": "status", "v": "closed", "b": ts(1).encode()}
    }
    assert entry.base == ts(1)


def test_delete_writes_a_deletion_entry() -> None:
    doc, root = new_doc()
    write(doc, "status", ts(1), "open")
    entry = write(doc, "status", ts(2), deleted=True)
    assert dict(root.items()) == {ts(2).encode(): {"f": "status", "d": True, "b": ts(1).encode()}}
    assert entry.deleted and entry.value is None
    assert lww.values(root) == {}
    assert lww.winners(root)["status"].deleted


def test_fields_are_independent() -> None:
    doc, root = new_doc()
    write(doc, "status", ts(1), "open")
    write(doc, "priority", ts(2), 3)
    write(doc, "status", ts(3), "done")
    assert lww.values(root) == {"status": "done", "priority": 3.0}
    assert len(root) == 2


def test_values_may_be_json_like() -> None:
    doc, _ = new_doc()
    value = {"lat": 48.85, "tags": ["a", "b"], "photo": b"\x89PNG", "none": None}
    write(doc, "geo", ts(1), value)
    peer: Doc[Any] = Doc()
    peer.apply_update(doc.get_update())
    got = lww.values(peer.get(lww.LWW_ROOT, type=Map))["geo"]
    assert got == value


def test_write_refuses_a_timestamp_not_after_the_current_winner() -> None:
    doc, _ = new_doc()
    write(doc, "status", ts(5), "open")
    with pytest.raises(InvalidEdit):
        write(doc, "status", ts(5), "again")
    with pytest.raises(InvalidEdit):
        write(doc, "status", ts(4, "z"), "older")


def test_write_refuses_a_timestamp_already_used_by_another_field() -> None:
    doc, root = new_doc()
    write(doc, "status", ts(5), "open")
    with pytest.raises(InvalidEdit):
        write(doc, "priority", ts(5), 1)
    assert lww.values(root) == {"status": "open"}


def test_malformed_entries_are_skipped() -> None:
    doc, root = new_doc()
    write(doc, "status", ts(1), "open")
    with doc.transaction():
        root["not-a-timestamp"] = {"f": "status", "v": "evil"}
        root[ts(9).encode().upper()] = {"f": "status", "v": "uppercase key"}
        root[ts(8).encode()] = "not a dict"
        root[ts(7).encode()] = {"v": "no field"}
        root[ts(6).encode()] = {"f": 3, "v": "field not a str"}
        root[ts(10).encode()] = {"f": "status", "v": "bad base", "b": "nope"}
    assert [e.ts for e in lww.entries(root)] == [ts(1)]
    assert lww.values(root) == {"status": "open"}


def test_entry_with_a_non_string_base_reads_as_no_base() -> None:
    doc, root = new_doc()
    with doc.transaction():
        root[ts(1).encode()] = {"f": "status", "v": "x", "b": 12}
    assert next(lww.entries(root)).base is None


# -- concurrency ----------------------------------------------------------------------------


def test_concurrent_writes_keep_both_entries_and_the_greatest_wins_everywhere() -> None:
    a, root_a = new_doc()
    b, root_b = new_doc()
    write(a, "status", ts(1, "a"), "open")
    write(b, "status", ts(1, "b"), "closed")  # same ms: the replica id breaks the tie
    sync(a, b)
    for root in (root_a, root_b):
        assert len(root) == 2
        assert lww.values(root) == {"status": "closed"}


def test_concurrent_write_and_delete() -> None:
    a, root_a = new_doc()
    b, root_b = new_doc()
    write(a, "status", ts(1), "open")
    sync(a, b)
    write(a, "status", ts(2, "a"), deleted=True)
    write(b, "status", ts(3, "b"), "reopened")
    sync(a, b)
    assert lww.values(root_a) == lww.values(root_b) == {"status": "reopened"}
    [conflict] = lww.conflicts(root_a)
    assert conflict.lost.deleted and conflict.won.value == "reopened"


def test_winner_is_the_greatest_key_by_plain_string_comparison() -> None:
    # What a Yjs peer does: group by f, take the greatest key as a string.
    doc, root = new_doc()
    for i, (ms, replica) in enumerate([(3, "b"), (3, "a"), (12, "a"), (2, "z")]):
        with doc.transaction():
            root[ts(ms, replica, counter=i).encode()] = {"f": "x", "v": i, "b": None}
    greatest = max(root.keys())
    assert root[greatest]["v"] == lww.values(root)["x"] == 2


def test_conflicts_report_each_concurrent_loser_still_present() -> None:
    a, root_a = new_doc()
    b, root_b = new_doc()
    write(a, "status", ts(1, "a"), "open")
    write(b, "status", ts(2, "b"), "closed")
    sync(a, b)
    for root in (root_a, root_b):
        [conflict] = lww.conflicts(root)
        assert conflict.field == "status"
        assert (conflict.lost.value, conflict.lost.ts) == ("open", ts(1, "a"))
        assert (conflict.won.value, conflict.won.ts) == ("closed", ts(2, "b"))


def test_an_overwrite_is_not_a_conflict() -> None:
    a, root_a = new_doc()
    b, _ = new_doc()
    write(a, "status", ts(1, "a"), "open")
    sync(a, b)
    write(b, "status", ts(2, "b"), "closed")
    sync(a, b)
    assert lww.conflicts(root_a) == []


def test_a_loser_behind_an_overwrite_of_another_write_is_still_a_conflict() -> None:
    # C and A write concurrently; B sees only A's write and overwrites it. C's write was never
    # seen by anyone who wrote after it: it lost, concurrently, to B's (which has base A).
    a, root_a = new_doc()
    b, _ = new_doc()
    c, _ = new_doc()
    write(c, "status", ts(1, "c"), "from c")
    write(a, "status", ts(2, "a"), "from a")
    sync(a, b)
    write(b, "status", ts(3, "b"), "from b")
    sync(a, b, c)
    [conflict] = lww.conflicts(root_a)
    assert conflict.lost.value == "from c"
    assert conflict.won.value == "from b"


def test_writing_the_field_again_resolves_its_conflicts() -> None:
    a, root_a = new_doc()
    b, root_b = new_doc()
    write(a, "status", ts(1, "a"), "open")
    write(b, "status", ts(2, "b"), "closed")
    sync(a, b)
    write(a, "status", ts(3, "a"), "closed, checked")
    sync(a, b)
    assert lww.conflicts(root_a) == lww.conflicts(root_b) == []
    assert len(root_b) == 1


def test_conflicts_are_ordered_by_field_then_time() -> None:
    a, root_a = new_doc()
    b, _ = new_doc()
    c, _ = new_doc()
    write(a, "z", ts(1, "a"), 1)
    write(b, "z", ts(2, "b"), 2)
    write(c, "z", ts(3, "c"), 3)
    write(c, "m", ts(1, "c"), "x")
    write(a, "m", ts(5, "a"), "y")
    sync(a, b, c)
    got = [(c.field, c.lost.value, c.won.value) for c in lww.conflicts(root_a)]
    assert got == [("m", "x", "y"), ("z", 1, 3), ("z", 2, 3)]


def test_describe_says_what_lost_to_what_from_whom_and_when() -> None:
    won = lww.LwwEntry("status", Timestamp(T0, 0, "office"), "closed", False, None)
    lost = lww.LwwEntry("status", Timestamp(T0 - 5, 0, "tech-17"), "open", False, None)
    assert lww.Conflict("status", lost, won).describe() == (
        "status: value 'open' from replica tech-17 was overwritten by 'closed' "
        "from replica office at 2025-11-23T09:35:00.000Z"
    )


def test_describe_names_deletions() -> None:
    won = lww.LwwEntry("status", Timestamp(T0, 0, "b"), None, True, None)
    lost = lww.LwwEntry("status", Timestamp(T0 - 5, 0, "a"), 3, False, None)
    text = lww.Conflict("status", lost, won).describe()
    assert "value 3 from replica a was overwritten by a deletion from replica b" in text
    text = lww.Conflict("status", won, lost).describe()
    assert text.startswith("status: value a deletion from replica b")


def test_describe_of_a_time_beyond_the_calendar_falls_back_to_ms() -> None:
    won = lww.LwwEntry("s", Timestamp(MAX_MS, 0, "b"), 2, False, None)
    lost = lww.LwwEntry("s", Timestamp(T0, 0, "a"), 1, False, None)
    assert lww.Conflict("s", lost, won).describe().endswith(f"at {MAX_MS} ms")
