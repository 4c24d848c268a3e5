"""Merging updates in bounded groups (crdt_sync/yjs/merge.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text, merge_updates

from crdt_sync.records.text import byte_offset
from crdt_sync.yjs.integrate import apply_updates
from crdt_sync.yjs.merge import merge


def _edits(steps: list[tuple[int, int, str]]) -> list[bytes]:
    """Updates of up to three clients editing one text and one map, each client seeing only
    its own edits (so their updates are concurrent)."""
    docs = [Doc(client_id=client + 1) for client in range(3)]
    updates = []
    for client, position, char in steps:
        doc = docs[client]
        before = doc.get_state()
        text = doc.get("t", type=Text)
        current = str(text)
        with doc.transaction():  # pycrdt positions are UTF-8 byte offsets
            text.insert(byte_offset(current, min(position, len(current))), char)
            doc.get("m", type=Map)[char] = position
        updates.append(doc.get_update(before))
    return updates


def _view(*updates: bytes) -> tuple[Any, ...]:
    doc: Doc[Any] = Doc()
    apply_updates(doc, list(updates))  # in any order (works around pycrdt's pending bug)
    return str(doc.get("t", type=Text)), doc.get("m", type=Map).to_py(), doc.get_state()


_steps = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 5), st.sampled_from("abé🚐")),
    min_size=1,
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(steps=_steps, group=st.integers(2, 7), order=st.randoms(use_true_random=False))
def test_any_grouping_merges_to_what_one_call_gives(steps: Any, group: int, order: Any) -> None:
    updates = _edits(steps)
    order.shuffle(updates)  # out of order: some wait for dependencies until merged with them
    assert _view(merge(updates, group)) == _view(merge_updates(*updates)) == _view(*updates)


@settings(max_examples=50, deadline=None)
@given(steps=_steps, group=st.integers(2, 5))
def test_updates_waiting_for_a_missing_dependency_are_kept(steps: Any, group: int) -> None:
    updates = _edits(steps)
    missing, rest = updates[0], updates[1:]
    if not rest:
        return
    merged = merge(rest, group)
    assert _view(merged, missing) == _view(*updates)  # nothing was dropped while it waited


def test_one_update_is_returned_as_it_is_and_nothing_is_an_error() -> None:
    (only,) = _edits([(0, 0, "a")])
    assert merge([only]) is only
    with pytest.raises(ValueError, match="nothing to merge"):
        merge([])
    with pytest.raises(ValueError, match="at least 2"):
        merge([only, only], group=1)
