"""Records: editing in one transaction (one update), reading plain values, LWW fields
(layout v2: crdt_sync.records.layout)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from crdt_sync.errors import InvalidEdit
from crdt_sync.records.clock import HybridClock, Timestamp
from crdt_sync.records.layout import FIELDS_ROOT, layout_of, text_root_name
from crdt_sync.records.lww import LWW_ROOT, Kind, LwwPolicy
from crdt_sync.records.record import (
    ArrayEditor,
    MapEditor,
    Record,
    RecordEditor,
    read_fields,
)
from crdt_sync.records.text import TextField

NOW = 1_763_890_500_000
POLICY = LwwPolicy({"jobs": ["status", "assignee", "geo"], "contacts": "*"})


class Replica:
    """One replica of one record: a doc, an HLC with a settable physical time, an editor."""

    def __init__(self, name: str, collection: str = "jobs", now: int = NOW) -> None:
        self.doc: Doc[Any] = Doc()
        self.clock = HybridClock(name)
        self.now = now
        self.collection = collection
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def stamp(self, current: Timestamp | None) -> Timestamp:
        return self.clock.after(current, self.now) if current else self.clock.tick(self.now)

    @contextmanager
    def edit(self) -> Iterator[RecordEditor]:
        with self.doc.transaction():
            yield RecordEditor(self.doc, self.collection, POLICY, self.stamp)

    def read(self) -> dict[str, Any]:
        return read_fields(self.doc)

    def receive(self, other: Replica) -> None:
        self.doc.apply_update(other.doc.get_update(self.doc.get_state()))


def exact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return (type(value).__name__, value)


# -- one transaction, one update, plain values ----------------------------------------------


def test_an_edit_produces_exactly_one_update() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["status"] = "open"  # LWW
        rec["count"] = 3
        rec["blob"] = b"\x00\x01"
        rec["site"] = {"city": "Lyon", "floors": [1, 2]}
        rec.text("notes").insert(0, "Arrivé ✓")
        rec.array("parts").append("pompe")
        rec.map("meta").map("deep")["x"] = 1.5
    assert len(r.updates) == 1
    peer: Doc[Any] = Doc()
    peer.apply_update(r.updates[0])
    assert read_fields(peer) == read_fields(r.doc)


def test_reading_returns_plain_values_with_their_types() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["count"] = 3
        rec["ratio"] = 0.25
        rec["ok"] = True
        rec["none"] = None
        rec["blob"] = b"\xff"
        rec["site"] = {"city": "Zürich", "floors": [1, {"n": 2}], "raw": b"x"}
        rec.text("notes").insert(0, "日本 😀")
        rec["status"] = {"code": 7, "bytes": b"y"}  # LWW, stored atomically
    expected = {
        "count": 3,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "blob": b"\xff",
        "site": {"city": "Zürich", "floors": [1, {"n": 2}], "raw": b"x"},
        "notes": "日本 😀",
        "status": {"code": 7, "bytes": b"y"},
    }
    peer = Replica("b")
    peer.receive(r)
    for fields in (r.read(), peer.read()):
        assert exact(fields) == exact(expected)


def test_values_are_register_entries_and_nothing_is_in_the_v1_map() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["count"] = 1
        rec["status"] = "open"
    assert dict(r.doc.get(LWW_ROOT, type=Map).items()) == {
        Timestamp(NOW, 0, "a").encode(): {"f": "count", "v": 1.0, "b": None},
        Timestamp(NOW, 1, "a").encode(): {"f": "status", "v": "open", "b": None},
    }
    assert len(r.doc.get(FIELDS_ROOT, type=Map)) == 0


def test_an_empty_doc_reads_as_no_fields() -> None:
    assert read_fields(Doc()) == {}


def test_editor_reads_what_it_wrote_in_the_same_transaction() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["n"] = 5
        rec["status"] = "open"
        rec["site"] = {"a": [1]}
        assert rec["n"] == 5 and type(rec["n"]) is int
        assert rec["status"] == "open"
        assert isinstance(rec["site"], MapEditor)
        assert isinstance(rec["site"]["a"], ArrayEditor)
        assert rec["site"]["a"].to_list() == [1]
        assert rec.get("missing", "d") == "d"
        assert rec.get("status") == "open"
        assert "n" in rec and "status" in rec and "missing" not in rec and 3 not in rec
        assert sorted(rec.keys()) == ["n", "site", "status"]
        assert sorted(rec) == ["n", "site", "status"]
        assert len(rec) == 3
        assert rec.to_dict() == {"n": 5, "status": "open", "site": {"a": [1]}}
        with pytest.raises(KeyError):
            rec["missing"]
        with pytest.raises(KeyError):
            rec["assignee"]  # LWW, never written


def test_deleting_fields() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["n"] = 1
        rec["status"] = "open"
    with r.edit() as rec:
        del rec["n"]
        del rec["status"]
        with pytest.raises(KeyError):
            del rec["n"]
        with pytest.raises(KeyError):
            del rec["status"]
        assert "status" not in rec
    assert r.read() == {}


def test_unsupported_values_raise_invalid_edit() -> None:
    r = Replica("a")
    with r.edit() as rec:
        for key, value in (("x", object()), ("y", {1: 2}), ("status", {3}), ("z", 2**60)):
            with pytest.raises(InvalidEdit):
                rec[key] = value
        with pytest.raises(InvalidEdit):
            rec["bad\ud800key"] = 1
        with pytest.raises(InvalidEdit):
            rec.text("bad\ud800key")
    assert r.read() == {}


# -- text fields ----------------------------------------------------------------------------


def test_iadd_appends_to_an_existing_collaborative_text() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec.text("notes").insert(0, "Arrivé")
    deltas: list[Any] = []
    notes = r.doc.get(text_root_name(("notes",)), type=Text)
    notes.observe(lambda event: deltas.append(event.delta))
    with r.edit() as rec:
        rec["notes"] += " sur site 🚐"
    # The existing shared Text saw one append (offsets in UTF-8 bytes): it was not replaced.
    assert deltas == [[{"retain": 7}, {"insert": " sur site 🚐"}]]
    assert layout_of(r.doc).shown(("notes",)).kind is Kind.TEXT
    assert r.read()["notes"] == "Arrivé sur site 🚐"


def test_concurrent_appends_to_a_text_both_survive() -> None:
    a, b = Replica("a"), Replica("b")
    with a.edit() as rec:
        rec.text("notes").insert(0, "Début.")
    b.receive(a)
    with a.edit() as rec:
        rec["notes"] += " A: pompe ✓"
    with b.edit() as rec:
        rec.text("notes").insert(0, "B: 😀 ")
    a.receive(b)
    b.receive(a)
    assert a.read()["notes"] == b.read()["notes"] == "B: 😀 Début. A: pompe ✓"


def test_assigning_a_str_to_a_text_replaces_its_content_minimally() -> None:
    a, b = Replica("a"), Replica("b")
    with a.edit() as rec:
        rec.text("notes").insert(0, "Le café est fermé. Fin.")
    b.receive(a)
    with a.edit() as rec:
        rec["notes"] = "Le thé est fermé. Fin."
        assert isinstance(rec["notes"], TextField)  # still a collaborative text
    with b.edit() as rec:
        rec.text("notes").insert(len("Le café est fermé."), " Rappeler 📞.")
    a.receive(b)
    b.receive(a)
    assert a.read()["notes"] == b.read()["notes"] == "Le thé est fermé. Rappeler 📞. Fin."


def test_assigning_a_text_field_copies_its_content() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec.text("notes").insert(0, "é")
        rec["copy"] = rec["notes"]
        rec["status"] = rec["notes"]  # LWW: stored as its string value
        rec["copy"] += "x"
    assert r.read() == {"notes": "é", "copy": "éx", "status": "é"}


def test_text_on_a_non_text_field_raises() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["n"] = 1
        with pytest.raises(InvalidEdit):
            rec.text("n")
        with pytest.raises(InvalidEdit):
            rec.map("n")
        with pytest.raises(InvalidEdit):
            rec.array("n")


def test_a_str_assigned_to_a_new_field_is_a_plain_value() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["label"] = "plain"
        rec["label"] += "!"  # a plain str concatenation, then a plain assignment
    assert layout_of(r.doc).shown(("label",)).kind is Kind.VALUE
    assert text_root_name(("label",)) not in r.doc.keys()  # noqa: SIM118
    assert r.read() == {"label": "plain!"}


# -- nested maps and arrays -----------------------------------------------------------------


def test_nested_maps_and_arrays() -> None:
    r = Replica("a")
    with r.edit() as rec:
        site = rec.map("site")
        site["city"] = "Köln"
        site.text("access").insert(0, "Code 1234")
        parts = rec.array("parts")
        parts.extend(["a", "c"])
        parts.insert(1, {"name": "b", "qty": 2})
        parts.append([1, 2])
        assert len(parts) == 4
        assert parts[1]["qty"] == 2
        del parts[0]
        with pytest.raises(InvalidEdit):
            parts.insert(9, "x")
        with pytest.raises(InvalidEdit):
            del parts[9]
        assert "city" in site
        assert sorted(site.keys()) == ["access", "city"]
        del site["city"]
        with pytest.raises(KeyError):
            del site["city"]
        assert site.to_dict() == {"access": "Code 1234"}
    assert r.read() == {
        "site": {"access": "Code 1234"},
        "parts": [{"name": "b", "qty": 2}, "c", [1, 2]],
    }


def test_concurrent_edits_of_different_keys_of_a_nested_map_merge() -> None:
    a, b = Replica("a"), Replica("b")
    with a.edit() as rec:
        rec["site"] = {"city": "Lyon"}
    b.receive(a)
    with a.edit() as rec:
        rec["site"]["floor"] = 2
    with b.edit() as rec:
        rec["site"]["door"] = "B"
    a.receive(b)
    b.receive(a)
    assert a.read() == b.read() == {"site": {"city": "Lyon", "floor": 2, "door": "B"}}


# -- LWW fields through the editor ----------------------------------------------------------


def test_lww_fields_are_written_as_timestamped_entries() -> None:
    r = Replica("a")
    with r.edit() as rec:
        rec["status"] = {"code": 1}  # an LWW field: a dict is one value
        rec["site"] = {"code": 1}  # a plain field: a dict is a map of slots
    raw = dict(r.doc.get(LWW_ROOT, type=Map).items())
    assert raw[Timestamp(NOW, 0, "a").encode()] == {"f": "status", "v": {"code": 1.0}, "b": None}
    assert raw[Timestamp(NOW, 1, "a").encode()] == {"f": "site", "t": "map", "b": None}
    assert raw[Timestamp(NOW, 2, "a").encode()] == {"f": ["site", "code"], "v": 1.0, "b": None}


def test_whole_collection_policy() -> None:
    r = Replica("a", collection="contacts")
    with r.edit() as rec:
        rec["name"] = "Zoë"
        rec["phones"] = ["+33 1", "+33 2"]
        with pytest.raises(InvalidEdit):
            rec.text("notes")
        with pytest.raises(InvalidEdit):
            rec.map("address")
        with pytest.raises(InvalidEdit):
            rec.array("phones")
    assert {e.kind for e in layout_of(r.doc).all_entries()} == {Kind.VALUE}
    assert r.read() == {"name": "Zoë", "phones": ["+33 1", "+33 2"]}


def test_the_latest_write_wins_whatever_the_delivery_order() -> None:
    a, b = Replica("a", now=NOW), Replica("b", now=NOW + 10)
    with a.edit() as rec:
        rec["status"] = "open"
    with b.edit() as rec:
        rec["status"] = "closed"  # later physical time: wins
    a.receive(b)
    b.receive(a)
    assert a.read() == b.read() == {"status": "closed"}
    [conflict] = layout_of(a.doc).conflicts()
    assert (conflict.lost.value, conflict.won.value) == ("open", "closed")


def test_an_overwrite_after_seeing_a_write_wins_even_with_a_slower_clock() -> None:
    a, b = Replica("a", now=NOW + 60_000), Replica("b", now=NOW)  # b's clock is a minute behind
    with a.edit() as rec:
        rec["status"] = "open"
    b.receive(a)
    with b.edit() as rec:
        rec["status"] = "closed"
    a.receive(b)
    assert a.read() == b.read() == {"status": "closed"}
    assert layout_of(a.doc).conflicts() == []


def test_lww_delete_then_concurrent_write() -> None:
    a, b = Replica("a"), Replica("b", now=NOW + 5)
    with a.edit() as rec:
        rec["status"] = "open"
    b.receive(a)
    with a.edit() as rec:
        del rec["status"]
    with b.edit() as rec:
        rec["status"] = "reopened"
    a.receive(b)
    b.receive(a)
    assert a.read() == b.read() == {"status": "reopened"}


def test_a_write_after_a_skewed_winner_beats_it_and_keys_stay_unique() -> None:
    # Two replicas whose clocks are an hour ahead, with the same (ms, counter): a correct
    # replica overwrites both fields; each write must beat what it saw, with distinct keys.
    far = NOW + 3_600_000
    f1, f2, me = Replica("f1", now=far), Replica("f2", now=far), Replica("me")
    with f1.edit() as rec:
        rec["status"] = "skewed 1"
    with f2.edit() as rec:
        rec["assignee"] = "skewed 2"
    me.receive(f1)
    me.receive(f2)
    with me.edit() as rec:
        rec["status"] = "mine 1"
        rec["assignee"] = "mine 2"
    assert me.read() == {"status": "mine 1", "assignee": "mine 2"}
    assert me.clock.state().ms == NOW  # not dragged an hour ahead
    f1.receive(me)
    assert f1.read() == me.read()


def test_ints_in_lww_values_read_back_as_int() -> None:
    a, b = Replica("a"), Replica("b")
    with a.edit() as rec:
        rec["geo"] = {"lat": 45, "pts": [1, 2.5]}
        rec["assignee"] = 17
    b.receive(a)
    with b.edit() as rec:
        assert type(rec["assignee"]) is int
        assert rec.to_dict() == {"geo": {"lat": 45, "pts": [1, 2.5]}, "assignee": 17}
    assert exact(b.read()) == exact({"geo": {"lat": 45, "pts": [1, 2.5]}, "assignee": 17})


# -- Record snapshot ------------------------------------------------------------------------


def test_record_is_a_read_only_mapping_of_its_fields() -> None:
    record = Record("jobs", "job-42", {"status": "open", "n": 1}, 1.0, 2.0, 3.0)
    assert record["status"] == "open"
    assert dict(record) == {"status": "open", "n": 1}
    assert len(record) == 2
    assert "n" in record and "x" not in record
    assert record.get("x") is None
    assert record.pending is False
    assert "state_vector" not in repr(record)
    with pytest.raises(AttributeError):
        record.id = "other"  # type: ignore[misc]


def test_an_entry_key_already_present_is_never_reused_after_a_restart() -> None:
    # Before a restart, `me` stepped past a skewed winner to (far, 1, me). After the restart its
    # clock no longer remembers that step; stepping past another skewed (far, 0) entry would
    # give the same key again. The editor must pick a free one.
    far = NOW + 3_600_000
    f1, f2, me = Replica("f1", now=far), Replica("f2", now=far), Replica("me")
    with f1.edit() as rec:
        rec["status"] = "skewed 1"
    with f2.edit() as rec:
        rec["assignee"] = "skewed 2"
    me.receive(f1)
    me.receive(f2)
    with me.edit() as rec:
        rec["status"] = "mine 1"
    me.clock = HybridClock("me", me.clock.state())  # restart
    with me.edit() as rec:
        rec["assignee"] = "mine 2"
    entry = layout_of(me.doc).winner(("assignee",))
    assert entry is not None and entry.ts > Timestamp(far, 1, "me")
    assert me.read() == {"status": "mine 1", "assignee": "mine 2"}
    assert len(me.doc.get(LWW_ROOT, type=Map)) == 2
