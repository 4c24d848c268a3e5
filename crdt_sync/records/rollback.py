"""Compensating edits that take back one local update while keeping everything after it.

Yjs updates from one client form a contiguous clock sequence, so a refused local update cannot
simply be dropped: later updates of the same record reference its clocks and would never
integrate anywhere. Instead the store keeps the refused update and adds a *compensation* that
undoes its visible effect on the current document, computed with Yjs's own selective undo
(pycrdt's ``UndoManager``) on a scratch copy of the record:

1. the copy is built from the state before the update, then the update itself in a
   transaction the undo manager tracks, then every later change (local or remote) in one it
   does not track;
2. undoing the tracked transaction deletes what the update inserted and re-creates what it
   deleted, each where it was: a character or array element goes back between the neighbours
   it had (later insertions next to it stay where they were put), a map entry gets its old
   value back unless a later edit overwrote it again;
3. the undo's update applies to the current document as it is (the copy holds the same state).

The refused update plus its compensation is a net no-op that can be uploaded in its place.
Pure: works on pycrdt documents in memory.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Doc, Map, Text, TransactionEvent, UndoManager

from .layout import parse_root_name
from .lww import Kind

__all__ = ["compensate"]

# Transaction origins on the scratch copy: only the refused update is tracked for the undo.
_REFUSED = "crdt-sync:refused"
_LATER = "crdt-sync:later"


def compensate(before: Doc[Any], after: Doc[Any], current: Doc[Any]) -> None:
    """Undo, in ``current``, what turned ``before`` into ``after``.

    ``after`` is ``before`` plus the update to take back; ``current`` contains ``after``'s
    history plus later edits. Call inside ``current``'s transaction (the caller captures the
    resulting update). ``before`` and ``after`` are not modified.
    """
    copy: Doc[Any] = Doc()
    # Every root the record has once the refused update is in (it may have created some),
    # typed before any content arrives: content roots by their name, the others are maps.
    scopes: list[Any] = []  # pycrdt's BaseType is private
    for name in dict.fromkeys([*before.keys(), *after.keys()]):
        parsed = parse_root_name(name)
        if parsed is None:
            scopes.append(copy.get(name, type=Map))
        elif parsed[0] is Kind.TEXT:
            scopes.append(copy.get(name, type=Text))
        else:
            scopes.append(copy.get(name, type=Array))
    copy.apply_update(before.get_update())
    undo = UndoManager(
        scopes=scopes,
        capture_timeout_millis=0,  # never merge the refused update with anything else
    )
    undo.include_origin(_REFUSED)
    with copy.transaction(origin=_REFUSED):
        copy.apply_update(after.get_update(before.get_state()))
    with copy.transaction(origin=_LATER):
        copy.apply_update(current.get_update(after.get_state()))
    compensation: list[bytes] = []

    def capture(event: TransactionEvent) -> None:
        compensation.append(event.update)

    subscription = copy.observe(capture)
    try:
        undo.undo()
    finally:
        copy.unobserve(subscription)
    for update in compensation:
        current.apply_update(update)
