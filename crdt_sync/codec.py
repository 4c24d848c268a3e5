"""The wire format: one protocol message <-> one msgpack-encoded websocket message.

This is the only module that imports msgpack. :func:`encode` turns a
:mod:`crdt_sync.messages` value into bytes; :func:`decode` turns bytes received from a peer
into a message, checking every field's type and range (``docs/protocol.md``, "Wire format").
Whatever the input, :func:`decode` returns a message or raises :class:`~crdt_sync.errors.
InvalidMessage` or :class:`~crdt_sync.errors.MessageTooBig`; no msgpack exception escapes.

Rules the decoder enforces:

- the frame is at most ``max_size`` bytes, and msgpack's own unpack limits are set from it,
  so a forged length header cannot make the decoder allocate more than the frame holds;
- the top level is a map with string keys (``strict_map_key``) and a known ``"t"``;
- every field the message type defines is present with the right type (``bool`` is not an
  ``int``; ``bytes`` payloads are msgpack ``bin``, never ``str``); integers (seq, cursor, ids)
  are within ``0 .. 2**63 - 1``; names (collections, record ids, codes) are non-empty and
  bounded; keys the type does not define are ignored, so that a later revision can add
  optional fields;
- no msgpack extension types.

An empty state vector in an ``sv`` item (``b""``) is read as ``b"\\x00"``, the Yjs encoding
of the empty state vector, so that "I have nothing" can be written either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgpack

from .errors import InvalidMessage, InvalidQuery, MessageTooBig
from .messages import (
    Ack,
    Changed,
    Dropped,
    Error,
    Hello,
    Limits,
    Message,
    Ping,
    Pong,
    Push,
    PushItem,
    RecordKey,
    Reject,
    RejectItem,
    Removed,
    RemovedItem,
    StateVectorItem,
    StateVectors,
    Subscribe,
    Synced,
    UpdateItem,
    Updates,
    Welcome,
)
from .query import from_wire
from .subscriptions import subscriptions_from_wire, subscriptions_to_wire
from .yjs.updates import EMPTY_STATE_VECTOR

__all__ = [
    "DEFAULT_MAX_FRAME",
    "EMPTY_STATE_VECTOR",
    "MAX_CODE_LENGTH",
    "MAX_INT",
    "MAX_NAME_LENGTH",
    "MAX_TEXT_LENGTH",
    "decode",
    "encode",
    "message_type",
]

#: Default limit on an encoded frame, in bytes, when the caller gives none.
DEFAULT_MAX_FRAME = 4 * 1024 * 1024

#: Largest integer accepted for seqs, cursors and ping ids (fits SQLite's INTEGER).
MAX_INT = 2**63 - 1

#: Longest collection name, record id, tenant or replica id, in characters.
MAX_NAME_LENGTH = 1024

#: Longest error or reject code, in characters.
MAX_CODE_LENGTH = 64

#: Longest token or human-readable reason, in characters.
MAX_TEXT_LENGTH = 16 * 1024

# The widest map on the wire is ``welcome``/``changed`` (5 keys); leave room for additions.
_MAX_MAP_LEN = 32


# -- encoding ------------------------------------------------------------------------------


def _wire(msg: Message) -> dict[str, Any]:
    # The wire shape of each message (docs/protocol.md, "Messages").
    match msg:
        case Push(items):
            return {"t": "push", "items": items}
        case Ack(seqs):
            return {"t": "ack", "seqs": seqs}
        case Updates(items, cursor):
            return {"t": "updates", "items": items, "cursor": cursor}
        case StateVectors(items, done):
            return {"t": "sv", "items": items, "done": done}
        case Changed(items, cursor, done):
            return {"t": "changed", "items": items, "cursor": cursor, "done": done}
        case Reject(items):
            return {"t": "reject", "items": items}
        case Synced(cursor, at):
            if at is None:
                return {"t": "synced", "cursor": cursor}
            return {"t": "synced", "cursor": cursor, "at": at}
        case Dropped(items):
            return {"t": "drop", "items": items}
        case Removed(items, cursor):
            return {"t": "removed", "items": items, "cursor": cursor}
        case Ping(ping_id):
            return {"t": "ping", "id": ping_id}
        case Pong(ping_id):
            return {"t": "pong", "id": ping_id}
        case Subscribe(collections, cursor, subscriptions, since):
            frame: dict[str, Any] = {"t": "sub", "collections": collections, "cursor": cursor}
            if subscriptions is not None:
                frame["subs"] = subscriptions_to_wire(subscriptions)
            if since is not None:
                frame["since"] = since
            return frame
        case Hello(token, replica, version):
            return {"t": "hello", "v": version, "token": token, "replica": replica}
        case Welcome(tenant, collections, limits, version, cache_max_age, scopes):
            welcome: dict[str, Any] = {
                "t": "welcome",
                "v": version,
                "tenant": tenant,
                "collections": collections,
                "limits": {"max_frame": limits.max_frame, "max_items": limits.max_items},
            }
            if cache_max_age is not None:  # optional: absent means no expiry
                welcome["cache_max_age"] = cache_max_age
            if scopes:
                welcome["scopes"] = dict(scopes)
            return welcome
        case Error(code, reason, fatal):
            return {"t": "error", "code": code, "reason": reason, "fatal": fatal}
    raise TypeError(f"not a protocol message: {msg!r}")  # pragma: no cover - typing guards


def encode(msg: Message) -> bytes:
    """Encode one message as the bytes of one binary websocket message.

    Args:
        msg: a message built with well-typed fields (the encoder does not re-validate them).

    Returns:
        The msgpack encoding of the message's wire map.

    Raises:
        TypeError: ``msg`` is not a protocol message, or holds values msgpack cannot encode.
    """
    packed: bytes = msgpack.packb(_wire(msg), use_bin_type=True)
    return packed


# -- decoding: field checkers ---------------------------------------------------------------


def _field(obj: dict[str, Any], key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise InvalidMessage(f"{obj.get('t')!r} message without field {key!r}") from None


def _int(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise InvalidMessage(f"{what} must be an integer in 0..2**63-1, got {value!r:.60}")
    return value


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _opt_seconds(value: Any, what: str) -> float | None:
    """None, or a positive finite number of seconds (int or float on the wire)."""
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 < value < math.inf:
        raise InvalidMessage(f"{what} must be a positive number of seconds, got {value!r:.60}")
    return float(value)


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise InvalidMessage(f"{what} must be a boolean, got {value!r:.60}")
    return value


def _str(value: Any, what: str, max_length: int, *, allow_empty: bool = False) -> str:
    if type(value) is not str:
        raise InvalidMessage(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidMessage(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidMessage(f"{what} is longer than {max_length} characters")
    return value


def _name(value: Any, what: str) -> str:
    return _str(value, what, MAX_NAME_LENGTH)


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise InvalidMessage(f"{what} must be binary, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise InvalidMessage(f"{what} must be an array, got {type(value).__name__}")
    return value


def _row(value: Any, what: str, width: int) -> list[Any]:
    if type(value) is not list or len(value) != width:
        raise InvalidMessage(f"{what} must be an array of {width} elements")
    return value


def _is_key(collection: Any, record_id: Any) -> bool:
    """Whether both are names :func:`_name` accepts (the items' fast path: no errors to
    build; anything else goes through the checks that say what is wrong)."""
    return (
        type(collection) is str
        and 0 < len(collection) <= MAX_NAME_LENGTH
        and type(record_id) is str
        and 0 < len(record_id) <= MAX_NAME_LENGTH
    )


def _names(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_name(v, what) for v in _list(value, what))


# -- decoding: one parser per message type -------------------------------------------------


def _hello(obj: dict[str, Any]) -> Hello:
    return Hello(
        token=_str(_field(obj, "token"), "hello token", MAX_TEXT_LENGTH, allow_empty=True),
        replica=_name(_field(obj, "replica"), "hello replica"),
        version=_int(_field(obj, "v"), "hello v"),
    )


# The item parsers below check the common, valid row in one pass (the record key through
# _is_key, the rest inline: a catch-up frame holds up to max_items rows) and fall back to the
# field checkers, which say what is wrong, for any other row. Both accept exactly the same
# rows.


def _push(obj: dict[str, Any]) -> Push:
    items = []
    for row in _list(_field(obj, "items"), "push items"):
        if type(row) is list and len(row) == 4:
            seq, collection, record_id, update = row
            if (
                type(seq) is int
                and 0 <= seq <= MAX_INT
                and _is_key(collection, record_id)
                and type(update) is bytes
            ):
                items.append(PushItem(seq, collection, record_id, update))
                continue
        seq, collection, record_id, update = _row(row, "push item", 4)
        items.append(
            PushItem(
                _int(seq, "push seq"),
                _name(collection, "push collection"),
                _name(record_id, "push record_id"),
                _bytes(update, "push update"),
            )
        )
    return Push(tuple(items))


def _subscribe(obj: dict[str, Any]) -> Subscribe:
    # ``subs`` and ``since`` were added to the spec's ``sub``; absent: whole collections.
    subscriptions = None
    if obj.get("subs") is not None:
        try:
            subscriptions = subscriptions_from_wire(obj["subs"])
        except InvalidQuery as exc:
            raise InvalidMessage(f"sub subs: {exc}") from None
    return Subscribe(
        collections=_names(_field(obj, "collections"), "sub collection"),
        cursor=_opt_int(_field(obj, "cursor"), "sub cursor"),
        subscriptions=subscriptions,
        since=_opt_int(obj.get("since"), "sub since"),
    )


def _state_vectors(obj: dict[str, Any]) -> StateVectors:
    items = []
    for row in _list(_field(obj, "items"), "sv items"):
        if type(row) is list and len(row) == 3:
            collection, record_id, state_vector = row
            if _is_key(collection, record_id) and type(state_vector) is bytes:
                items.append(
                    StateVectorItem(collection, record_id, state_vector or EMPTY_STATE_VECTOR)
                )
                continue
        collection, record_id, state_vector = _row(row, "sv item", 3)
        items.append(
            StateVectorItem(
                _name(collection, "sv collection"),
                _name(record_id, "sv record_id"),
                _bytes(state_vector, "sv state_vector") or EMPTY_STATE_VECTOR,
            )
        )
    # ``done`` was added to the spec's ``sv``; a frame without it answers no final ``changed``.
    return StateVectors(tuple(items), _bool(obj.get("done", False), "sv done"))


def _ping(obj: dict[str, Any]) -> Ping:
    return Ping(_int(_field(obj, "id"), "ping id"))


def _pong(obj: dict[str, Any]) -> Pong:
    return Pong(_int(_field(obj, "id"), "pong id"))


def _error(obj: dict[str, Any]) -> Error:
    return Error(
        code=_str(_field(obj, "code"), "error code", MAX_CODE_LENGTH),
        reason=_str(_field(obj, "reason"), "error reason", MAX_TEXT_LENGTH, allow_empty=True),
        fatal=_bool(_field(obj, "fatal"), "error fatal"),
    )


def _welcome(obj: dict[str, Any]) -> Welcome:
    limits = _field(obj, "limits")
    if type(limits) is not dict:
        raise InvalidMessage("welcome limits must be a map")
    return Welcome(
        tenant=_name(_field(obj, "tenant"), "welcome tenant"),
        collections=_names(_field(obj, "collections"), "welcome collection"),
        limits=Limits(
            max_frame=_int(_field(limits, "max_frame"), "welcome max_frame"),
            max_items=_int(_field(limits, "max_items"), "welcome max_items"),
        ),
        version=_int(_field(obj, "v"), "welcome v"),
        cache_max_age=_opt_seconds(obj.get("cache_max_age"), "welcome cache_max_age"),
        scopes=_scopes(obj.get("scopes")),
    )


def _ack(obj: dict[str, Any]) -> Ack:
    return Ack(tuple(_int(s, "ack seq") for s in _list(_field(obj, "seqs"), "ack seqs")))


def _reject(obj: dict[str, Any]) -> Reject:
    items = []
    for row in _list(_field(obj, "items"), "reject items"):
        seq, code, reason = _row(row, "reject item", 3)
        items.append(
            RejectItem(
                _int(seq, "reject seq"),
                _str(code, "reject code", MAX_CODE_LENGTH),
                _str(reason, "reject reason", MAX_TEXT_LENGTH, allow_empty=True),
            )
        )
    return Reject(tuple(items))


def _changed(obj: dict[str, Any]) -> Changed:
    items = []
    for row in _list(_field(obj, "items"), "changed items"):
        if type(row) is list and len(row) == 2:
            collection, record_id = row
            if _is_key(collection, record_id):
                items.append(RecordKey(collection, record_id))
                continue
        collection, record_id = _row(row, "changed item", 2)
        items.append(
            RecordKey(
                _name(collection, "changed collection"), _name(record_id, "changed record_id")
            )
        )
    return Changed(
        tuple(items),
        cursor=_int(_field(obj, "cursor"), "changed cursor"),
        done=_bool(_field(obj, "done"), "changed done"),
    )


def _updates(obj: dict[str, Any]) -> Updates:
    items = []
    for row in _list(_field(obj, "items"), "updates items"):
        if type(row) is list and len(row) == 3:
            collection, record_id, update = row
            if _is_key(collection, record_id) and type(update) is bytes:
                items.append(UpdateItem(collection, record_id, update))
                continue
        collection, record_id, update = _row(row, "updates item", 3)
        items.append(
            UpdateItem(
                _name(collection, "updates collection"),
                _name(record_id, "updates record_id"),
                _bytes(update, "updates update"),
            )
        )
    return Updates(tuple(items), cursor=_opt_int(_field(obj, "cursor"), "updates cursor"))


def _removed(obj: dict[str, Any]) -> Removed:
    items = []
    for row in _list(_field(obj, "items"), "removed items"):
        collection, record_id, tombstone = _row(row, "removed item", 3)
        items.append(
            RemovedItem(
                _name(collection, "removed collection"),
                _name(record_id, "removed record_id"),
                _str(tombstone, "removed tombstone", MAX_NAME_LENGTH, allow_empty=True),
            )
        )
    return Removed(tuple(items), cursor=_opt_int(_field(obj, "cursor"), "removed cursor"))


def _synced(obj: dict[str, Any]) -> Synced:
    return Synced(
        _int(_field(obj, "cursor"), "synced cursor"), _opt_int(obj.get("at"), "synced at")
    )


def _dropped(obj: dict[str, Any]) -> Dropped:
    items = []
    for row in _list(_field(obj, "items"), "drop items"):
        collection, record_id = _row(row, "drop item", 2)
        items.append(
            RecordKey(_name(collection, "drop collection"), _name(record_id, "drop record_id"))
        )
    return Dropped(tuple(items))


def _scopes(value: Any) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if type(value) is not dict:
        raise InvalidMessage("welcome scopes must be a map")
    scopes = []
    for collection, where in value.items():
        try:
            from_wire(where)
        except InvalidQuery as exc:
            raise InvalidMessage(f"welcome scope of {collection!r}: {exc}") from None
        scopes.append((_name(collection, "welcome scope collection"), where))
    return tuple(scopes)


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "hello": _hello,
    "push": _push,
    "sub": _subscribe,
    "sv": _state_vectors,
    "ping": _ping,
    "pong": _pong,
    "error": _error,
    "welcome": _welcome,
    "ack": _ack,
    "reject": _reject,
    "changed": _changed,
    "updates": _updates,
    "synced": _synced,
    "removed": _removed,
    "drop": _dropped,
}


def decode(data: bytes | bytearray | memoryview, max_size: int = DEFAULT_MAX_FRAME) -> Message:
    """Decode the bytes of one websocket message received from a peer.

    Args:
        data: the whole message.
        max_size: the largest frame accepted, in bytes.

    Returns:
        The message, with every field checked.

    Raises:
        MessageTooBig: ``data`` is longer than ``max_size``.
        InvalidMessage: ``data`` is not a well-formed protocol message (the text says why).
    """
    if len(data) > max_size:
        raise MessageTooBig(f"frame of {len(data)} bytes is over the {max_size} bytes limit")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=max_size,
            max_map_len=_MAX_MAP_LEN,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # msgpack's errors (FormatError, StackError, ExtraData, limits, invalid UTF-8) are
        # ValueError subclasses; UnpackException covers the rest of its hierarchy.
        raise InvalidMessage(f"not a msgpack frame: {exc}") from exc
    if type(obj) is not dict:
        raise InvalidMessage(f"frame must be a msgpack map, got {type(obj).__name__}")
    kind = obj.get("t")
    parser = _PARSERS.get(kind) if type(kind) is str else None
    if parser is None:
        raise InvalidMessage(f"unknown message type {kind!r:.60}")
    return parser(obj)


# -- message type without decoding ---------------------------------------------------------------

_TYPES = {name.encode(): name for name in _PARSERS}
_PREFIX_LIMIT = 64  # bytes read to find "t" among the keys before reading the whole frame


def message_type(frame: bytes | str) -> str | None:
    """The type (``"t"``) of an encoded protocol message without decoding it, or ``None`` for
    anything else (garbage, text, an unknown type); for metric labels on every frame.

    Never raises. Our encoder writes ``"t"`` first: that layout is read directly; any other
    key order is read with msgpack, skipping the values of the keys before ``"t"``.
    """
    if isinstance(frame, str) or len(frame) < 5:
        return None
    # fixmap, then the fixstr "t", then a fixstr value: 0x8N 0xa1 't' 0xaL <L bytes>
    if frame[0] & 0xF0 == 0x80 and frame[1:3] == b"\xa1t" and frame[3] & 0xE0 == 0xA0:
        return _TYPES.get(frame[4 : 4 + (frame[3] & 0x1F)])
    kind = _read_type(frame[:_PREFIX_LIMIT])
    if kind is None and len(frame) > _PREFIX_LIMIT:
        kind = _read_type(frame)
    return kind


def _read_type(data: bytes) -> str | None:
    """The known type under the key ``"t"`` of the msgpack map in ``data``, else ``None``."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data))
    unpacker.feed(data)
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "t":
                value = unpacker.unpack()
                return value if isinstance(value, str) and value.encode() in _TYPES else None
            unpacker.skip()
    except (ValueError, TypeError, msgpack.UnpackException):
        return None  # not msgpack, or the prefix ended before "t" (OutOfData)
    return None
