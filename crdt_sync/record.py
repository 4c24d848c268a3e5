"""Records: one pycrdt document per record, read as plain values and edited in one transaction.

Document layout (``docs/architecture.md``): the record's fields live in the root map
``"fields"``; text fields are collaborative ``Text``, nested maps and arrays are ``Map`` and
``Array``. Fields declared last-write-wins live in the root map ``"lww"`` instead
(:mod:`crdt_sync.lww`). Reading a record merges both into one plain ``dict``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Array, Doc, Map, Text

from . import lww
from .clock import Timestamp
from .errors import InvalidEdit
from .text import TextField
from .values import check_json, check_text, normalize, to_crdt, to_plain

#: Name of the document's root map that holds the record's (non-LWW) fields.
FIELDS_ROOT = "fields"


#: Attribute of a record's ``Doc`` holding its two root maps (looked up once per document:
#: ``Doc.get`` opens a transaction and builds a wrapper each time, on every edit and read).
_ROOTS = "_crdt_sync_roots"


def _roots(doc: Doc[Any]) -> tuple[Map[Any], Map[Any]]:
    roots: tuple[Map[Any], Map[Any]] | None = doc.__dict__.get(_ROOTS)
    if roots is None:
        roots = (doc.get(FIELDS_ROOT, type=Map), doc.get(lww.LWW_ROOT, type=Map))
        setattr(doc, _ROOTS, roots)
    return roots


def fields_of(doc: Doc[Any]) -> Map[Any]:
    """The root map of a record's fields."""
    return _roots(doc)[0]


def lww_of(doc: Doc[Any]) -> Map[Any]:
    """The root map of a record's last-write-wins entries."""
    return _roots(doc)[1]


def read_fields(doc: Doc[Any]) -> dict[str, Any]:
    """All of a record's fields as plain values (LWW fields resolved to their winners)."""
    values = {k: to_plain(v) for k, v in fields_of(doc).items()}
    for name, value in lww.values(lww_of(doc)).items():
        values[name] = normalize(value)
    return values


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


class MapEditor:
    """A nested map of a record, editable inside an edit transaction. Values are plain."""

    __slots__ = ("_map",)

    def __init__(self, map_: Map[Any]) -> None:
        self._map = map_

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._map[key])

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default``."""
        return _wrap(self._map[key]) if key in self._map else default

    def __setitem__(self, key: str, value: Any) -> None:
        _assign(self._map, key, value)

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

    def text(self, key: str) -> TextField:
        """The collaborative text at ``key``, created empty if missing."""
        return _text_at(self._map, key)

    def map(self, key: str) -> MapEditor:
        """The nested map at ``key``, created empty if missing."""
        if check_text(key, path="key") not in self._map:
            self._map[key] = Map()
        value = self._map[key]
        if not isinstance(value, Map):
            raise InvalidEdit(f"field {key!r} holds a {type(value).__name__}, not a map")
        return MapEditor(value)

    def array(self, key: str) -> ArrayEditor:
        """The array at ``key``, created empty if missing."""
        if check_text(key, path="key") not in self._map:
            self._map[key] = Array()
        value = self._map[key]
        if not isinstance(value, Array):
            raise InvalidEdit(f"field {key!r} holds a {type(value).__name__}, not an array")
        return ArrayEditor(value)

    def to_dict(self) -> dict[str, Any]:
        """The map as plain values."""
        return {k: to_plain(v) for k, v in self._map.items()}


class ArrayEditor:
    """An array of a record, editable inside an edit transaction. Values are plain."""

    __slots__ = ("_array",)

    def __init__(self, array: Array[Any]) -> None:
        self._array = array

    def __len__(self) -> int:
        return len(self._array)

    def __getitem__(self, index: int) -> Any:
        return _wrap(self._array[index])

    def append(self, value: Any) -> None:
        """Append one value."""
        self._array.append(to_crdt(value))

    def extend(self, values: list[Any]) -> None:
        """Append several values."""
        self._array.extend([to_crdt(v) for v in values])

    def insert(self, index: int, value: Any) -> None:
        """Insert ``value`` before ``index``."""
        if not 0 <= index <= len(self._array):
            raise InvalidEdit(f"array index {index} is outside 0..{len(self._array)}")
        self._array.insert(index, to_crdt(value))

    def __delitem__(self, index: int) -> None:
        if not 0 <= index < len(self._array):
            raise InvalidEdit(f"array index {index} is outside 0..{len(self._array) - 1}")
        del self._array[index]

    def to_list(self) -> list[Any]:
        """The array as plain values."""
        return [to_plain(v) for v in self._array]


class RecordEditor(MapEditor):
    """The fields of one record inside an edit transaction (see ``LocalStore.edit``).

    ``editor["status"] = "done"`` sets a field; ``editor["notes"] += "text"`` appends to a
    collaborative text; ``editor.text("notes").insert(0, "é")`` edits by character position.
    Fields the store's :class:`~crdt_sync.lww.LwwPolicy` declares LWW are written with an HLC
    timestamp so the most recent write wins on every replica.
    """

    __slots__ = ("_collection", "_lww", "_policy", "_stamp", "lww_written")

    def __init__(
        self,
        doc: Doc[Any],
        collection: str,
        policy: lww.LwwPolicy,
        stamp: Callable[[Timestamp | None], Timestamp],
    ) -> None:
        super().__init__(fields_of(doc))
        self._collection = collection
        self._lww = lww_of(doc)
        self._policy = policy
        self._stamp = stamp
        #: LWW entries written through this editor (the store persists the clock after them).
        self.lww_written: list[lww.LwwEntry] = []

    def _is_lww(self, key: str) -> bool:
        return self._policy.is_lww(self._collection, key)

    def __getitem__(self, key: str) -> Any:
        if self._is_lww(key):
            entry = lww.winners(self._lww).get(key)
            if entry is None or entry.deleted:
                raise KeyError(key)
            return normalize(entry.value)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and self._is_lww(key):
            entry = lww.winners(self._lww).get(key)
            return entry is not None and not entry.deleted
        return super().__contains__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if self._is_lww(key):
            if isinstance(value, TextField):
                value = str(value)
            self._write_lww(key, check_json(value, path=key))
        else:
            super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        if self._is_lww(key):
            if key not in self:
                raise KeyError(key)
            self._write_lww(key, None, deleted=True)
        else:
            super().__delitem__(key)

    def _write_lww(self, key: str, value: Any, *, deleted: bool = False) -> None:
        check_text(key, path="key")
        current = lww.winners(self._lww).get(key)
        ts = self._stamp(current.ts if current else None)
        # Entry keys must be unique across all fields. A timestamp stepped past a skewed winner
        # (HybridClock.after) is not issued by the clock itself, so it can meet another entry's
        # key: stamp again, after it, until the key is free (each stamp is greater).
        while ts.encode() in self._lww:
            ts = self._stamp(ts)
        self.lww_written.append(lww.write(self._lww, key, ts, value, deleted=deleted))

    def text(self, key: str) -> TextField:
        if self._is_lww(key):
            raise InvalidEdit(f"field {key!r} is last-write-wins; it cannot be a text")
        return super().text(key)

    def map(self, key: str) -> MapEditor:
        if self._is_lww(key):
            raise InvalidEdit(
                f"field {key!r} is last-write-wins; assign a whole dict instead of editing a map"
            )
        return super().map(key)

    def array(self, key: str) -> ArrayEditor:
        if self._is_lww(key):
            raise InvalidEdit(
                f"field {key!r} is last-write-wins; assign a whole list instead of editing an array"
            )
        return super().array(key)

    def keys(self) -> list[str]:
        names = dict.fromkeys(super().keys())
        names.update(dict.fromkeys(lww.values(self._lww)))
        return list(names)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values.update({k: normalize(v) for k, v in lww.values(self._lww).items()})
        return values


def _wrap(value: Any) -> Any:
    if isinstance(value, Text):
        return TextField(value)
    if isinstance(value, Map):
        return MapEditor(value)
    if isinstance(value, Array):
        return ArrayEditor(value)
    return normalize(value)


def _text_at(map_: Map[Any], key: str) -> TextField:
    if check_text(key, path="key") not in map_:
        map_[key] = Text()
    value = map_[key]
    if not isinstance(value, Text):
        raise InvalidEdit(f"field {key!r} holds a {type(value).__name__}, not a text")
    return TextField(value)


def _assign(map_: Map[Any], key: str, value: Any) -> None:
    check_text(key, path="key")
    current = map_.get(key) if key in map_ else None
    if isinstance(value, TextField | str) and isinstance(current, Text):
        # Edit the existing collaborative text in place, minimally. This is also the
        # ``field += "x"`` case, where ``value`` wraps ``current`` itself and nothing is left
        # to change (pycrdt hands out a new wrapper per access, so identity cannot tell it).
        # Replacing the Text with a new one would drop concurrent edits made to it.
        TextField(current).replace(str(value))
    elif isinstance(value, TextField):
        map_[key] = Text(str(value))
    else:
        map_[key] = to_crdt(value, path=key)
