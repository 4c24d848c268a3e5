"""Compensating edits that take back one local update while keeping everything after it.

Yjs updates from one client form a contiguous clock sequence, so a refused local update cannot
simply be dropped: later updates of the same record reference its clocks and would never
integrate anywhere. Instead the store keeps the refused update and adds a *compensation* that
undoes its visible effect on the current document:

1. every item the update inserted is deleted by id (a delete-set-only update), wherever later
   edits moved it;
2. what the update deleted or overwrote is restored: map entries (fields, nested maps, LWW
   entries) get the value they had before the update, unless a later edit changed them again;
   deleted text is re-inserted where it was, located with a sticky index.

The refused update plus its compensation is a net no-op that can be uploaded in its place.
Pure: works on pycrdt documents in memory.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Assoc, Doc, Map, StickyIndex, Text

from .lww import LWW_ROOT
from .record import FIELDS_ROOT
from .text import byte_offset
from .values import to_crdt, to_plain
from .yjs_encoding import decode_state_vector, delete_set_update


def inserted_ranges(before: Doc[Any], after: Doc[Any]) -> list[tuple[int, int, int]]:
    """The ``(client, clock, length)`` id ranges present in ``after`` but not in ``before``."""
    old = decode_state_vector(before.get_state())
    new = decode_state_vector(after.get_state())
    return [
        (client, old.get(client, 0), clock - old.get(client, 0))
        for client, clock in new.items()
        if clock > old.get(client, 0)
    ]


def compensate(before: Doc[Any], after: Doc[Any], current: Doc[Any]) -> None:
    """Undo, in ``current``, what turned ``before`` into ``after``.

    ``after`` is ``before`` plus the update to take back; ``current`` contains ``after``'s
    history plus later edits. Call inside ``current``'s transaction (the caller captures the
    resulting update). ``before`` and ``after`` are not modified.
    """
    current.apply_update(delete_set_update(inserted_ranges(before, after)))
    for root in (FIELDS_ROOT, LWW_ROOT):
        _restore_map(
            before.get(root, type=Map), after.get(root, type=Map), current.get(root, type=Map)
        )


def _restore_map(before: Map[Any], after: Map[Any], current: Map[Any]) -> None:
    for key in list(before.keys()):
        old = before[key]
        new = after.get(key)
        if key not in current:
            # The update deleted or replaced it (its replacement was just deleted by id).
            current[key] = _copy(old)
            continue
        now = current[key]
        if isinstance(old, Map) and isinstance(now, Map) and isinstance(new, Map):
            _restore_map(old, new, now)
        elif isinstance(old, Text) and isinstance(now, Text) and isinstance(new, Text):
            _restore_text(old, new, now)
        elif new is not None and _same(now, new) and not _same(now, old):
            current[key] = _copy(old)


def _restore_text(before: Text, after: Text, current: Text) -> None:
    """Re-insert text the update deleted, at the place it was deleted from."""
    old, new = str(before), str(after)
    if len(new) >= len(old) and old in new:
        return  # nothing deleted (pure insertion, already removed by id)
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(old), len(new)) - prefix
        and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]
    ):
        suffix += 1
    deleted = old[prefix : len(old) - suffix]
    if not deleted:
        return
    if prefix == 0:
        position = 0
    else:
        # Anchor on the last character before the deleted span, as it stands in ``after``.
        anchor = after.sticky_index(byte_offset(new, prefix), Assoc.BEFORE)
        position = StickyIndex.decode(anchor.encode(), current).get_index()
    current.insert(position, deleted)


def _same(a: Any, b: Any) -> bool:
    return bool(to_plain(a) == to_plain(b))


def _copy(value: Any) -> Any:
    """A fresh CRDT value equal to ``value`` (plain values are stored as they are)."""
    if isinstance(value, Text):
        return Text(str(value))
    if isinstance(value, Map | Array):
        return to_crdt(to_plain(value))
    return value
