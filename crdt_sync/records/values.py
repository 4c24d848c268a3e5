"""Conversion between plain Python values and the CRDT values stored in a record's document.

Plain values are JSON-like: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``dict`` (string keys) and ``list``. Yjs numbers are 64-bit floats, so an integral number
reads back as ``int``, and an ``int`` beyond +-2**53 (``MAX_SAFE_INT``) is refused: it would
read back rounded on other replicas (and pycrdt aborts on one beyond 64 bits). Strings must be
encodable as UTF-8 (no lone surrogates), which is what a document holds.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Map, Text

from ..errors import InvalidEdit

#: Largest integer magnitude a record holds exactly on every peer (a float64's 53-bit mantissa).
MAX_SAFE_INT = 2**53


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


def same_value(a: Any, b: Any) -> bool:
    """Whether two plain values are the same JSON-like value: ``True`` is not ``1`` (Python's
    ``==`` says it is), ``1`` is ``1.0`` (one JSON number), dicts and lists compare deeply."""
    a, b = normalize(a), normalize(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


def to_crdt(value: Any, *, path: str = "value") -> Any:
    """Return what to store for a plain value: nested dicts and lists become ``Map``/``Array``.

    Raises :class:`InvalidEdit` for what a document cannot hold: other types, non-``str`` map
    keys, integers beyond ``MAX_SAFE_INT``, strings that are not valid Unicode text.
    """
    if isinstance(value, dict):
        return Map({_key(k, path): to_crdt(v, path=f"{path}.{k}") for k, v in value.items()})
    if isinstance(value, list | tuple):
        return Array([to_crdt(v, path=f"{path}[{i}]") for i, v in enumerate(value)])
    return _scalar(value, path)


def check_json(value: Any, *, path: str = "value") -> Any:
    """Validate a value stored atomically (an LWW value) and return it as plain JSON-like data.

    Same rules as :func:`to_crdt`; tuples become lists, ``bytearray`` becomes ``bytes``.
    """
    if isinstance(value, dict):
        return {_key(k, path): check_json(v, path=f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [check_json(v, path=f"{path}[{i}]") for i, v in enumerate(value)]
    return _scalar(value, path)


def check_text(value: str, *, path: str = "value") -> str:
    """Return ``value`` if a document can hold it as text: a ``str`` that is valid Unicode
    (no lone surrogates). Raises :class:`InvalidEdit` otherwise."""
    if not isinstance(value, str):
        raise InvalidEdit(f"{path}: expected text, got a {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEdit(f"{path}: text is not valid Unicode ({exc.reason})") from exc
    return value


def _key(key: Any, path: str) -> str:
    if not isinstance(key, str):
        raise InvalidEdit(f"{path}: map keys must be str, got {type(key).__name__}")
    return check_text(key, path=path)


def _scalar(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | float | bytes):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise InvalidEdit(f"{path}: integer {value} is beyond +-2**53, which Yjs cannot hold")
        return value
    if isinstance(value, str):
        return check_text(value, path=path)
    if isinstance(value, bytearray):
        return bytes(value)
    raise InvalidEdit(f"{path}: cannot store a {type(value).__name__} in a record")
