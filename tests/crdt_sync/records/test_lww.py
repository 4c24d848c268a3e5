"""Register entries (crdt_sync.records.lww): the policy, and the encoding of one write of a slot.

What wins and what lost among entries, and how a writer replaces them, is crdt_sync.records.layout's
part (tests/crdt_sync/test_layout.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_sync.errors import InvalidEdit
from crdt_sync.records import lww
from crdt_sync.records.clock import Timestamp
from crdt_sync.records.lww import Kind, LwwEntry, encode_entry, parse_entry

T0 = 1_763_890_500_000  # 2025-11-23T09:35:00Z


def ts(ms: int, replica: str = "a", counter: int = 0) -> Timestamp:
    return Timestamp(T0 + ms, counter, replica)


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


def test_a_top_level_value_keeps_the_v1_lww_encoding() -> None:
    entry = LwwEntry(("status",), ts(1), Kind.VALUE, "open", None)
    assert encode_entry(entry) == {"f": "status", "v": "open", "b": None}
    assert entry.key == ts(1).encode() and entry.field == "status"


def test_nested_slots_deletions_and_containers() -> None:
    base = ts(0)
    cases = [
        (
            LwwEntry(("site", "city"), ts(1), Kind.VALUE, "Lyon", base),
            {"f": ["site", "city"], "v": "Lyon", "b": base.encode()},
        ),
        (
            LwwEntry(("status",), ts(2), Kind.DELETED, None, base),
            {"f": "status", "d": True, "b": base.encode()},
        ),
        (
            LwwEntry(("notes",), ts(3), Kind.TEXT, None, None),
            {"f": "notes", "t": "text", "b": None},
        ),
        (
            LwwEntry(("a", "b"), ts(4), Kind.MAP, None, None),
            {"f": ["a", "b"], "t": "map", "b": None},
        ),
        (
            LwwEntry(("tags",), ts(5), Kind.ARRAY, None, None),
            {"f": "tags", "t": "array", "b": None},
        ),
    ]
    for entry, raw in cases:
        assert encode_entry(entry) == raw
        assert parse_entry(entry.key, raw) == entry
    assert parse_entry(ts(2).encode(), cases[1][1]).deleted  # type: ignore[union-attr]


def test_a_one_element_path_is_the_top_level_slot() -> None:
    entry = parse_entry(ts(1).encode(), {"f": ["status"], "v": 1, "b": None})
    assert entry is not None and entry.slot == ("status",)


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("not-a-timestamp", {"f": "status", "v": "evil"}),
        (ts(9).encode().upper(), {"f": "status", "v": "uppercase key"}),
        (ts(8).encode(), "not a dict"),
        (ts(7).encode(), {"v": "no field"}),
        (ts(6).encode(), {"f": 3, "v": "field not a str"}),
        (ts(6).encode(), {"f": [], "v": "empty path"}),
        (ts(6).encode(), {"f": ["a", 2], "v": "path of non-strings"}),
        (ts(10).encode(), {"f": "status", "v": "bad base", "b": "nope"}),
        (ts(10).encode(), {"f": "status", "v": "numeric base", "b": 5}),
        (ts(11).encode(), {"f": "status", "t": "set"}),
    ],
)
def test_malformed_entries_parse_as_none(key: str, raw: Any) -> None:
    assert parse_entry(key, raw) is None


def test_entry_with_a_non_string_base_is_malformed() -> None:
    # docs/records.md: readers in every language ignore it (crdt_sync/js/record.mjs too).
    assert parse_entry(ts(1).encode(), {"f": "status", "v": "x", "b": 12}) is None
    assert parse_entry(ts(1).encode(), {"f": "status", "v": "x"}) is not None  # b absent


@given(
    st.lists(st.text(min_size=0, max_size=4), min_size=1, max_size=3),
    st.sampled_from(list(Kind)),
    st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3)),
)
def test_encoding_roundtrips(path: list[str], kind: Kind, value: Any) -> None:
    entry = LwwEntry(tuple(path), ts(3), kind, value if kind is Kind.VALUE else None, ts(1))
    assert parse_entry(entry.key, encode_entry(entry)) == entry


def test_describe_time_falls_back_to_ms_beyond_the_calendar() -> None:
    assert lww.describe_time(T0) == "2025-11-23T09:35:00.000Z"
    assert lww.describe_time(10**18) == f"{10**18} ms"
