"""TextField: character positions on pycrdt's UTF-8 byte-indexed Text, checked against str."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from crdt_sync.errors import InvalidEdit
from crdt_sync.records.text import TextField, byte_offset

# Characters of 1 to 4 UTF-8 bytes, combining marks, ZWJ sequences, CJK, RTL, astral emoji.
NASTY = "aZ é\u0301ñ€ß日本語한국\u05d0\u0627😀👩\u200d🔧🇫🇷\U0001d11e\n\t"
nasty_text = st.text(alphabet=st.sampled_from(NASTY), max_size=12)
# Anything Python can encode as UTF-8 (hypothesis' default text excludes lone surrogates).
any_text = st.text(max_size=12)

SAMPLE = "héllo😀x e\u0301 日本 👩\u200d🔧"


def new_field(initial: str = "") -> tuple[Doc[Any], TextField]:
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    if initial:
        text += initial
    return doc, TextField(text)


def replica_of(doc: Doc[Any]) -> str:
    """The text as a second replica sees it after applying the whole state."""
    other: Doc[Any] = Doc()
    other.apply_update(doc.get_update())
    return str(other.get("t", type=Text))


def test_byte_offset_counts_utf8_bytes_of_the_prefix() -> None:
    assert byte_offset("héllo😀x", 0) == 0
    assert byte_offset("héllo😀x", 2) == 3
    assert byte_offset("héllo😀x", 6) == 10
    assert byte_offset("héllo😀x", 7) == 11


def test_insert_after_a_multibyte_character_lands_there() -> None:
    # Raw pycrdt would put this at the end (offset 2 falls inside "é").
    _, field = new_field("héllo😀x")
    field.insert(2, "Z")
    assert str(field) == "héZllo😀x"


@pytest.mark.parametrize("pos", range(len(SAMPLE) + 1))
def test_insert_at_every_character_position(pos: int) -> None:
    doc, field = new_field(SAMPLE)
    field.insert(pos, "✓ü")
    expected = SAMPLE[:pos] + "✓ü" + SAMPLE[pos:]
    assert str(field) == expected
    assert replica_of(doc) == expected


@pytest.mark.parametrize("pos", range(len(SAMPLE)))
def test_delete_at_every_character_position(pos: int) -> None:
    doc, field = new_field(SAMPLE)
    field.delete(pos)
    expected = SAMPLE[:pos] + SAMPLE[pos + 1 :]
    assert str(field) == expected
    assert replica_of(doc) == expected


def test_delete_a_span_across_multibyte_characters() -> None:
    _, field = new_field(SAMPLE)
    field.delete(1, 6)
    assert str(field) == SAMPLE[:1] + SAMPLE[7:]


def test_len_str_repr_and_equality_are_in_characters() -> None:
    _, field = new_field("日本😀")
    assert len(field) == 3
    assert str(field) == "日本😀"
    assert repr(field) == "TextField('日本😀')"
    assert field == "日本😀"
    assert field != "日本"
    assert field == new_field("日本😀")[1]
    assert field.__eq__(3) is NotImplemented


def test_text_field_is_unhashable() -> None:
    _, field = new_field("x")
    with pytest.raises(TypeError):
        hash(field)


@pytest.mark.parametrize("pos", [-1, 4, 100])
def test_insert_out_of_range_raises(pos: int) -> None:
    _, field = new_field("日本😀")
    with pytest.raises(InvalidEdit):
        field.insert(pos, "x")
    assert str(field) == "日本😀"


@pytest.mark.parametrize(("pos", "length"), [(-1, 1), (0, 4), (3, 1), (4, 0), (1, -1), (2, 5)])
def test_delete_out_of_range_raises(pos: int, length: int) -> None:
    _, field = new_field("日本😀")
    with pytest.raises(InvalidEdit):
        field.delete(pos, length)
    assert str(field) == "日本😀"


def test_empty_insert_and_zero_delete_change_nothing() -> None:
    doc, field = new_field("é")
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    field.insert(1, "")
    field.delete(1, 0)
    field.replace("é")
    assert str(field) == "é"
    assert updates == []


def test_lone_surrogate_is_refused_and_nothing_changes() -> None:
    _, field = new_field("ab")
    for edit in (
        lambda: field.insert(1, "\ud800"),
        lambda: field.append("x\udfff"),
        lambda: field.splice(0, 1, "\ud83d"),
        lambda: field.replace("\ud800"),
    ):
        with pytest.raises(InvalidEdit):
            edit()
    assert str(field) == "ab"


def test_inserting_a_non_string_is_refused() -> None:
    _, field = new_field("ab")
    with pytest.raises(InvalidEdit):
        field.insert(0, 5)  # type: ignore[arg-type]


def test_invalid_splice_changes_nothing() -> None:
    _, field = new_field("abc")
    with pytest.raises(InvalidEdit):
        field.splice(1, 5, "x")
    assert str(field) == "abc"


def test_iadd_appends() -> None:
    _, field = new_field("Arrived")
    field += " 🚗 on site."
    assert str(field) == "Arrived 🚗 on site."


def test_splice_replaces_a_span() -> None:
    _, field = new_field("prix: 10€")
    field.splice(6, 3, "12 €")
    assert str(field) == "prix: 12 €"


def test_replace_is_one_minimal_splice() -> None:
    doc, field = new_field("Le café est fermé 😀")
    deltas: list[Any] = []
    text = doc.get("t", type=Text)
    text.observe(lambda event: deltas.append(event.delta))
    with doc.transaction():
        field.replace("Le thé est fermé 😀")
    assert str(field) == "Le thé est fermé 😀"
    # Common prefix "Le " (3 bytes) kept, "caf" (3 bytes) deleted, "th" inserted, the common
    # suffix "é est fermé 😀" kept: one change, offsets in UTF-8 bytes.
    assert deltas == [[{"retain": 3}, {"delete": 3}, {"insert": "th"}]]


def test_replace_keeps_a_concurrent_edit_outside_the_changed_span() -> None:
    doc_a, field_a = new_field("Pompe: OK. Vanne: fuite 💧. Fin.")
    doc_b: Doc[Any] = Doc()
    doc_b.apply_update(doc_a.get_update())
    field_b = TextField(doc_b.get("t", type=Text))
    field_a.replace("Pompe: changée. Vanne: fuite 💧. Fin.")  # A rewrites the first part
    field_b.insert(len(field_b) - 4, "Réparée. ")  # B concurrently adds near the end
    doc_a.apply_update(doc_b.get_update(doc_a.get_state()))
    doc_b.apply_update(doc_a.get_update(doc_b.get_state()))
    assert str(field_a) == str(field_b) == "Pompe: changée. Vanne: fuite 💧. Réparée. Fin."


@settings(max_examples=200, deadline=None)
@given(nasty_text, nasty_text)
def test_replace_makes_any_text_any_other(start: str, goal: str) -> None:
    doc, field = new_field(start)
    field.replace(goal)
    assert str(field) == goal
    assert replica_of(doc) == goal


@st.composite
def edit_scripts(draw: st.DrawFn) -> tuple[str, list[tuple[str, int, int, str]]]:
    """An initial text and a list of edits, each valid for the text it applies to."""
    alphabet = draw(st.sampled_from([nasty_text, any_text]))
    current = draw(alphabet)
    start = current
    ops: list[tuple[str, int, int, str]] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["insert", "delete", "splice", "append", "replace"]))
        pos = draw(st.integers(0, len(current)))
        length = draw(st.integers(0, len(current) - pos))
        value = draw(alphabet)
        ops.append((kind, pos, length, value))
        if kind == "insert":
            current = current[:pos] + value + current[pos:]
        elif kind == "delete":
            current = current[:pos] + current[pos + length :]
        elif kind == "splice":
            current = current[:pos] + value + current[pos + length :]
        elif kind == "append":
            current += value
        else:
            current = value
    return start, ops


@settings(max_examples=300, deadline=None)
@given(edit_scripts())
def test_text_field_edits_match_the_same_edits_on_a_python_str(
    script: tuple[str, list[tuple[str, int, int, str]]],
) -> None:
    start, ops = script
    doc, field = new_field(start)
    model = start
    for kind, pos, length, value in ops:
        if kind == "insert":
            field.insert(pos, value)
            model = model[:pos] + value + model[pos:]
        elif kind == "delete":
            field.delete(pos, length)
            model = model[:pos] + model[pos + length :]
        elif kind == "splice":
            field.splice(pos, length, value)
            model = model[:pos] + value + model[pos + length :]
        elif kind == "append":
            field += value
            model += value
        else:
            field.replace(value)
            model = value
        assert str(field) == model
        assert len(field) == len(model)
    assert replica_of(doc) == model


@settings(max_examples=100, deadline=None)
@given(nasty_text, st.data())
def test_out_of_range_positions_always_raise(initial: str, data: st.DataObject) -> None:
    _, field = new_field(initial)
    n = len(initial)
    bad_pos = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=n + 1)))
    with pytest.raises(InvalidEdit):
        field.insert(bad_pos, "x")
    pos = data.draw(st.integers(0, n))
    with pytest.raises(InvalidEdit):
        field.delete(pos, n - pos + data.draw(st.integers(1, 5)))
    assert str(field) == initial
