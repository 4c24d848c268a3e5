"""Compensating edits (crdt_sync/records/rollback.py): taking back one update, keeping later
edits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt_sync.records.layout import FIELDS_ROOT
from crdt_sync.records.rollback import compensate
from crdt_sync.records.values import to_plain

Edit = Callable[[Map[Any]], None]


def _take_back(initial: dict[str, Any], refused: Edit, later: Edit | None = None) -> Any:
    """``initial`` fields, then the refused edit, then ``later``; compensate the refused one.
    Returns the fields as plain values (a str initial value is a Text, a list an Array)."""
    before: Doc[Any] = Doc()
    fields = before.get(FIELDS_ROOT, type=Map)
    with before.transaction():
        for key, value in initial.items():
            if isinstance(value, str):
                fields[key] = Text(value)
            elif isinstance(value, list):
                fields[key] = Array(value)
            else:
                fields[key] = value
    after: Doc[Any] = Doc()
    after.apply_update(before.get_update())
    with after.transaction():
        refused(after.get(FIELDS_ROOT, type=Map))
    current: Doc[Any] = Doc()
    current.apply_update(after.get_update())
    if later is not None:
        with current.transaction():
            later(current.get(FIELDS_ROOT, type=Map))
    with current.transaction():
        compensate(before, after, current)
    return to_plain(current.get(FIELDS_ROOT, type=Map))


def test_several_deleted_text_spans_come_back_in_place_and_later_text_stays() -> None:
    def refused(fields: Map[Any]) -> None:
        notes = fields["notes"]
        del notes[4:5]  # "e"
        del notes[0:1]  # "a"
        notes.insert(1, "ZZ")

    def later(fields: Map[Any]) -> None:
        notes = fields["notes"]
        notes.insert(len(str(notes)), "!")

    assert _take_back({"notes": "abcdef"}, refused, later) == {"notes": "abcdef!"}


def test_deleted_array_elements_come_back_in_place_and_later_elements_stay() -> None:
    def refused(fields: Map[Any]) -> None:
        parts = fields["parts"]
        del parts[3]
        del parts[0]
        parts.insert(1, "new")

    def later(fields: Map[Any]) -> None:
        fields["parts"].append("later")
        fields["parts"].insert(0, "first")

    result = _take_back({"parts": ["a", "b", "c", "d", "e"]}, refused, later)
    # "first" was put in front of "b" while "a" was gone; "a" goes back before it, where it
    # was (at the start), and "first" stays in front of "b".
    assert result == {"parts": ["a", "first", "b", "c", "d", "e", "later"]}


def test_accents_and_emoji_are_restored_by_character() -> None:
    def refused(fields: Map[Any]) -> None:
        notes = fields["notes"]
        del notes[len("Zoë ".encode()) : len("Zoë café ".encode())]  # "café "
        del notes[0 : len("Zoë".encode())]

    assert _take_back({"notes": "Zoë café ☕ 🚐"}, refused) == {"notes": "Zoë café ☕ 🚐"}


def test_everything_deleted_comes_back() -> None:
    def refused(fields: Map[Any]) -> None:
        del fields["notes"][0 : len(str(fields["notes"]).encode())]
        del fields["parts"][0:3]

    def later(fields: Map[Any]) -> None:
        fields["notes"].insert(0, "new")
        fields["parts"].append(9)

    initial = {"notes": "gone", "parts": [1, 2, 3]}
    assert _take_back(initial, refused, later) == {"notes": "gonenew", "parts": [1, 2, 3, 9]}


_alphabet = st.sampled_from(list("aab ée☕🚐"))


@st.composite
def _sequence_edit(draw: st.DrawFn, length: int, insert_value: Any) -> list[tuple[str, int, int]]:
    """Deletions (start, length) and insertions (position) valid one after the other."""
    ops: list[tuple[str, int, int]] = []
    size = length
    for _ in range(draw(st.integers(1, 4))):
        if size and draw(st.booleans()):
            start = draw(st.integers(0, size - 1))
            count = draw(st.integers(1, size - start))
            ops.append(("delete", start, count))
            size -= count
        else:
            ops.append(("insert", draw(st.integers(0, size)), 0))
            size += len(insert_value)
    return ops


def _text_edit(ops: list[tuple[str, int, int]]) -> Edit:
    """The refused edit of the text properties: ``ops`` on ``notes`` by character position,
    each insertion an ``X``."""

    def edit(fields: Map[Any]) -> None:
        notes = fields["notes"]
        for op, position, count in ops:
            text = str(notes)
            if op == "delete":
                start = len(text[:position].encode())
                del notes[start : start + len(text[position : position + count].encode())]
            else:
                notes.insert(len(text[:position].encode()), "X")

    return edit


@settings(max_examples=150, deadline=None)
@given(data=st.data(), initial=st.text(_alphabet, min_size=0, max_size=12))
def test_without_later_edits_the_text_is_exactly_as_before(
    data: st.DataObject, initial: str
) -> None:
    ops = data.draw(_sequence_edit(len(initial), "X"))
    appended = data.draw(st.sampled_from(["", "!", "🚐"]))

    refused = _text_edit(ops)

    def later(fields: Map[Any]) -> None:
        notes = fields["notes"]
        notes.insert(len(str(notes).encode()), appended)

    result = _take_back({"notes": initial}, refused, later if appended else None)
    assert result == {"notes": initial + appended}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), initial=st.lists(st.sampled_from([1, 1, 2, "x"]), max_size=8))
def test_without_later_edits_the_array_is_exactly_as_before(
    data: st.DataObject, initial: list[Any]
) -> None:
    ops = data.draw(_sequence_edit(len(initial), [0]))
    appended = data.draw(st.sampled_from([[], [7]]))

    def refused(fields: Map[Any]) -> None:
        parts = fields["parts"]
        for op, position, count in ops:
            if op == "delete":
                del parts[position : position + count]
            else:
                parts.insert(position, 0)

    def later(fields: Map[Any]) -> None:
        fields["parts"].extend(appended)

    result = _take_back({"parts": initial}, refused, later if appended else None)
    assert result == {"parts": initial + appended}


def test_map_entries_get_their_old_values_unless_a_later_edit_set_them_again() -> None:
    def refused(fields: Map[Any]) -> None:
        fields["status"] = "closed"
        fields["priority"] = 9
        del fields["tech"]
        fields["invoice"] = 99

    def later(fields: Map[Any]) -> None:
        fields["priority"] = 5  # set again after the refused edit: stays

    initial = {"status": "open", "priority": 2, "tech": "ana"}
    assert _take_back(initial, refused, later) == {"status": "open", "priority": 5, "tech": "ana"}


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    initial=st.text(st.sampled_from(list("ab é☕🚐")), min_size=1, max_size=10),
)
def test_later_insertions_anywhere_stay_and_the_original_text_comes_back_around_them(
    data: st.DataObject, initial: str
) -> None:
    ops = data.draw(_sequence_edit(len(initial), "X"))
    inserts = data.draw(st.lists(st.integers(0, 40), max_size=3))

    refused = _text_edit(ops)

    def later(fields: Map[Any]) -> None:
        notes = fields["notes"]
        for at in inserts:
            text = str(notes)
            notes.insert(len(text[: at % (len(text) + 1)].encode()), "L")

    result = _take_back({"notes": initial}, refused, later)["notes"]
    assert "X" not in result  # what the refused edit inserted is gone
    assert result.count("L") == len(inserts)  # every later insertion stayed
    assert result.replace("L", "") == initial  # and the original text is back, in order
