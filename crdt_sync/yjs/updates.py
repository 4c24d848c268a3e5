"""Yjs v1 binary structures we need beyond what pycrdt exposes: state vectors, delete-set-only
updates, and the clocks an update carries and depends on. Pure functions.

A Yjs v1 update is a struct section then a delete set (``yjs/src/utils/encoding.js``)::

    varUint groups, then per group:  varUint structs, varUint client, varUint first clock,
                                     then the structs (each covers one or more clocks)
    varUint clients, then per client: varUint client, varUint ranges, (varUint clock, varUint len)*
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from ..errors import InvalidMessage
from .lib0 import Reader, write_var_uint

#: The encoding of an empty Yjs update (no structs, empty delete set).
EMPTY_UPDATE = b"\x00\x00"

#: The encoding of an empty state vector ("I have nothing": send me everything).
EMPTY_STATE_VECTOR = b"\x00"


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode a state vector: client id -> number of items seen (next expected clock)."""
    reader = Reader(data)
    if reader.done:
        return {}
    count = reader.var_uint()
    vector: dict[int, int] = {}
    for _ in range(count):
        client = reader.var_uint()
        vector[client] = reader.var_uint()
    return vector


def encode_state_vector(vector: dict[int, int]) -> bytes:
    """Encode a state vector (inverse of :func:`decode_state_vector`)."""
    out = bytearray(write_var_uint(len(vector)))
    for client, clock in sorted(vector.items(), reverse=True):
        out += write_var_uint(client) + write_var_uint(clock)
    return bytes(out)


def delete_set_update(ranges: Iterable[tuple[int, int, int]]) -> bytes:
    """An update carrying no structs and a delete set that deletes ``(client, clock, length)``
    ranges. Applying it deletes those items wherever they are."""
    by_client: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in ranges:
        if length > 0:
            by_client.setdefault(client, []).append((clock, length))
    out = bytearray(write_var_uint(0))  # no structs
    out += write_var_uint(len(by_client))
    for client, spans in by_client.items():
        out += write_var_uint(client) + write_var_uint(len(spans))
        for clock, length in sorted(spans):
            out += write_var_uint(clock) + write_var_uint(length)
    return bytes(out)


def delete_set_only(update: bytes) -> list[tuple[int, int, int]] | None:
    """The ``(client, clock, length)`` ranges of an update that carries only a delete set, or
    ``None`` if the update carries structs (or cannot be read as a v1 update)."""
    reader = Reader(update)
    try:
        if reader.var_uint() != 0:
            return None
        return _read_delete_set(reader)
    except InvalidMessage:
        return None


def _read_delete_set(reader: Reader) -> list[tuple[int, int, int]]:
    """The ``(client, clock, length)`` ranges of a delete set (the end of an update)."""
    ranges = []
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        for _ in range(reader.var_uint()):
            clock = reader.var_uint()
            ranges.append((client, clock, reader.var_uint()))
    return ranges


class Gap(NamedTuple):
    """Clocks of one client an update needs and its receiver does not have:
    ``[have, needed)`` of Yjs client ``client``."""

    client: int
    have: int
    needed: int


class UpdateClocks(NamedTuple):
    """The clocks a Yjs v1 update carries and the ones it depends on, read from its bytes
    (:func:`read_update_clocks`; no document is built).

    Yjs integrates a struct only once everything it refers to is there: the client's earlier
    clocks (a client's structs form one contiguous sequence), its left and right origins, its
    parent when that is a nested type; and it deletes only items it has. Anything missing
    leaves the update *pending* in the receiving document, invisible, until it arrives.

    Attributes:
        carried: per client, the ``(start, end)`` clock ranges of the structs the update
            carries, in clock order (skipped clocks of a merged update left out).
        needed: per client, how many of its clocks (from 0) must exist for the whole update to
            integrate: a lower bound on the receiver's state vector, once extended by
            ``carried``.
    """

    carried: Mapping[int, tuple[tuple[int, int], ...]]
    needed: Mapping[int, int]

    def extend(self, state: dict[int, int]) -> None:
        """Extend the state vector ``state`` (in place) by the clocks this update carries that
        continue what it has: the state of a receiver after integrating the update."""
        for client, ranges in self.carried.items():
            have = _continued(state.get(client, 0), ranges)
            if have:
                state[client] = have

    def missing(self, state: Mapping[int, int]) -> Gap | None:
        """A gap between what a receiver with state vector ``state`` would have after this
        update and what the update needs; ``None`` if the update integrates entirely."""
        for client, needed in self.needed.items():
            have = state.get(client, 0)
            if needed > have:
                have = _continued(have, self.carried.get(client, ()))
                if needed > have:
                    return Gap(client, have, needed)
        return None


def _continued(have: int, ranges: Iterable[tuple[int, int]]) -> int:
    """``have`` clocks (from 0) extended by the ``ranges`` (in order) that continue them."""
    for start, end in ranges:
        if start > have:
            break
        if end > have:
            have = end
    return have


def read_update_clocks(update: bytes) -> UpdateClocks:
    """Read what a Yjs v1 update carries and needs (:class:`UpdateClocks`).

    Raises:
        InvalidMessage: the bytes are not a Yjs v1 update this reader knows (truncated,
            malformed, or a content type Yjs does not define, such as Yrs' move and weak-link
            extensions).
    """
    reader = Reader(update)
    var_uint = reader.var_uint  # (bound once: this runs for every update the relay receives)
    carried: dict[int, list[tuple[int, int]]] = {}
    needed: dict[int, int] = {}

    def need(client: int, count: int) -> None:
        if count > needed.get(client, 0):
            needed[client] = count

    repeated = False  # a client in several groups (not what Yjs writes): sort its ranges
    for _ in range(var_uint()):
        structs = var_uint()
        client = var_uint()
        clock = var_uint()
        ranges = carried.get(client)
        if ranges is None:
            ranges = carried[client] = []
        else:
            repeated = True
        start = clock  # of the run of structs being read (a skip ends a run)
        need(client, start)  # the clocks before the run: the client's sequence is contiguous
        for _ in range(structs):
            info = reader.uint8()
            ref = info & 0x1F
            if ref == _SKIP:
                if clock > start:
                    ranges.append((start, clock))
                clock += var_uint()
                start = clock
                need(client, start)
                continue
            if ref == _GC:
                clock += var_uint()
                continue
            if info & _HAS_ORIGIN:
                need(var_uint(), var_uint() + 1)
            if info & _HAS_RIGHT_ORIGIN:
                need(var_uint(), var_uint() + 1)
            if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):  # no origin: the parent is written
                if var_uint() == 1:
                    reader.var_bytes()  # a root type's name
                else:
                    need(var_uint(), var_uint() + 1)  # a nested type's item
                if info & _HAS_PARENT_SUB:
                    reader.var_bytes()  # the map key
            clock += _content_length(reader, ref)
        if clock > start:
            ranges.append((start, clock))
    for client, clock, length in _read_delete_set(reader):
        if length:
            need(client, clock + length)
    return UpdateClocks(
        {
            client: tuple(sorted(ranges) if repeated else ranges)
            for client, ranges in carried.items()
            if ranges
        },
        {client: count for client, count in needed.items() if count},
    )


def root_map_keys(update: bytes, root: str) -> list[str]:
    """The keys an update sets in the root-level map ``root`` for the first time: the map
    entries it carries whose parent is written as that root (a new key's item has no origin,
    so Yjs writes its parent's name and its key), in the order they appear.

    An entry that replaces an existing key of the map has an origin (the item it replaces)
    and is not reported: callers use it for maps whose keys are set once (unique keys).

    Raises:
        InvalidMessage: the bytes are not a Yjs v1 update this reader knows.
    """
    name = root.encode()
    reader = Reader(update)
    var_uint = reader.var_uint
    found: list[str] = []
    for _ in range(var_uint()):
        structs = var_uint()
        var_uint()  # client
        var_uint()  # first clock
        for _ in range(structs):
            info = reader.uint8()
            ref = info & 0x1F
            if ref in (_SKIP, _GC):
                var_uint()
                continue
            for flag in (_HAS_ORIGIN, _HAS_RIGHT_ORIGIN):
                if info & flag:  # an ID: client, clock
                    var_uint()
                    var_uint()
            parent: bytes | None = None
            if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
                if var_uint() == 1:
                    parent = reader.var_bytes()
                else:  # a nested type's item ID
                    var_uint()
                    var_uint()
                if info & _HAS_PARENT_SUB:
                    key = reader.var_bytes()
                    if parent == name and ref != 1:  # a deleted item's content is gone
                        found.append(key.decode("utf-8", "replace"))
            _content_length(reader, ref)
    return found


# Struct info byte (yjs/src/structs/Item.js): content ref in the low 5 bits, then flags.
_GC = 0
_SKIP = 10
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
# Shared type refs whose content item carries a name (YXmlElement's node name, YXmlHook's).
_NAMED_TYPES = frozenset((3, 5))
_TYPES = frozenset((0, 1, 2, 4, 6, 9, 15)) | _NAMED_TYPES


def _content_length(reader: Reader, ref: int) -> int:
    """Skip an item's content; return how many clocks it covers."""
    match ref:
        case 1:  # deleted
            return reader.var_uint()
        case 2:  # JSON: strings
            count = reader.var_uint()
            for _ in range(count):
                reader.var_bytes()
            return count
        case 3 | 5:  # binary, embed (JSON string)
            reader.var_bytes()
            return 1
        case 4:  # string: one clock per UTF-16 code unit
            return len(reader.var_string().encode("utf-16-le")) // 2
        case 6:  # format: key, JSON value
            reader.var_bytes()
            reader.var_bytes()
            return 1
        case 7:  # shared type
            kind = reader.var_uint()
            if kind not in _TYPES:
                raise InvalidMessage(f"unknown shared type {kind} in a Yjs update")
            if kind in _NAMED_TYPES:
                reader.var_bytes()
            return 1
        case 8:  # any values
            count = reader.var_uint()
            for _ in range(count):
                reader.skip_any()
            return count
        case 9:  # subdocument: guid, options
            reader.var_bytes()
            reader.skip_any()
            return 1
        case _:
            raise InvalidMessage(f"unknown struct content {ref} in a Yjs update")
