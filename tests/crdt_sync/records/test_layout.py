"""The record layout v2 (crdt_sync.records.layout): what a slot shows, what lost, how writers
replace what they saw, content roots, kept conflicts, and records written by layout v1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from crdt_sync.records.clock import HybridClock, Timestamp
from crdt_sync.records.layout import (
    CONFLICTS_ROOT,
    FIELDS_ROOT,
    KEPT_CONFLICTS,
    Conflict,
    Written,
    array_root_name,
    layout_of,
    parse_root_name,
    read_fields,
    slot_name,
    text_root_name,
)
from crdt_sync.records.lww import LWW_ROOT, Kind, LwwPolicy
from crdt_sync.records.record import RecordEditor

T0 = 1_763_890_500_000  # 2025-11-23T09:35:00Z
POLICY = LwwPolicy({"jobs": ["status"]})


class Replica:
    """One replica of one record: a doc with a client id, an HLC with a settable time."""

    def __init__(self, name: str, now: int = T0, client_id: int | None = None) -> None:
        self.name = name
        self.doc: Doc[Any] = Doc(client_id=client_id) if client_id else Doc()
        self.clock = HybridClock(name)
        self.now = now

    def stamp(self, current: Timestamp | None) -> Timestamp:
        return self.clock.after(current, self.now) if current else self.clock.tick(self.now)

    @contextmanager
    def edit(self) -> Iterator[RecordEditor]:
        with self.doc.transaction():
            yield RecordEditor(self.doc, "jobs", POLICY, self.stamp)
        self.now += 1

    def read(self) -> dict[str, Any]:
        return read_fields(self.doc)

    def conflicts(self) -> list[Conflict]:
        return layout_of(self.doc).conflicts()


def sync(*replicas: Replica) -> None:
    """Bring every replica up to date with every other."""
    for target in replicas:
        for source in replicas:
            if source is not target:
                target.doc.apply_update(source.doc.get_update(target.doc.get_state()))


def pair(**kw: Any) -> tuple[Replica, Replica]:
    return Replica("a", **kw), Replica("b", now=T0 + 10)


# -- root names -----------------------------------------------------------------------------


def test_content_roots_are_named_after_their_slot() -> None:
    assert text_root_name(("notes",)) == 'text:["notes"]'
    assert array_root_name(("site", "tags")) == 'array:["site","tags"]'
    assert slot_name(("é", 'a"b')) == '["é","a\\"b"]'
    for slot in [("notes",), ("a", "b"), ("é 😀", "x.y", "")]:
        assert parse_root_name(text_root_name(slot)) == (Kind.TEXT, slot)
        assert parse_root_name(array_root_name(slot)) == (Kind.ARRAY, slot)
    for name in ["lww", "fields", "text:notes", 'text:[ "notes"]', "text:[]", "array:[1]"]:
        assert parse_root_name(name) is None


# -- values ---------------------------------------------------------------------------------


def test_an_overwrite_removes_what_it_saw_and_records_its_base() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec["phone"] = "111"
    sync(a, b)
    with b.edit() as rec:
        rec["phone"] = "222"
    sync(a, b)
    [entry] = layout_of(a.doc).all_entries()
    assert entry.value == "222" and entry.base == Timestamp(T0, 0, "a")
    assert a.read() == b.read() == {"phone": "222"}
    assert a.conflicts() == []


def test_concurrent_values_the_most_recent_wins_and_the_other_is_a_conflict() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec["phone"] = "111-A"
    with b.edit() as rec:
        rec["phone"] = "222-B"  # later
    sync(a, b)
    assert a.read() == b.read() == {"phone": "222-B"}
    for replica in (a, b):
        [conflict] = replica.conflicts()
        assert conflict.lost == Written(Kind.VALUE, "111-A", Timestamp(T0, 0, "a"))
        assert conflict.won == Written(Kind.VALUE, "222-B", Timestamp(T0 + 10, 0, "b"))
        assert conflict.key == Timestamp(T0, 0, "a").encode()
        assert conflict.describe() == (
            "phone: '111-A' from replica a was overwritten by '222-B' from replica b "
            "at 2025-11-23T09:35:00.010Z"
        )


def test_the_winner_is_the_greatest_key_by_plain_string_comparison() -> None:
    # What a Yjs peer does: group by f, take the greatest key as a string.
    doc: Doc[Any] = Doc()
    root = doc.get(LWW_ROOT, type=Map)
    for i, (ms, replica) in enumerate([(3, "b"), (3, "a"), (12, "a"), (2, "z")]):
        with doc.transaction():
            root[Timestamp(T0 + ms, i, replica).encode()] = {"f": "x", "v": i, "b": None}
    assert root[max(root.keys())]["v"] == read_fields(doc)["x"] == 2


def test_a_loser_behind_an_overwrite_of_another_write_is_still_a_conflict() -> None:
    # C and A write concurrently; B sees only A's write and overwrites it. C's write was never
    # seen by anyone who wrote after it: it lost, concurrently, to B's.
    a, b, c = Replica("a", now=T0 + 2), Replica("b", now=T0 + 3), Replica("c", now=T0 + 1)
    with c.edit() as rec:
        rec["status"] = "from c"
    with a.edit() as rec:
        rec["status"] = "from a"
    sync(a, b)
    with b.edit() as rec:
        rec["status"] = "from b"
    sync(a, b, c)
    [conflict] = a.conflicts()
    assert (conflict.lost.value, conflict.won.value) == ("from c", "from b")


def test_resolving_a_conflict_keeps_it_in_the_document() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec["status"] = "open"
    with b.edit() as rec:
        rec["status"] = "closed"
    sync(a, b)
    before = a.conflicts()
    with a.edit() as rec:
        rec["status"] = "closed, checked"  # a saw both: the loser moves to "conflicts"
    sync(a, b)
    assert a.read() == b.read() == {"status": "closed, checked"}
    assert len(a.doc.get(LWW_ROOT, type=Map)) == 1
    assert len(a.doc.get(CONFLICTS_ROOT, type=Map)) == 1
    assert a.conflicts() == b.conflicts() == before  # same conflict, same key


def test_kept_conflicts_are_bounded_oldest_first() -> None:
    a = Replica("a")
    for i in range(KEPT_CONFLICTS + 5):
        other = Replica(f"o{i:03d}", now=T0 + 1000 * (i + 1))
        a.now = other.now - 10
        with a.edit() as rec:
            rec["n"] = f"a{i}"
        with other.edit() as rec:
            rec["n"] = f"o{i}"  # concurrent with a's, and later
        sync(a, other)
        with a.edit() as rec:
            rec["n"] = f"a{i} again"  # resolves: the loser is kept
    kept = a.doc.get(CONFLICTS_ROOT, type=Map)
    assert len(kept) == KEPT_CONFLICTS
    lost = {c.lost.value for c in a.conflicts()}
    assert "a0" not in lost and f"a{KEPT_CONFLICTS + 4}" in lost


def test_a_deletion_and_a_concurrent_write() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec["phone"] = "111"
    sync(a, b)
    with a.edit() as rec:
        del rec["phone"]
    with b.edit() as rec:
        rec["phone"] = "222"  # later: wins over the deletion
    sync(a, b)
    assert a.read() == b.read() == {"phone": "222"}
    [conflict] = a.conflicts()
    assert conflict.lost.kind is Kind.DELETED and conflict.won.value == "222"
    assert "a deletion from replica a was overwritten by '222'" in conflict.describe()


def test_nested_map_keys_are_slots_too() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec.map("address")["street"] = "1 A Street"
    with b.edit() as rec:
        rec.map("address")["street"] = "2 B Street"
        rec["address"]["floor"] = 3
    sync(a, b)
    assert a.read() == b.read() == {"address": {"street": "2 B Street", "floor": 3}}
    [conflict] = a.conflicts()
    assert conflict.slot == ("address", "street") and conflict.path == "address.street"
    assert conflict.lost.value == "1 A Street"


# -- containers -----------------------------------------------------------------------------


def test_concurrent_creations_of_a_text_a_map_and_a_list_keep_both_contents() -> None:
    """The case issue 10 opens with: the first note, address line and label, on two replicas
    offline at once."""
    a, b = Replica("a", client_id=1), Replica("b", now=T0 + 10, client_id=2)
    with a.edit() as rec:
        rec["status"] = "open"
    sync(a, b)
    for replica, who in ((a, "A"), (b, "B")):
        with replica.edit() as rec:
            rec.text("notes").append(f"Note from {who}. ")
            rec.map("address")["street" if who == "A" else "floor"] = who
            rec.array("labels").insert(0, f"label-{who}")
    sync(a, b)
    expected = {
        "status": "open",
        "notes": "Note from A. Note from B. ",
        "address": {"street": "A", "floor": "B"},
        "labels": ["label-A", "label-B"],
    }
    assert a.read() == b.read() == expected
    assert a.conflicts() == []  # two creations of the same kind are not a conflict


def test_a_value_written_over_a_text_clears_what_it_saw_and_keeps_concurrent_text() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec.text("memo").append("seen ")
    sync(a, b)
    with b.edit() as rec:
        del rec["memo"]
        rec["memo"] = 42  # b saw "seen ": it goes
    with a.edit() as rec:
        rec["memo"] += "unseen"  # concurrent with b's overwrite
    sync(a, b)
    assert a.read() == b.read() == {"memo": 42}
    [conflict] = a.conflicts()
    # Who typed it is not known (b removed the text's entry with what it saw).
    assert conflict.lost == Written(Kind.TEXT, "unseen", None)
    assert conflict.won.value == 42
    assert "memo: text 'unseen' was overwritten by 42 from replica b" in conflict.describe()


def test_a_deleted_container_with_concurrent_content_shows_it() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec.text("notes").append("old ")
        rec.map("site")["x"] = 1
        rec.array("tags").append("t1")
    sync(a, b)
    with a.edit() as rec:
        for name in ("notes", "site", "tags"):
            del rec[name]
    with b.edit() as rec:
        rec["notes"] += "new"
        rec["site"]["y"] = 2
        rec["tags"].append("t2")
    sync(a, b)
    # What a saw is gone; what b added concurrently stays (add wins).
    assert a.read() == b.read() == {"notes": "new", "site": {"y": 2}, "tags": ["t2"]}
    assert a.conflicts() == []


def test_a_text_and_a_value_created_at_once_one_wins_the_other_is_a_conflict() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec.text("phone").append("555 text")
    with b.edit() as rec:
        rec["phone"] = "555 value"  # later
    sync(a, b)
    assert a.read() == b.read() == {"phone": "555 value"}
    [conflict] = a.conflicts()
    assert conflict.lost.kind is Kind.TEXT and conflict.lost.value == "555 text"


def test_text_content_without_an_entry_shows() -> None:
    # A Yjs peer that writes into the root text directly, without creating the slot.
    doc: Doc[Any] = Doc()
    with doc.transaction():
        doc.get(text_root_name(("notes",)), type=Text).insert(0, "from js")
        doc.get(array_root_name(("site", "tags")), type=Array).append("t")
    assert read_fields(doc) == {"notes": "from js", "site": {"tags": ["t"]}}


def test_assigning_a_dict_or_list_merges_with_concurrent_changes() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec["address"] = {"street": "1 Rue", "city": "Lyon"}
        rec["labels"] = ["a", "b"]
    sync(a, b)
    with a.edit() as rec:
        rec["address"] = {**rec["address"].to_dict(), "zip": "69001"}
        rec["labels"] = [*rec["labels"].to_list(), "x"]
    with b.edit() as rec:
        rec["address"] = {"street": "1 Rue", "city": "Lyon", "floor": 2}
        rec["labels"] = [*rec["labels"].to_list(), "y"]
    sync(a, b)
    merged = a.read()
    assert merged == b.read()
    assert merged["address"] == {"street": "1 Rue", "city": "Lyon", "zip": "69001", "floor": 2}
    assert sorted(merged["labels"]) == ["a", "b", "x", "y"]  # no duplicated originals
    assert a.conflicts() == []


def test_container_methods_refuse_a_field_of_another_kind() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["n"] = 1
        rec.text("t")
        for make in (rec.text, rec.map, rec.array):
            with pytest.raises(Exception, match="holds a value"):
                make("n")
        with pytest.raises(Exception, match="holds a text, not a map"):
            rec.map("t")
        with pytest.raises(Exception, match="last-write-wins"):
            rec.text("status")


# -- layout v1 records ----------------------------------------------------------------------


def v1_record() -> Doc[Any]:
    """A record as layout v1 wrote it (nested objects under the root map "fields")."""
    doc: Doc[Any] = Doc()
    with doc.transaction():
        fields = doc.get(FIELDS_ROOT, type=Map)
        fields["title"] = "Boiler"
        fields["notes"] = Text("v1 note")
        fields["address"] = Map({"city": "Paris", "geo": Map({"lat": 48.8})})
        fields["labels"] = Array(["boiler", Map({"part": "valve"})])
    return doc


def test_a_v1_record_reads_as_before() -> None:
    assert read_fields(v1_record()) == {
        "title": "Boiler",
        "notes": "v1 note",
        "address": {"city": "Paris", "geo": {"lat": 48.8}},
        "labels": ["boiler", {"part": "valve"}],
    }


def test_a_v1_records_objects_are_edited_in_place_and_values_move_to_entries() -> None:
    doc = v1_record()
    peer: Doc[Any] = Doc()
    peer.apply_update(doc.get_update())
    a, b = Replica("a"), Replica("b", now=T0 + 10)
    a.doc, b.doc = doc, peer
    with a.edit() as rec:
        rec["notes"] += " + A"
        rec["address"]["zip"] = "75001"
        rec["labels"].append("A")
        rec["title"] = "Boiler service"
    with b.edit() as rec:
        rec.text("notes").insert(0, "B + ")
        rec.map("address")["floor"] = 2
    sync(a, b)
    fields = a.read()
    assert fields == b.read()
    assert fields["notes"] == "B + v1 note + A"
    assert fields["address"] == {"city": "Paris", "geo": {"lat": 48.8}, "zip": "75001", "floor": 2}
    assert fields["labels"] == ["boiler", {"part": "valve"}, "A"]
    assert fields["title"] == "Boiler service"
    assert "title" not in a.doc.get(FIELDS_ROOT, type=Map)  # replaced by an entry
    assert a.conflicts() == []


def test_a_v1_value_beside_a_concurrent_entry_is_a_conflict() -> None:
    a, b = pair()
    with a.edit() as rec:
        rec["phone"] = "new"
    with b.doc.transaction():  # an old replica writes the v1 way, concurrently
        b.doc.get(FIELDS_ROOT, type=Map)["phone"] = "old"
    sync(a, b)
    assert a.read() == b.read() == {"phone": "new"}
    [conflict] = a.conflicts()
    assert conflict.lost == Written(Kind.VALUE, "old", None)
    assert conflict.describe() == (
        "phone: 'old' was overwritten by 'new' from replica a at 2025-11-23T09:35:00.000Z"
    )


# -- the index ------------------------------------------------------------------------------


def test_the_index_follows_deletions_that_waited_for_their_entry() -> None:
    """Yrs raises no map event for these (see Layout's docstring)."""
    source = Doc(client_id=1)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    writer = Replica("w")
    writer.doc = source
    for value in ("v1", "v2", "v3"):
        with writer.edit() as rec:
            rec["x"] = value
    target = Replica("t", now=T0 + 100)
    target.doc.apply_update(updates[0])
    assert target.read() == {"x": "v1"}
    target.doc.apply_update(updates[2])  # deletes v2, which has not arrived
    target.doc.apply_update(updates[1])  # v2 arrives, deleted at once; v1 deleted
    assert target.read() == {"x": "v3"}
    with target.edit() as rec:
        rec["x"] = "mine"  # removes exactly the entries present
    assert target.read() == {"x": "mine"}
    assert len(target.doc.get(LWW_ROOT, type=Map)) == 1
