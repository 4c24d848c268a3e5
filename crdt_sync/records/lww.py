"""Register entries: every write of a record slot, keyed by its HLC timestamp. Pure, no I/O.

A *slot* is a place in a record that holds one thing: a top-level field (``("status",)``) or
a key of a nested map (``("address", "street")``). Every write of a slot is one entry of the
document's root map ``"lww"`` (the name dates from when only declared last-write-wins fields
used it; since layout v2 every slot does), keyed by the write's HLC timestamp
(:meth:`Timestamp.encode`, unique per write)::

    lww["<timestamp>"] = {"f": slot, "v": value, "b": base}           # a value
    lww["<timestamp>"] = {"f": slot, "d": True, "b": base}            # a deletion
    lww["<timestamp>"] = {"f": slot, "t": "text"|"map"|"array", "b": base}   # a container

``f`` is the field name (a string) for a top-level slot, or the list of names (field, then
keys) for a nested one; ``b`` is the key of the winning entry the writer saw for that slot (or
``None``). A container's content does not live in the entry: text and array contents are
root-level shared types named after the slot (:mod:`crdt_sync.records.layout`), a map's content is
the entries of the slots below it. Because entry keys are unique, concurrent writes never
overwrite each other inside the CRDT: every replica ends up with the same entries and picks,
per slot, the entry with the greatest timestamp. ``docs/records.md`` has the whole encoding
and the rules a writer follows (:mod:`crdt_sync.records.layout` implements them).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidEdit
from .clock import Timestamp

#: Name of the document's root map that holds the register entries.
LWW_ROOT = "lww"

Slot = tuple[str, ...]
"""A place in a record: the field name, then the keys of nested maps."""


class Kind(enum.StrEnum):
    """What a register entry says its slot holds."""

    VALUE = "value"
    """A plain JSON-like value, replaced as a whole."""
    DELETED = "deleted"
    """Nothing: the slot was deleted."""
    TEXT = "text"
    """A collaborative text."""
    MAP = "map"
    """A map whose keys are slots of their own."""
    ARRAY = "array"
    """A collaborative list of plain values."""


#: The container kinds (their content lives outside the entry).
CONTAINERS = frozenset({Kind.TEXT, Kind.MAP, Kind.ARRAY})


@dataclass(frozen=True, slots=True)
class LwwEntry:
    """One write of one slot as stored in the document. ``key`` is its key in the ``"lww"``
    map, the encoded timestamp (computed when not given)."""

    slot: Slot
    ts: Timestamp
    kind: Kind
    value: Any
    base: Timestamp | None
    key: str = dataclass_field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.ts.encode())

    @property
    def field(self) -> str:
        """The top-level field the slot belongs to."""
        return self.slot[0]

    @property
    def deleted(self) -> bool:
        """Whether the entry deletes its slot."""
        return self.kind is Kind.DELETED


def parse_entry(key: str, raw: Any) -> LwwEntry | None:
    """The entry stored at ``key``, or ``None`` if it is malformed (readers skip those)."""
    if not isinstance(raw, dict):
        return None
    slot = _parse_slot(raw.get("f"))
    if slot is None:
        return None
    base_raw = raw.get("b")
    if base_raw is not None and not isinstance(base_raw, str):
        return None
    try:
        ts = Timestamp.decode(key)
        base = Timestamp.decode(base_raw) if base_raw is not None else None
    except InvalidEdit:
        return None
    if raw.get("d") is True:
        return LwwEntry(slot, ts, Kind.DELETED, None, base, key)
    container = raw.get("t")
    if container is not None:
        if container not in ("text", "map", "array"):
            return None
        return LwwEntry(slot, ts, Kind(container), None, base, key)
    return LwwEntry(slot, ts, Kind.VALUE, raw.get("v"), base, key)


def encode_entry(entry: LwwEntry) -> dict[str, Any]:
    """The plain value stored for ``entry`` (the inverse of :func:`parse_entry`)."""
    raw: dict[str, Any] = {
        "f": entry.slot[0] if len(entry.slot) == 1 else list(entry.slot),
        "b": entry.base.encode() if entry.base else None,
    }
    if entry.kind is Kind.DELETED:
        raw["d"] = True
    elif entry.kind is Kind.VALUE:
        raw["v"] = entry.value
    else:
        raw["t"] = entry.kind.value
    return raw


def _parse_slot(raw: Any) -> Slot | None:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw and all(isinstance(part, str) for part in raw):
        return tuple(raw)
    return None


def describe_time(ms: int) -> str:
    """``ms`` (Unix milliseconds) as an ISO 8601 UTC time, e.g. ``2026-11-23T09:15:00.000Z``."""
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LwwPolicy:
    """Which fields hold one atomic value (last-write-wins as a whole).

    Every slot of a record is written last-write-wins; what declaring a field LWW changes is
    that a ``dict`` or ``list`` assigned to it is stored as one value, replaced as a whole,
    instead of becoming a map whose keys merge or a list whose items merge, and that it can
    never hold a collaborative text, map or array.

    Args:
        declarations: collection name -> ``"*"`` (every top-level field of its records) or an
            iterable of field names. Collections not named keep the default (mergeable) rules.
    """

    def __init__(self, declarations: Mapping[str, str | Iterable[str]] | None = None) -> None:
        self._all: set[str] = set()
        self._fields: dict[str, frozenset[str]] = {}
        for collection, fields in (declarations or {}).items():
            if fields == "*":
                self._all.add(collection)
            elif isinstance(fields, str):
                raise InvalidEdit(
                    f"LWW declaration for {collection!r} must be '*' or a list of field names"
                )
            else:
                self._fields[collection] = frozenset(fields)

    def is_lww(self, collection: str, field: str) -> bool:
        """Whether ``field`` of records in ``collection`` holds one atomic value."""
        return collection in self._all or field in self._fields.get(collection, ())

    def covers(self, collection: str) -> bool:
        """Whether any field of ``collection`` is declared."""
        return collection in self._all or collection in self._fields
