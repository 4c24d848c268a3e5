"""The record document layout (v2): where a record's data lives, what each slot shows, what
lost, and how a writer replaces what it saw. Pure: works on pycrdt documents, no I/O.

A record's document has these roots (``docs/records.md`` is the full reference):

- ``"lww"``: the register entries (:mod:`crdt_sync.records.lww`): every write of every slot,
  keyed by its HLC timestamp. A slot is a top-level field or a key of a nested map.
- ``"text:<slot>"`` / ``"array:<slot>"``: the content of a text or array slot, a root-level
  ``Text`` / ``Array`` named after the slot (``<slot>`` is the slot as a compact JSON list,
  e.g. ``text:["notes"]``). Root-level types are identified by name, so two replicas that
  create the same text or array concurrently write into the same one: both contents stay.
- ``"conflicts"``: conflicts a writer resolved, kept so that every replica can still show
  them (:data:`KEPT_CONFLICTS` per record at most).
- ``"fields"``: the layout v1 map (fields with nested ``Text``/``Map``/``Array`` objects),
  still read; its nested objects are edited in place.
- ``"deleted"``: the record's tombstones, keyed by the HLC timestamp of the deletion (value
  ``true``). A record with a tombstone is deleted, for good (:meth:`Layout.delete_record`).

What a slot shows (:meth:`Layout.shown`): the entry with the greatest timestamp wins. A value
entry shows its value; a container entry shows its container's content (a map's content is the
slots below it). A deletion shows nothing, unless a container of the slot holds content that
the deleter had not seen (written concurrently): then that content shows ("add wins"). A v1
value shows when the slot has no entry at all.

What lost (:meth:`Layout.slot_conflicts`): every other value or deletion entry of the slot, any
container content of a kind the slot does not show, and a v1 value beside an entry. Each is a
:class:`Conflict`: what lost, to what, from which replica, when.

How a writer replaces a slot (:meth:`Layout.write`): it takes a timestamp greater than the
winner's, moves the slot's conflicts into ``"conflicts"``, removes every entry of the slot and
of the slots below it, the v1 value, and the content of its containers (all of which it has
seen), then adds its entry. So a write is removed only by a writer that saw it win, and
everything else that ever lost stays readable as a conflict.

Deleting a record (:meth:`Layout.delete_record`) is the same rule applied to every slot at
once: the deleter removes everything it saw (keeping the slots' conflicts) and adds a
tombstone. **The deletion wins**: whatever still shows in a deleted record was written by
someone who had not seen the deletion, and each such write is a conflict lost to the deletion
(:meth:`Layout.lost_to_deletion`, part of :meth:`Layout.conflicts`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, Text

from ..errors import InvalidEdit, InvalidMessage
from ..yjs.updates import root_map_keys
from .clock import Timestamp
from .lww import (
    CONTAINERS,
    LWW_ROOT,
    Kind,
    LwwEntry,
    Slot,
    describe_time,
    encode_entry,
    parse_entry,
)
from .values import normalize, to_plain

__all__ = [
    "ARRAY_PREFIX",
    "CONFLICTS_ROOT",
    "DELETED_ROOT",
    "FIELDS_ROOT",
    "KEPT_CONFLICTS",
    "TEXT_PREFIX",
    "Conflict",
    "Layout",
    "Shown",
    "Stamp",
    "Written",
    "array_root_name",
    "layout_of",
    "parse_root_name",
    "read_fields",
    "slot_name",
    "text_root_name",
    "tombstones_in",
]

#: The layout v1 root map: fields, with nested Text/Map/Array objects under their keys.
FIELDS_ROOT = "fields"
#: Root map of the record's tombstones: HLC timestamp of a deletion -> ``True``.
DELETED_ROOT = "deleted"
#: Root map of the conflicts writers resolved (kept so that every replica can show them).
CONFLICTS_ROOT = "conflicts"
#: Prefix of the root-level ``Text`` of a text slot.
TEXT_PREFIX = "text:"
#: Prefix of the root-level ``Array`` of an array slot.
ARRAY_PREFIX = "array:"
#: Conflicts kept in a record's ``"conflicts"`` map; a writer drops the oldest beyond it.
KEPT_CONFLICTS = 100

Stamp = Callable[[Timestamp | None], Timestamp]
"""Issues a timestamp greater than its argument (or a fresh one for ``None``)."""

_MISSING: Any = object()
_CONTENT_ORDER = (Kind.MAP, Kind.ARRAY, Kind.TEXT)  # shown after a deletion, in this order


def slot_name(slot: Slot) -> str:
    """The slot as compact JSON (``["address","street"]``), as in root names."""
    return json.dumps(list(slot), ensure_ascii=False, separators=(",", ":"))


def text_root_name(slot: Slot) -> str:
    """The name of the root-level ``Text`` holding a text slot's content."""
    return TEXT_PREFIX + slot_name(slot)


def array_root_name(slot: Slot) -> str:
    """The name of the root-level ``Array`` holding an array slot's content."""
    return ARRAY_PREFIX + slot_name(slot)


def parse_root_name(name: str) -> tuple[Kind, Slot] | None:
    """``(Kind.TEXT | Kind.ARRAY, slot)`` for a content root's name, else ``None``."""
    if name.startswith(TEXT_PREFIX):
        kind, rest = Kind.TEXT, name[len(TEXT_PREFIX) :]
    elif name.startswith(ARRAY_PREFIX):
        kind, rest = Kind.ARRAY, name[len(ARRAY_PREFIX) :]
    else:
        return None
    try:
        parts = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        return None
    slot = tuple(parts)
    return (kind, slot) if slot_name(slot) == rest else None  # canonical names only


@dataclass(frozen=True, slots=True)
class Written:
    """What one side of a conflict wrote, as plain data.

    ``ts`` is ``None`` for content that has no entry of its own (a layout v1 value, or a
    container a Yjs peer filled without creating it).
    """

    kind: Kind
    value: Any
    ts: Timestamp | None

    @property
    def replica(self) -> str | None:
        """The replica that wrote it, when known."""
        return self.ts.replica if self.ts else None

    def describe(self) -> str:
        """``'open'``, ``a deletion``, ``text 'Arrived 9:05'``..."""
        if self.kind is Kind.DELETED:
            return "a deletion"
        if self.kind is Kind.VALUE:
            return repr(self.value)
        name = {Kind.TEXT: "text", Kind.MAP: "map", Kind.ARRAY: "list"}[self.kind]
        return f"{name} {self.value!r}"

    def encode(self) -> dict[str, Any]:
        """The plain form kept in a document's ``"conflicts"`` map."""
        return {"k": self.kind.value, "v": self.value, "ts": self.ts.encode() if self.ts else None}

    @classmethod
    def decode(cls, raw: Any) -> Written | None:
        """Parse :meth:`encode`'s output; ``None`` if malformed."""
        if not isinstance(raw, dict) or raw.get("k") not in Kind.__members__.values():
            return None
        ts_raw = raw.get("ts")
        try:
            ts = Timestamp.decode(ts_raw) if isinstance(ts_raw, str) else None
        except InvalidEdit:
            return None
        return cls(Kind(raw["k"]), normalize(raw.get("v")), ts)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A write that lost to a concurrent one: ``lost`` was overwritten by ``won`` at ``slot``.

    ``key`` identifies the conflict within its record: the losing entry's key, or for content
    without an entry of its own, a key naming the slot, the kind and the winner.
    """

    key: str
    slot: Slot
    lost: Written
    won: Written

    @property
    def field(self) -> str:
        """The top-level field the conflict is in."""
        return self.slot[0]

    @property
    def path(self) -> str:
        """The slot as a dotted path (``address.street``)."""
        return ".".join(self.slot)

    def describe(self) -> str:
        """A sentence an app can show: what lost, to what, from which replica, and when.

        For example ``status: 'open' from replica tech-17 was overwritten by 'closed' from
        replica office at 2026-11-23T09:15:00.000Z`` (the winner's HLC time, in UTC).
        """
        lost_by = f" from replica {self.lost.replica}" if self.lost.replica else ""
        won_by = f" from replica {self.won.replica}" if self.won.replica else ""
        when = f" at {describe_time(self.won.ts.ms)}" if self.won.ts else ""
        return (
            f"{self.path}: {self.lost.describe()}{lost_by} was overwritten by "
            f"{self.won.describe()}{won_by}{when}"
        )

    def encode(self) -> dict[str, Any]:
        """The plain form kept in a document's ``"conflicts"`` map."""
        slot: Any = self.slot[0] if len(self.slot) == 1 else list(self.slot)
        return {"f": slot, "l": self.lost.encode(), "w": self.won.encode()}

    @classmethod
    def decode(cls, key: str, raw: Any) -> Conflict | None:
        """Parse a kept conflict; ``None`` if malformed."""
        if not isinstance(raw, dict):
            return None
        slot_raw = raw.get("f")
        if isinstance(slot_raw, str):
            slot: Slot = (slot_raw,)
        elif isinstance(slot_raw, list) and slot_raw and all(isinstance(p, str) for p in slot_raw):
            slot = tuple(slot_raw)
        else:
            return None
        lost, won = Written.decode(raw.get("l")), Written.decode(raw.get("w"))
        if lost is None or won is None:
            return None
        return cls(key, slot, lost, won)


@dataclass(frozen=True, slots=True)
class Shown:
    """What a slot shows: ``kind`` (``DELETED``: nothing), the winning entry if any, and for
    a v1 value the object under its key of ``"fields"`` (``legacy``)."""

    kind: Kind
    winner: LwwEntry | None
    value: Any = None
    legacy: Any = _MISSING

    @property
    def present(self) -> bool:
        """Whether the slot shows anything."""
        return self.kind is not Kind.DELETED

    @property
    def is_legacy(self) -> bool:
        """Whether what shows is a layout v1 value (or object) of ``"fields"``."""
        return self.legacy is not _MISSING


def _kind_of_legacy(value: Any) -> Kind:
    if isinstance(value, Text):
        return Kind.TEXT
    if isinstance(value, Map):
        return Kind.MAP
    if isinstance(value, Array):
        return Kind.ARRAY
    return Kind.VALUE


class _Current:
    """``Layout.current()``: the index is brought up to date once, for the whole block."""

    __slots__ = ("_layout",)

    def __init__(self, layout: Layout) -> None:
        self._layout = layout

    def __enter__(self) -> None:
        layout = self._layout
        if not layout._depth:
            layout._fresh()
        layout._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._layout._depth -= 1


class Layout:
    """The layout view of one record document: its roots, and an index of its register
    entries by slot.

    Get it with :func:`layout_of` (one per document). Reads work anywhere; writes
    (:meth:`write`) belong inside a transaction of the document.

    The index follows this view's own writes, and each public call first compares the keys
    of the ``"lww"`` map with the indexed ones, indexing what another transaction added (a
    remote update, an undo) and dropping what it removed. (Neither map events nor the state
    vector can tell: Yrs raises no event for a deletion that waited for its item, and shows
    some entries whose update still waits for an earlier one, beyond its state vector.)
    """

    __slots__ = (
        "__weakref__",
        "_by_slot",
        "_children",
        "_depth",
        "_legacy_keys",
        "_parsed_roots",
        "_slot_of",
        "doc",
        "kept",
        "legacy",
        "registers",
        "tombstones",
    )

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self.registers: Map[Any] = doc.get(LWW_ROOT, type=Map)
        self.kept: Map[Any] = doc.get(CONFLICTS_ROOT, type=Map)
        self.legacy: Map[Any] = doc.get(FIELDS_ROOT, type=Map)
        self.tombstones: Map[Any] = doc.get(DELETED_ROOT, type=Map)
        self._by_slot: dict[Slot, dict[str, LwwEntry]] = {}
        self._slot_of: dict[str, Slot | None] = {}  # every key indexed (None: malformed)
        self._children: dict[Slot, dict[str, int]] = {}  # parent -> child key -> slots below
        self._depth = 0  # inside a public call: the index is current
        self._legacy_keys: set[str] = set()  # the v1 map's keys, as of the last _fresh()
        self._parsed_roots: dict[str, tuple[Kind, Slot] | None] = {}  # parse_root_name memo

    # -- the entry index -------------------------------------------------------------------

    def current(self) -> _Current:
        """``with layout.current():`` calls that see no other transaction in between (one
        edit's operations) check the index once. Every public call does it by itself."""
        return _Current(self)

    def _fresh(self) -> None:
        keys = set(self.registers.keys())
        if keys.symmetric_difference(self._slot_of):
            for key in [k for k in self._slot_of if k not in keys]:
                self._unindex(key)
            new = keys.difference(self._slot_of)
            if len(new) > 2:  # one read of the map instead of one per entry
                values = {k: v for k, v in self.registers.items() if k in new}
            else:
                values = {k: self.registers[k] for k in new}
            for key in sorted(values):  # the same order everywhere
                self._index(key, values[key])
        self._legacy_keys = set(self.legacy.keys()) if len(self.legacy) else set()

    def _index(self, key: str, raw: Any) -> None:
        self._unindex(key)
        entry = parse_entry(key, raw)
        if entry is None:
            self._slot_of[key] = None
        else:
            self._index_entry(entry)

    def _index_entry(self, entry: LwwEntry) -> None:
        self._slot_of[entry.key] = entry.slot
        entries = self._by_slot.get(entry.slot)
        if entries is None:
            entries = self._by_slot[entry.slot] = {}
            for depth in range(len(entry.slot)):  # every ancestor has this branch below it
                below = self._children.setdefault(entry.slot[:depth], {})
                below[entry.slot[depth]] = below.get(entry.slot[depth], 0) + 1
        entries[entry.key] = entry

    def _unindex(self, key: str) -> None:
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        entries = self._by_slot[slot]
        del entries[key]
        if not entries:
            del self._by_slot[slot]
            for depth in range(len(slot)):
                below = self._children[slot[:depth]]
                below[slot[depth]] -= 1
                if not below[slot[depth]]:
                    del below[slot[depth]]

    def _entries(self, slot: Slot) -> list[LwwEntry]:
        return sorted(self._by_slot.get(slot, {}).values(), key=lambda e: e.ts)

    def _winner(self, slot: Slot) -> LwwEntry | None:
        entries = self._by_slot.get(slot)
        if not entries:
            return None
        return max(entries.values(), key=lambda e: e.ts)

    def _all_entries(self) -> list[LwwEntry]:
        return [e for entries in self._by_slot.values() for e in entries.values()]

    # -- content roots ---------------------------------------------------------------------

    def _root_names(self) -> list[str]:
        # Doc.keys() wraps every root type in a Python object (7 µs for four roots); the root
        # table's names alone cost under 1 µs. Private pycrdt API, with the public fallback.
        try:
            with self.doc.transaction() as txn:
                assert txn._txn is not None
                return list(self.doc._doc.roots(txn._txn))
        except AttributeError:  # pragma: no cover (another pycrdt)
            return list(self.doc.keys())

    def _root_slots(self) -> dict[Slot, set[Kind]]:
        found: dict[Slot, set[Kind]] = {}
        parsed_roots = self._parsed_roots
        for name in self._root_names():
            parsed = parsed_roots.get(name, _MISSING)
            if parsed is _MISSING:
                parsed = parsed_roots[name] = parse_root_name(name)
            if parsed is not None:
                found.setdefault(parsed[1], set()).add(parsed[0])
        return found

    def text(self, slot: Slot) -> Text:
        """The root-level ``Text`` of ``slot`` (created empty if missing)."""
        text: Text = self.doc.get(text_root_name(slot), type=Text)
        return text

    def array(self, slot: Slot) -> Array[Any]:
        """The root-level ``Array`` of ``slot`` (created empty if missing)."""
        array: Array[Any] = self.doc.get(array_root_name(slot), type=Array)
        return array

    def _root_content(self, slot: Slot, kind: Kind, roots: dict[Slot, set[Kind]]) -> bool:
        if kind not in roots.get(slot, ()):
            return False
        return len(self.text(slot) if kind is Kind.TEXT else self.array(slot)) > 0

    def _child_keys(self, slot: Slot, roots: dict[Slot, set[Kind]] | None = None) -> list[str]:
        roots = self._root_slots() if roots is None else roots
        keys = dict.fromkeys(self._children.get(slot, ()))
        depth = len(slot)
        for root_slot in roots:
            if len(root_slot) > depth and root_slot[:depth] == slot:
                keys[root_slot[depth]] = None
        if not slot:
            keys.update(dict.fromkeys(self._legacy_keys))
        return list(keys)

    def _has_content(self, slot: Slot, kind: Kind, roots: dict[Slot, set[Kind]]) -> bool:
        if kind is Kind.MAP:
            return any(
                self._shown((*slot, k), roots).present for k in self._child_keys(slot, roots)
            )
        return self._root_content(slot, kind, roots)

    # -- what a slot shows -----------------------------------------------------------------

    def _legacy_at(self, slot: Slot) -> Any:
        if len(slot) != 1 or slot[0] not in self._legacy_keys:
            return _MISSING
        return self.legacy[slot[0]]

    def _shown(self, slot: Slot, roots: dict[Slot, set[Kind]] | None = None) -> Shown:
        winner = self._winner(slot)
        if winner is None:
            legacy = self._legacy_at(slot)
            if legacy is not _MISSING:
                kind = _kind_of_legacy(legacy)
                value = normalize(legacy) if kind is Kind.VALUE else None
                return Shown(kind, None, value, legacy)
        elif winner.kind is Kind.VALUE:
            return Shown(Kind.VALUE, winner, normalize(winner.value))
        elif winner.kind in CONTAINERS:
            return Shown(winner.kind, winner)
        roots = self._root_slots() if roots is None else roots
        for kind in _CONTENT_ORDER:  # after a deletion (or no entry): content written since
            if self._has_content(slot, kind, roots):
                return Shown(kind, winner)
        return Shown(Kind.DELETED, winner)

    def _value(self, slot: Slot, roots: dict[Slot, set[Kind]] | None = None) -> Any:
        shown = self._shown(slot, roots)
        if not shown.present:
            raise KeyError(slot[-1])
        return self._plain(slot, shown, roots)

    def _plain(self, slot: Slot, shown: Shown, roots: dict[Slot, set[Kind]] | None) -> Any:
        if shown.kind is Kind.VALUE:
            return shown.value
        if shown.is_legacy:
            return to_plain(shown.legacy)
        return self._content(slot, shown.kind, roots)

    def _content(self, slot: Slot, kind: Kind, roots: dict[Slot, set[Kind]] | None) -> Any:
        if kind is Kind.TEXT:
            return str(self.text(slot))
        if kind is Kind.ARRAY:
            return [to_plain(v) for v in self.array(slot)]
        roots = self._root_slots() if roots is None else roots
        return self._read_map(slot, roots)

    def _read_map(self, slot: Slot, roots: dict[Slot, set[Kind]] | None = None) -> dict[str, Any]:
        roots = self._root_slots() if roots is None else roots
        values: dict[str, Any] = {}
        for key in self._child_keys(slot, roots):
            child = (*slot, key)
            shown = self._shown(child, roots)
            if shown.present:
                values[key] = self._plain(child, shown, roots)
        return values

    # -- conflicts -------------------------------------------------------------------------

    def _written(self, slot: Slot, shown: Shown, roots: dict[Slot, set[Kind]]) -> Written:
        if shown.winner is not None:
            winner = shown.winner
            if winner.kind is Kind.VALUE:
                return Written(Kind.VALUE, normalize(winner.value), winner.ts)
            if winner.kind is Kind.DELETED:
                return Written(Kind.DELETED, None, winner.ts)
            return Written(winner.kind, self._content(slot, winner.kind, roots), winner.ts)
        if not shown.present:
            return Written(Kind.DELETED, None, None)
        return Written(shown.kind, self._plain(slot, shown, roots), None)

    def _slot_conflicts(
        self, slot: Slot, roots: dict[Slot, set[Kind]] | None = None
    ) -> list[Conflict]:
        roots = self._root_slots() if roots is None else roots
        shown = self._shown(slot, roots)
        winner = shown.winner
        won: Written | None = None
        found: list[Conflict] = []

        def winning() -> Written:
            nonlocal won
            if won is None:
                won = self._written(slot, shown, roots)
            return won

        latest: dict[Kind, LwwEntry] = {}
        for entry in self._entries(slot):
            if entry.kind in CONTAINERS:
                latest[entry.kind] = entry
            elif entry is not winner:
                lost = Written(entry.kind, normalize(entry.value), entry.ts)
                found.append(Conflict(entry.key, slot, lost, winning()))
        for kind in _CONTENT_ORDER:
            if kind is shown.kind and not shown.is_legacy:
                continue
            if not self._has_content(slot, kind, roots):
                continue
            creator = latest.get(kind)
            lost = Written(kind, self._content(slot, kind, roots), creator.ts if creator else None)
            after = winner.key if winner else ""
            key = creator.key if creator else f"{kind.value}:{slot_name(slot)}@{after}"
            found.append(Conflict(key, slot, lost, winning()))
        legacy = self._legacy_at(slot)
        if legacy is not _MISSING and winner is not None:
            lost = Written(_kind_of_legacy(legacy), to_plain(legacy), None)
            key = f"v1:{slot_name(slot)}@{winner.key}"
            found.append(Conflict(key, slot, lost, winning()))
        return found

    def _conflicts(self) -> list[Conflict]:
        roots = self._root_slots()
        slots = dict.fromkeys(self._by_slot)
        slots.update(dict.fromkeys(roots))
        # Slots with content roots at or below them (the rest need no content checks).
        with_roots = {root[:depth] for root in roots for depth in range(1, len(root) + 1)}
        found: dict[str, Conflict] = {}
        for slot in slots:
            if (
                len(self._by_slot.get(slot, ())) == 1
                and slot not in with_roots
                and not self._children.get(slot)
                and slot[0] not in self._legacy_keys
            ):
                continue  # one entry, nothing else: nothing can have lost here
            for conflict in self._slot_conflicts(slot, roots):
                found.setdefault(conflict.key, conflict)
        deletion = self.deletion()
        if deletion is not None:
            for conflict in self._lost_to_deletion(deletion, roots):
                found.setdefault(conflict.key, conflict)
        if not len(self.kept):
            return sorted(found.values(), key=lambda c: (c.slot, c.key))
        for key, raw in self.kept.items():
            kept = Conflict.decode(key, raw)
            if kept is not None:
                found.setdefault(key, kept)
        return sorted(found.values(), key=lambda c: (c.slot, c.key))

    # -- writing ---------------------------------------------------------------------------

    def _write(self, slot: Slot, kind: Kind, value: Any, stamp: Stamp) -> LwwEntry:
        winner = self._winner(slot)
        ts = stamp(winner.ts if winner else None)
        # Keys must be unique across all slots. A timestamp stepped past a skewed winner
        # (HybridClock.after) is not issued by the clock itself, so it can meet another entry's
        # key: stamp again, after it, until the key is free (each stamp is greater).
        while ts.encode() in self._slot_of:  # the index holds every key of the map
            ts = stamp(ts)
        self._supersede(slot)
        entry = LwwEntry(slot, ts, kind, value, winner.ts if winner else None)
        self.registers[entry.key] = encode_entry(entry)
        self._index_entry(entry)
        return entry

    def _supersede(self, slot: Slot) -> None:
        roots = self._root_slots()
        entries = self._entries(slot)
        children = self._child_keys(slot, roots)
        if (
            len(entries) == 1
            and not children
            and slot not in roots
            and slot[0] not in self._legacy_keys
        ):
            # The common case, a value replaced: nothing lost, no content, nothing below.
            del self.registers[entries[0].key]
            self._unindex(entries[0].key)
            return
        conflicts = self._slot_conflicts(slot, roots)
        self._keep(conflicts)
        for child in children:
            self._supersede((*slot, child))
        for entry in entries:
            del self.registers[entry.key]
            self._unindex(entry.key)
        if len(slot) == 1 and slot[0] in self._legacy_keys:
            del self.legacy[slot[0]]
            self._legacy_keys.discard(slot[0])
        kinds = roots.get(slot, set())
        if Kind.TEXT in kinds:
            self.text(slot).clear()
        if Kind.ARRAY in kinds:
            self.array(slot).clear()

    def _keep(self, conflicts: list[Conflict]) -> None:
        if not conflicts:
            return
        for conflict in conflicts:
            self.kept[conflict.key] = conflict.encode()
        if len(self.kept) <= KEPT_CONFLICTS:
            return
        by_age = []
        for key, raw in self.kept.items():
            kept = Conflict.decode(key, raw)
            won = kept.won.ts.encode() if kept is not None and kept.won.ts else ""
            by_age.append((won, key))
        by_age.sort()
        for _, key in by_age[: len(by_age) - KEPT_CONFLICTS]:
            del self.kept[key]

    # -- public calls: each checks the index once --------------------------------------

    def entries(self, slot: Slot) -> list[LwwEntry]:
        """The entries of ``slot``, oldest first."""
        with self.current():
            return self._entries(slot)

    def winner(self, slot: Slot) -> LwwEntry | None:
        """The entry of ``slot`` with the greatest timestamp."""
        with self.current():
            return self._winner(slot)

    def all_entries(self) -> list[LwwEntry]:
        """Every well-formed entry of the document."""
        with self.current():
            return self._all_entries()

    def child_keys(self, slot: Slot) -> list[str]:
        """Keys that have entries or content below ``slot`` (shown or not)."""
        with self.current():
            return self._child_keys(slot)

    def shown(self, slot: Slot) -> Shown:
        """What ``slot`` shows (see the module docstring)."""
        with self.current():
            return self._shown(slot)

    def value(self, slot: Slot) -> Any:
        """The plain value ``slot`` shows; ``KeyError`` if it shows nothing."""
        with self.current():
            return self._value(slot)

    def read_map(self, slot: Slot) -> dict[str, Any]:
        """The slots below ``slot`` that show something, as plain values."""
        with self.current():
            return self._read_map(slot)

    def slot_conflicts(self, slot: Slot) -> list[Conflict]:
        """What lost at ``slot`` and is still in the document outside ``"conflicts"``."""
        with self.current():
            return self._slot_conflicts(slot)

    def conflicts(self) -> list[Conflict]:
        """Every conflict the document holds: the ones still in place, then the kept ones
        (in ``"conflicts"``), each once, ordered by path then key."""
        with self.current():
            return self._conflicts()

    def write(self, slot: Slot, kind: Kind, value: Any, stamp: Stamp) -> LwwEntry:
        """Replace whatever ``slot`` holds with ``value`` (``Kind.VALUE``), a deletion, or an
        empty container; inside a transaction. Returns the new entry.

        The new timestamp beats the slot's winner; the slot's conflicts (and those below it)
        move to ``"conflicts"``; its entries, the entries below it, its v1 value and its
        containers' content are removed: the writer saw them all.
        """
        with self.current():
            return self._write(slot, kind, value, stamp)

    def supersede(self, slot: Slot) -> None:
        """Remove everything ``slot`` holds, keeping its conflicts (see :meth:`write`)."""
        with self.current():
            return self._supersede(slot)

    # -- deletion --------------------------------------------------------------------------

    def deletion(self) -> Timestamp | None:
        """When the record was deleted and by whom (its greatest tombstone), or ``None`` if it
        is not deleted. Malformed tombstone keys are ignored."""
        if not len(self.tombstones):
            return None
        found: Timestamp | None = None
        for key in self.tombstones.keys():  # noqa: SIM118 (typed keys)
            try:
                ts = Timestamp.decode(key)
            except InvalidEdit:
                continue
            if found is None or ts > found:
                found = ts
        return found

    def delete_record(self, stamp: Stamp) -> Timestamp:
        """Delete the record, inside a transaction: remove everything the writer sees (every
        slot superseded as by :meth:`write`, so their conflicts are kept) and add a tombstone
        whose timestamp beats every entry seen. Returns the tombstone's timestamp."""
        with self.current():
            latest: Timestamp | None = self.deletion()
            for entry in self._all_entries():
                if latest is None or entry.ts > latest:
                    latest = entry.ts
            ts = stamp(latest)
            while ts.encode() in self._slot_of or ts.encode() in self.tombstones:
                ts = stamp(ts)
            for key in self._child_keys(()):
                self._supersede((key,))
            self.tombstones[ts.encode()] = True
            return ts

    def supersede_all(self) -> None:
        """Remove every slot's content as a deleter does (conflicts kept), without adding a
        tombstone: what a deleter whose tombstone is gone (purged) had removed."""
        with self.current():
            for key in self._child_keys(()):
                self._supersede((key,))

    def lost_to_deletion(self, deletion: Timestamp | None) -> list[Conflict]:
        """The writes that show in a deleted record: each was made without seeing the
        deletion (a deleter removes what it saw), so each lost to it. ``deletion`` is the
        tombstone's timestamp (``None``: unknown). Reported per slot that holds a value, a text
        or a list (a map's slots are reported one by one)."""
        with self.current():
            return self._lost_to_deletion(deletion, self._root_slots())

    def _lost_to_deletion(
        self, deletion: Timestamp | None, roots: dict[Slot, set[Kind]]
    ) -> list[Conflict]:
        won = Written(Kind.DELETED, None, deletion)
        after = deletion.encode() if deletion else "purged"
        found: list[Conflict] = []

        def walk(slot: Slot) -> None:
            shown = self._shown(slot, roots)
            if not shown.present:
                return
            if shown.kind is Kind.MAP and not shown.is_legacy:
                for key in self._child_keys(slot, roots):
                    walk((*slot, key))
                return
            winner = shown.winner
            if winner is not None and winner.kind is shown.kind:
                key, ts = winner.key, winner.ts
            else:  # content without an entry of its own (written into a cleared container)
                key, ts = f"{shown.kind.value}:{slot_name(slot)}@{after}", None
            lost = Written(shown.kind, self._plain(slot, shown, roots), ts)
            found.append(Conflict(key, slot, lost, won))

        for name in self._child_keys((), roots):
            walk((name,))
        return found

    # -- the record ------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        """Every field of the record that shows something, as plain values."""
        return self.read_map(())


def tombstones_in(update: bytes) -> list[str]:
    """The tombstone keys a Yjs update adds to a record (``"deleted"`` entries), read from its
    bytes without building a document: how a store or the relay learns that an update
    deletes its record. Cheap for the other updates (a byte search rules them out)."""
    if _DELETED_NAME not in update:
        return []
    try:
        keys = root_map_keys(update, DELETED_ROOT)
    except InvalidMessage:
        return []
    return [key for key in keys if _is_timestamp(key)]


def _is_timestamp(key: str) -> bool:
    try:
        Timestamp.decode(key)
    except InvalidEdit:
        return False
    return True


# The root's name as Yjs writes it (varString: its length, then UTF-8 bytes).
_DELETED_NAME = bytes([len(DELETED_ROOT)]) + DELETED_ROOT.encode()


def layout_of(doc: Doc[Any]) -> Layout:
    """The :class:`Layout` of ``doc`` (made once per document, then kept on it)."""
    layout: Layout | None = doc.__dict__.get(_LAYOUT)
    if layout is None:
        layout = Layout(doc)
        setattr(doc, _LAYOUT, layout)
    return layout


_LAYOUT = "_crdt_sync_layout"


def read_fields(doc: Doc[Any]) -> dict[str, Any]:
    """All of a record's fields as plain values."""
    return layout_of(doc).read()
