"""Records: one pycrdt document per record, read as plain values and edited in one transaction.

The document layout (where each field lives, what wins, what lost) is in
:mod:`crdt_sync.records.layout` and ``docs/records.md``. In short, per field:

- ``editor["status"] = "done"``: a value, replaced as a whole; concurrent writes resolve by
  hybrid-logical-clock time ("the most recent edit wins"), and the losers go to the conflict
  log;
- ``editor.text("notes")``: a collaborative text, merged character by character;
- ``editor.map("address")``: a map whose keys are fields of their own (each resolved as above);
- ``editor.array("labels")``: a list whose items merge (insertions from everyone stay).

Two replicas that create the same text, map or list concurrently end up with one field holding
both contents. Records written by layout v1 (nested objects under the root map ``"fields"``)
are read as they are; their nested objects are edited in place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Array, Doc, Map, Text

from ..errors import InvalidEdit
from .clock import Timestamp
from .layout import Layout, Shown, Stamp, layout_of, read_fields
from .lww import Kind, LwwPolicy, Slot
from .text import TextField
from .values import check_json, check_text, normalize, same_value, to_crdt, to_plain

__all__ = [
    "ArrayEditor",
    "LegacyMapEditor",
    "MapEditor",
    "Record",
    "RecordEditor",
    "read_fields",
]


@dataclass(frozen=True, slots=True)
class Record(Mapping[str, Any]):
    """A read-only snapshot of one record: its fields as plain values, plus metadata.

    Behaves as a mapping of field name to value. Times are Unix seconds.
    """

    collection: str
    id: str
    fields: dict[str, Any]
    created_at: float
    updated_at: float
    accessed_at: float
    pending: bool = False
    state_vector: bytes = field(default=b"", repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)


_KIND_NAMES = {Kind.VALUE: "value", Kind.TEXT: "text", Kind.MAP: "map", Kind.ARRAY: "list"}


class MapEditor:
    """A map of a record (a nested map, or the record's own fields), editable inside an edit.

    Every key is a slot of its own: values are replaced as a whole (the most recent write
    wins, losers go to the conflict log), ``text()``/``map()``/``array()`` open collaborative
    content that merges. Values read and written are plain.
    """

    __slots__ = ("_layout", "_slot", "_stamp")

    def __init__(self, layout: Layout, slot: Slot, stamp: Stamp) -> None:
        self._layout = layout
        self._slot = slot
        self._stamp = stamp

    def _child(self, key: str) -> Slot:
        return (*self._slot, check_text(key, path="key"))

    def _open(self, slot: Slot, shown: Shown) -> Any:
        """What a reader gets for ``slot``: a plain value, or an editor of its content."""
        if shown.kind is Kind.VALUE:
            return shown.value
        if shown.is_legacy:
            return _wrap_legacy(shown.legacy)
        if shown.kind is Kind.TEXT:
            return TextField(self._layout.text(slot))
        if shown.kind is Kind.ARRAY:
            return ArrayEditor(self._layout.array(slot))
        return MapEditor(self._layout, slot, self._stamp)

    def __getitem__(self, key: str) -> Any:
        slot = self._child(key)
        with self._layout.current():
            shown = self._layout.shown(slot)
            if not shown.present:
                raise KeyError(key)
            return self._open(slot, shown)

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        slot = self._child(key)
        with self._layout.current():
            self._assign(slot, value)

    def __delitem__(self, key: str) -> None:
        slot = self._child(key)
        with self._layout.current():
            if not self._layout.shown(slot).present:
                raise KeyError(key)
            self._layout.write(slot, Kind.DELETED, None, self._stamp)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._layout.shown((*self._slot, key)).present

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """The keys present."""
        return list(self._layout.read_map(self._slot))

    def to_dict(self) -> dict[str, Any]:
        """The map as plain values."""
        return self._layout.read_map(self._slot)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several keys (each as ``self[key] = value``)."""
        for key, value in values.items():
            self[key] = value

    def text(self, key: str) -> TextField:
        """The collaborative text at ``key``, created empty if ``key`` holds nothing."""
        slot = self._child(key)
        shown = self._container(slot, Kind.TEXT)
        if shown is not None and shown.is_legacy:
            return TextField(shown.legacy)
        return TextField(self._layout.text(slot))

    def map(self, key: str) -> MapEditor | LegacyMapEditor:
        """The nested map at ``key``, created empty if ``key`` holds nothing (for a record
        written by layout v1, its nested map object: a :class:`LegacyMapEditor`)."""
        slot = self._child(key)
        shown = self._container(slot, Kind.MAP)
        if shown is not None and shown.is_legacy:
            return LegacyMapEditor(shown.legacy)
        return MapEditor(self._layout, slot, self._stamp)

    def array(self, key: str) -> ArrayEditor:
        """The list at ``key``, created empty if ``key`` holds nothing."""
        slot = self._child(key)
        shown = self._container(slot, Kind.ARRAY)
        if shown is not None and shown.is_legacy:
            return ArrayEditor(shown.legacy)
        return ArrayEditor(self._layout.array(slot))

    def _container(self, slot: Slot, kind: Kind) -> Shown | None:
        """Make ``slot`` a container of ``kind`` if it holds nothing; its shown state if it
        already is one (``None`` after creating it). Anything else is refused."""
        self._check_container(slot, kind)
        with self._layout.current():
            shown = self._layout.shown(slot)
            if shown.kind is kind:
                return shown
            if shown.present:
                raise InvalidEdit(
                    f"field {'.'.join(slot)!r} holds a {_KIND_NAMES[shown.kind]}, "
                    f"not a {_KIND_NAMES[kind]}"
                )
            self._layout.write(slot, kind, None, self._stamp)
            return None

    def _check_container(self, slot: Slot, kind: Kind) -> None:
        """Hook: refuse containers where they are not allowed (LWW fields)."""

    def _assign(self, slot: Slot, value: Any) -> None:
        if isinstance(value, TextField):
            value = str(value)
        check_json(value, path=".".join(slot))  # refuse before changing anything
        shown = self._layout.shown(slot)
        if isinstance(value, str) and shown.kind is Kind.TEXT:
            # Edit the text in place, minimally: replacing it would drop concurrent edits.
            # (Also ``editor[k] += "x"``, where ``value`` is the text itself: nothing to do.)
            self._open(slot, shown).replace(value)
        elif isinstance(value, dict) and shown.kind is Kind.MAP:
            _merge_into(self._open(slot, shown), value)
        elif isinstance(value, list | tuple) and shown.kind is Kind.ARRAY:
            self._open(slot, shown).replace(list(value))
        elif isinstance(value, dict):
            self._layout.write(slot, Kind.MAP, None, self._stamp)
            MapEditor(self._layout, slot, self._stamp).update(value)
        elif isinstance(value, list | tuple):
            self._layout.write(slot, Kind.ARRAY, None, self._stamp)
            ArrayEditor(self._layout.array(slot)).extend(list(value))
        else:
            self._layout.write(slot, Kind.VALUE, check_json(value), self._stamp)


def _merge_into(target: MapEditor | LegacyMapEditor, value: Mapping[str, Any]) -> None:
    """Make ``target`` equal ``value`` key by key: keys whose value is unchanged are not
    written (so they cannot lose to, or win over, a concurrent write), missing ones deleted."""
    current = target.to_dict()
    for key, new in value.items():
        if key not in current or not same_value(current[key], check_json(new)):
            target[key] = new
    for key in current:
        if key not in value:
            del target[key]


class RecordEditor(MapEditor):
    """The fields of one record inside an edit transaction (see ``LocalStore.edit``).

    ``editor["status"] = "done"`` sets a field; ``editor["notes"] += "text"`` appends to a
    collaborative text; ``editor.text("notes").insert(0, "é")`` edits by character position.
    A field the store's :class:`~crdt_sync.records.lww.LwwPolicy` declares holds one atomic value:
    a ``dict`` or ``list`` assigned to it is stored whole, and it cannot be a text, map or
    list that merges.
    """

    __slots__ = ("_collection", "_policy", "deleted")

    def __init__(self, doc: Doc[Any], collection: str, policy: LwwPolicy, stamp: Stamp) -> None:
        super().__init__(layout_of(doc), (), stamp)
        self._collection = collection
        self._policy = policy
        #: The tombstone's timestamp once :meth:`delete_record` deleted the record.
        self.deleted: Timestamp | None = None

    def delete_record(self) -> Timestamp:
        """Delete the whole record (``LocalStore.delete`` does this in an edit of its own):
        everything this replica sees of it is removed, its conflicts kept, and a tombstone
        added (docs/records.md, "Deleting a record"). Nothing more can be written in this edit.
        Returns the tombstone's timestamp."""
        self._refuse_if_deleted()
        self.deleted = self._layout.delete_record(self._stamp)
        return self.deleted

    def _refuse_if_deleted(self) -> None:
        if self.deleted is not None:
            raise InvalidEdit(f"the record of {self._collection!r} was deleted in this edit")

    def _check_container(self, slot: Slot, kind: Kind) -> None:
        self._refuse_if_deleted()
        if self._policy.is_lww(self._collection, slot[0]):
            whole = {Kind.TEXT: "a str", Kind.MAP: "a whole dict", Kind.ARRAY: "a whole list"}
            raise InvalidEdit(
                f"field {slot[0]!r} is last-write-wins; assign {whole[kind]} instead of "
                f"editing a {_KIND_NAMES[kind]}"
            )

    def _assign(self, slot: Slot, value: Any) -> None:
        self._refuse_if_deleted()
        if self._policy.is_lww(self._collection, slot[0]):
            if isinstance(value, TextField):
                value = str(value)
            self._layout.write(slot, Kind.VALUE, check_json(value, path=slot[0]), self._stamp)
        else:
            super()._assign(slot, value)


class LegacyMapEditor:
    """A nested map of a layout v1 record (a ``Map`` object under its field), edited in
    place with Yjs map semantics. Values are plain."""

    __slots__ = ("_map",)

    def __init__(self, map_: Map[Any]) -> None:
        self._map = map_

    def __getitem__(self, key: str) -> Any:
        return _wrap_legacy(self._map[key])

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default``."""
        return _wrap_legacy(self._map[key]) if key in self._map else default

    def __setitem__(self, key: str, value: Any) -> None:
        check_text(key, path="key")
        current = self._map.get(key) if key in self._map else None
        if isinstance(value, TextField | str) and isinstance(current, Text):
            TextField(current).replace(str(value))
        elif isinstance(value, TextField):
            self._map[key] = Text(str(value))
        else:
            self._map[key] = to_crdt(value, path=key)

    def __delitem__(self, key: str) -> None:
        if key not in self._map:
            raise KeyError(key)
        del self._map[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """The keys present."""
        return list(self._map.keys())

    def to_dict(self) -> dict[str, Any]:
        """The map as plain values."""
        return {k: to_plain(v) for k, v in self._map.items()}

    def text(self, key: str) -> TextField:
        """The text at ``key``, created empty if missing."""
        if check_text(key, path="key") not in self._map:
            self._map[key] = Text()
        value = self._map[key]
        if not isinstance(value, Text):
            raise InvalidEdit(f"key {key!r} holds a {type(value).__name__}, not a text")
        return TextField(value)

    def map(self, key: str) -> LegacyMapEditor:
        """The nested map at ``key``, created empty if missing."""
        if check_text(key, path="key") not in self._map:
            self._map[key] = Map()
        value = self._map[key]
        if not isinstance(value, Map):
            raise InvalidEdit(f"key {key!r} holds a {type(value).__name__}, not a map")
        return LegacyMapEditor(value)

    def array(self, key: str) -> ArrayEditor:
        """The list at ``key``, created empty if missing."""
        if check_text(key, path="key") not in self._map:
            self._map[key] = Array()
        value = self._map[key]
        if not isinstance(value, Array):
            raise InvalidEdit(f"key {key!r} holds a {type(value).__name__}, not a list")
        return ArrayEditor(value)


class ArrayEditor:
    """A list of a record, editable inside an edit transaction. Items are plain values,
    each stored whole; insertions by several replicas all stay."""

    __slots__ = ("_array",)

    def __init__(self, array: Array[Any]) -> None:
        self._array = array

    def __len__(self) -> int:
        return len(self._array)

    def __getitem__(self, index: int) -> Any:
        return _wrap_legacy(self._array[index])

    def __setitem__(self, index: int, value: Any) -> None:
        """Replace the item at ``index`` (a deletion and an insertion: a concurrent
        replacement of the same item keeps both new items)."""
        self._check_index(index, len(self._array) - 1)
        item = check_json(value, path=f"[{index}]")
        del self._array[index]
        self._array.insert(index, item)

    def append(self, value: Any) -> None:
        """Append one value."""
        self._array.append(check_json(value))

    def extend(self, values: list[Any]) -> None:
        """Append several values."""
        self._array.extend([check_json(v, path=f"[{i}]") for i, v in enumerate(values)])

    def insert(self, index: int, value: Any) -> None:
        """Insert ``value`` before ``index``."""
        self._check_index(index, len(self._array))
        self._array.insert(index, check_json(value))

    def __delitem__(self, index: int) -> None:
        self._check_index(index, len(self._array) - 1)
        del self._array[index]

    def _check_index(self, index: int, last: int) -> None:
        if not 0 <= index <= last:
            raise InvalidEdit(f"list index {index} is outside 0..{last}")

    def replace(self, values: list[Any]) -> None:
        """Make the list equal ``values`` with one minimal splice (items outside the changed
        span stay, with what others insert next to them)."""
        new = [check_json(v, path=f"[{i}]") for i, v in enumerate(values)]
        current = self.to_list()
        prefix = 0
        limit = min(len(current), len(new))
        while prefix < limit and same_value(current[prefix], new[prefix]):
            prefix += 1
        suffix = 0
        while suffix < limit - prefix and same_value(
            current[len(current) - 1 - suffix], new[len(new) - 1 - suffix]
        ):
            suffix += 1
        for _ in range(len(current) - prefix - suffix):
            del self._array[prefix]
        for offset, item in enumerate(new[prefix : len(new) - suffix]):
            self._array.insert(prefix + offset, item)

    def to_list(self) -> list[Any]:
        """The list as plain values."""
        return [to_plain(v) for v in self._array]


def _wrap_legacy(value: Any) -> Any:
    if isinstance(value, Text):
        return TextField(value)
    if isinstance(value, Map):
        return LegacyMapEditor(value)
    if isinstance(value, Array):
        return ArrayEditor(value)
    return normalize(value)
