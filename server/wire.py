"""What the relay reads of an encoded native frame without decoding it: its message type.

The relay labels its frame metrics by message type (``crdt_sync_frames_in_total{type}``,
``crdt_sync_frames_out_total{type}``) on every frame in and out; decoding each frame a second
time for that (the protocol core decodes it too) would cost as much as handling it.
:func:`message_type` reads the map's keys up to ``"t"`` and skips their values.

This belongs in :mod:`crdt_sync.codec` (the only module meant to touch msgpack, and the owner
of the type table used here), as ``codec.message_type(data)``; it lives here until the codec
has it.
"""

from __future__ import annotations

import msgpack

from crdt_sync.codec import _PARSERS  # the codec's table of message types

#: Label of a frame that is not a protocol message (garbage, text, unknown type).
OTHER = "other"

_TYPES = {name.encode(): name for name in _PARSERS}
_PREFIX_LIMIT = 64  # bytes read to find "t" among the keys before reading the whole frame


def message_type(frame: bytes | str) -> str:
    """The type (``"t"``) of an encoded protocol message, or :data:`OTHER`.

    Never raises. Our encoder writes ``"t"`` first: that layout is read directly; any other
    key order is read with msgpack, skipping the values of the keys before ``"t"``.
    """
    if isinstance(frame, str) or len(frame) < 5:
        return OTHER
    # fixmap, then the fixstr "t", then a fixstr value: 0x8N 0xa1 't' 0xaL <L bytes>
    if frame[0] & 0xF0 == 0x80 and frame[1:3] == b"\xa1t" and frame[3] & 0xE0 == 0xA0:
        return _TYPES.get(frame[4 : 4 + (frame[3] & 0x1F)], OTHER)
    kind = _read_type(frame[:_PREFIX_LIMIT])
    if kind is None and len(frame) > _PREFIX_LIMIT:
        kind = _read_type(frame)
    return kind or OTHER


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
