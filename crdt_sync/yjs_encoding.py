"""Yjs v1 binary structures we need beyond what pycrdt exposes: state vectors and
delete-set-only updates. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InvalidMessage
from .lib0 import Reader, write_var_uint

#: The encoding of an empty Yjs update (no structs, empty delete set).
EMPTY_UPDATE = b"\x00\x00"


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
        ranges = []
        for _ in range(reader.var_uint()):
            client = reader.var_uint()
            for _ in range(reader.var_uint()):
                clock = reader.var_uint()
                ranges.append((client, clock, reader.var_uint()))
    except InvalidMessage:
        return None
    return ranges
