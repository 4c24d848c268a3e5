"""Plain values <-> CRDT values: what goes in comes back, on this replica and on others."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt_sync.errors import InvalidEdit
from crdt_sync.records.values import (
    MAX_SAFE_INT,
    check_json,
    check_text,
    normalize,
    same_value,
    to_crdt,
    to_plain,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-MAX_SAFE_INT, MAX_SAFE_INT),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
plain_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=12,
)


def exact(value: Any) -> Any:
    """``value`` with types made visible, so that 1 == 1.0 == True do not hide a difference."""
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return (type(value).__name__, value)


def through_a_peer(doc: Doc[Any]) -> Map[Any]:
    peer: Doc[Any] = Doc()
    peer.apply_update(doc.get_update())
    root: Map[Any] = peer.get("m", type=Map)
    return root


@settings(max_examples=200, deadline=None)
@given(plain_values)
def test_to_crdt_then_to_plain_round_trips_locally_and_on_a_peer(value: Any) -> None:
    doc: Doc[Any] = Doc()
    root = doc.get("m", type=Map)
    root["v"] = to_crdt(value)
    expected = exact(normalize(value))
    assert exact(to_plain(root["v"])) == expected
    assert exact(to_plain(through_a_peer(doc)["v"])) == expected


@settings(max_examples=200, deadline=None)
@given(plain_values)
def test_check_json_value_stored_atomically_round_trips(value: Any) -> None:
    # LWW values are stored inside an entry as one atomic (JSON-like) value.
    doc: Doc[Any] = Doc()
    root = doc.get("m", type=Map)
    root["v"] = {"v": check_json(value)}
    expected = exact(normalize(value))
    assert exact(normalize(root["v"]["v"])) == expected
    assert exact(normalize(through_a_peer(doc)["v"]["v"])) == expected


def test_integers_read_back_as_int_and_bytes_as_bytes() -> None:
    doc: Doc[Any] = Doc()
    root = doc.get("m", type=Map)
    root["n"] = to_crdt({"count": 3, "ratio": 0.5, "blob": b"\x00\xff", "big": MAX_SAFE_INT})
    for source in (root, through_a_peer(doc)):
        plain = to_plain(source["n"])
        assert plain == {"count": 3, "ratio": 0.5, "blob": b"\x00\xff", "big": MAX_SAFE_INT}
        assert type(plain["count"]) is int
        assert type(plain["big"]) is int
        assert type(plain["blob"]) is bytes


def test_to_crdt_builds_shared_types_for_containers() -> None:
    assert isinstance(to_crdt({"a": 1}), Map)
    assert isinstance(to_crdt([1, 2]), Array)
    assert isinstance(to_crdt((1, 2)), Array)
    assert to_crdt("x") == "x"


def test_to_plain_reads_text_as_str() -> None:
    doc: Doc[Any] = Doc()
    root = doc.get("m", type=Map)
    root["t"] = Text("héllo 😀")
    assert to_plain(root["t"]) == "héllo 😀"


def test_normalize_keeps_non_integral_and_huge_floats() -> None:
    assert normalize(2.5) == 2.5
    assert type(normalize(2.0)) is int
    assert type(normalize(2.0**60)) is float
    assert normalize(bytearray(b"ab")) == b"ab"
    assert normalize({"a": [1.0, {"b": bytearray(b"c")}]}) == {"a": [1, {"b": b"c"}]}


def test_check_json_returns_plain_lists_for_tuples_and_bytes_for_bytearray() -> None:
    assert check_json({"a": (1, (2, 3))}) == {"a": [1, [2, 3]]}
    assert check_json(bytearray(b"x")) == b"x"


@pytest.mark.parametrize("convert", [to_crdt, check_json])
@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({1: "x"}, "map keys must be str"),
        (object(), "cannot store a object"),
        ({1.5}, "cannot store a set"),
        ({"a": [1, {"b": object()}]}, "value.a[1].b"),
        (MAX_SAFE_INT + 1, "beyond"),
        (-(2**64), "beyond"),
        ("a\ud800", "not valid Unicode"),
        ({"k\udfff": 1}, "not valid Unicode"),
    ],
)
def test_values_a_document_cannot_hold_are_refused(convert: Any, value: Any, where: str) -> None:
    with pytest.raises(InvalidEdit, match=where.replace("[", r"\[").replace("]", r"\]")):
        convert(value)


def test_check_text() -> None:
    assert check_text("é😀") == "é😀"
    with pytest.raises(InvalidEdit):
        check_text("\ud800")
    with pytest.raises(InvalidEdit):
        check_text(b"bytes")  # type: ignore[arg-type]


def test_same_value_tells_booleans_from_numbers() -> None:
    assert same_value(1, 1.0) and same_value({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not same_value(True, 1) and not same_value(0, False)
    assert not same_value({"flag": True}, {"flag": 1}) and not same_value([True], [1])
    assert not same_value({"a": 1}, {"a": 1, "b": 2}) and not same_value([1], [1, 1])
    assert not same_value({"a": 1}, [1]) and not same_value("1", 1)
    assert same_value(b"x", bytearray(b"x")) and same_value(None, None)
