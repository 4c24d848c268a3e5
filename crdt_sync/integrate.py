"""Applying many updates to a document, whatever order they come in.

Yrs keeps an update whose dependencies are missing as "pending" and integrates it when they
arrive, but with several pending updates at once it can drop some of them (checked with pycrdt
0.14.13: applying four sequential updates in reverse order loses one). Applying an update again
is harmless, so :func:`apply_updates` re-applies every update the document does not yet cover
until nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycrdt import Doc, get_state

from .yjs_encoding import decode_state_vector


def covers(doc_state: dict[int, int], update: bytes) -> bool:
    """Whether a document with state vector ``doc_state`` holds every struct of ``update``.

    Delete-set-only updates carry no structs and are never reported as covered.
    """
    wanted = decode_state_vector(get_state(update))
    if not wanted:
        return False
    return all(doc_state.get(client, 0) >= clock for client, clock in wanted.items())


def apply_updates(doc: Doc[Any], updates: Iterable[bytes]) -> None:
    """Apply ``updates`` to ``doc`` in any order; out-of-order ones are retried until they
    integrate (or until no further progress is possible: their dependencies are missing)."""
    waiting: list[bytes] = []
    for update in updates:
        doc.apply_update(update)
        waiting.append(update)
    if len(waiting) < 2:
        return
    state = decode_state_vector(doc.get_state())
    waiting = [u for u in waiting if not covers(state, u)]
    while waiting:
        for update in waiting:
            doc.apply_update(update)
        new_state = decode_state_vector(doc.get_state())
        if new_state == state:
            return
        state = new_state
        waiting = [u for u in waiting if not covers(state, u)]
