"""apply_updates() integrates updates in any order; covers() tells what a document holds."""

from __future__ import annotations

from typing import Any

import pycrdt
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.yjs.integrate import apply_updates, covers
from crdt_sync.yjs.updates import (
    decode_state_vector,
    delete_set_only,
    delete_set_update,
    encode_state_vector,
)


def _history() -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    fields = doc.get("fields", type=pycrdt.Map)
    with doc.transaction():
        fields["notes"] = pycrdt.Text("hello wörld")
    for i in range(6):
        with doc.transaction():
            fields[f"f{i}"] = i
            text = fields["notes"]
            text.insert(0, f"{i}é")
        if i % 2:
            with doc.transaction():
                del fields["notes"][0:1]  # a delete-set-only update
    return updates


def _content(doc: pycrdt.Doc[Any]) -> Any:
    return doc.get("fields", type=pycrdt.Map).to_py()


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_any_order_with_duplicates_gives_the_same_document(rng: Any) -> None:
    updates = _history()
    expected: pycrdt.Doc[Any] = pycrdt.Doc()
    apply_updates(expected, updates)
    shuffled = updates + rng.sample(updates, k=3)
    rng.shuffle(shuffled)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    apply_updates(doc, shuffled)
    assert _content(doc) == _content(expected)
    state = decode_state_vector(doc.get_state())
    assert all(covers(state, u) for u in updates)


def test_covers_reports_missing_structs_and_pending_deletions() -> None:
    updates = _history()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(updates[0])
    state = decode_state_vector(doc.get_state())
    assert covers(state, updates[0])
    assert not covers(state, updates[1])
    pending_delete = delete_set_update([(7, 10_000, 1)])
    assert not covers(state, pending_delete)
    assert covers(state, delete_set_update([(7, 0, 1)]))


def test_state_vector_and_delete_set_encodings() -> None:
    vector = {7: 13, 2**32 - 1: 1}
    assert decode_state_vector(encode_state_vector(vector)) == vector
    assert decode_state_vector(b"") == {}
    ranges = [(7, 0, 2), (9, 5, 1)]
    assert sorted(delete_set_only(delete_set_update(ranges)) or []) == ranges
    assert delete_set_only(_history()[0]) is None
    assert delete_set_only(b"\x00\x01") is None  # truncated
