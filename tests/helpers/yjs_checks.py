"""Checks on Yjs states stored by the relay, for tests."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc

from crdt_sync.yjs.updates import decode_state_vector, read_update_clocks


def nothing_pending(state: bytes) -> bool:
    """Whether everything in a stored state integrates, none of it waiting for a missing
    dependency: read from the bytes (no struct or deletion needs clocks the state does not
    carry), and checked by pycrdt (a document built from it holds every struct it carries)."""
    doc: Doc[Any] = Doc()
    doc.apply_update(state)
    carried: dict[int, int] = {}
    clocks = read_update_clocks(state)
    clocks.extend(carried)
    return clocks.missing({}) is None and decode_state_vector(doc.get_state()) == carried
