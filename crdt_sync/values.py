"""Conversion between plain Python values and the CRDT values stored in a record's document.

Plain values are JSON-like: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``dict`` (string keys) and ``list``. Yjs numbers are 64-bit floats, so an integral number
reads back as ``int``.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Map, Text

from .errors import InvalidEdit


def to_plain(value: Any) -> Any:
    """Return the plain Python form of a value read from a document."""
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, Map):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, Array):
        return [to_plain(v) for v in value]
    return normalize(value)


def normalize(value: Any) -> Any:
    """Normalize a plain value decoded from an update (integral floats become ``int``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def to_crdt(value: Any, *, path: str = "value") -> Any:
    """Return what to store for a plain value: nested dicts and lists become ``Map``/``Array``.

    Raises :class:`InvalidEdit` for types a document cannot hold.
    """
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise InvalidEdit(f"{path}: map keys must be str, got {type(key).__name__}")
        return Map({k: to_crdt(v, path=f"{path}.{k}") for k, v in value.items()})
    if isinstance(value, list | tuple):
        return Array([to_crdt(v, path=f"{path}[{i}]") for i, v in enumerate(value)])
    raise InvalidEdit(f"{path}: cannot store a {type(value).__name__} in a record")


def check_json(value: Any, *, path: str = "value") -> Any:
    """Validate a value stored atomically (an LWW value): JSON-like, returned unchanged."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEdit(f"{path}: map keys must be str, got {type(k).__name__}")
            check_json(v, path=f"{path}.{k}")
        return value
    if isinstance(value, list | tuple):
        return [check_json(v, path=f"{path}[{i}]") for i, v in enumerate(value)]
    raise InvalidEdit(f"{path}: cannot store a {type(value).__name__} in a record")
