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

from pycrdt import Doc, get_update

from .updates import decode_state_vector, delete_set_only, encode_state_vector


def covers(doc_state: dict[int, int], update: bytes, *, encoded_state: bytes | None = None) -> bool:
    """Whether a document with state vector ``doc_state`` has integrated all of ``update``.

    An update with structs is covered when the document holds every struct it carries; a
    delete-set-only update when the document holds every item it deletes (otherwise Yrs keeps
    the deletion pending, and encoding the document would drop it). ``encoded_state``, if given,
    must be ``doc_state`` encoded (e.g. ``doc.get_state()``): it saves re-encoding it per call.
    """
    ranges = delete_set_only(update)
    if ranges is not None:
        return all(doc_state.get(client, 0) >= clock + length for client, clock, length in ranges)
    # What of the update lies beyond the state vector (byte level, no document involved):
    # nothing but a delete set means every struct is already there.
    if encoded_state is None:
        encoded_state = encode_state_vector(doc_state)
    missing = get_update(update, encoded_state)
    return delete_set_only(missing) is not None


def apply_updates(doc: Doc[Any], updates: Iterable[bytes]) -> bool:
    """Apply ``updates`` to ``doc`` in any order; out-of-order ones are retried until they
    integrate or no further progress is possible (their dependencies are missing).

    Returns whether every update is integrated. If not, the document holds some of them only
    as pending: rebuild it with all of its updates once the missing ones arrive.
    """
    waiting: list[bytes] = []
    for update in updates:
        doc.apply_update(update)
        waiting.append(update)
    encoded = doc.get_state()
    state = decode_state_vector(encoded)
    waiting = [u for u in waiting if not covers(state, u, encoded_state=encoded)]
    while waiting:
        for update in waiting:
            doc.apply_update(update)
        encoded = doc.get_state()
        new_state = decode_state_vector(encoded)
        if new_state == state:
            return False  # the rest waits for dependencies we do not have
        state = new_state
        waiting = [u for u in waiting if not covers(state, u, encoded_state=encoded)]
    return True
