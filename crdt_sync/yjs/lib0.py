"""lib0 binary encoding primitives used by Yjs: variable-length ints, byte strings, ``any``.

See ``y-protocols/PROTOCOL.md``: a varUint is unsigned LEB128 (7 bits per byte, least
significant group first, high bit = continuation). A varInt (signed) keeps 6 value bits and a
sign bit in its first byte. An ``any`` value (lib0 ``writeAny``) is a type tag byte and its
payload. Pure functions; malformed input raises :class:`~crdt_sync.errors.InvalidMessage`.
"""

from __future__ import annotations

from ..errors import InvalidMessage


def write_var_uint(value: int) -> bytes:
    """Encode a non-negative int as a varUint."""
    if value < 0:
        raise ValueError("varUint cannot encode a negative number")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    """Encode a byte string as varUint(length) followed by the bytes."""
    return write_var_uint(len(data)) + data


def write_var_string(text: str) -> bytes:
    """Encode a string as a varUint-prefixed UTF-8 byte string."""
    return write_var_bytes(text.encode("utf-8"))


class Reader:
    """Reads lib0-encoded values from a byte string, front to back."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def done(self) -> bool:
        """Whether every byte has been read."""
        return self.pos >= len(self.data)

    def var_uint(self) -> int:
        """Read one varUint (at most 64 bits)."""
        data = self.data
        pos = self.pos
        try:
            byte = data[pos]
            result = byte & 0x7F
            shift = 7
            while byte >= 0x80:
                if shift > 63:
                    raise InvalidMessage("varUint longer than 64 bits")
                pos += 1
                byte = data[pos]
                result |= (byte & 0x7F) << shift
                shift += 7
        except IndexError:
            raise InvalidMessage("truncated varUint") from None
        self.pos = pos + 1
        return result

    def uint8(self) -> int:
        """Read one byte."""
        if self.pos >= len(self.data):
            raise InvalidMessage("truncated input")
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def skip(self, count: int) -> None:
        """Skip ``count`` bytes."""
        if self.pos + count > len(self.data):
            raise InvalidMessage("truncated input")
        self.pos += count

    def skip_var_int(self) -> None:
        """Skip one signed varInt (at most 64 bits)."""
        for _ in range(10):
            if self.uint8() < 0x80:
                return
        raise InvalidMessage("varInt longer than 64 bits")

    def skip_any(self) -> None:
        """Skip one lib0 ``any`` value without building it.

        Iterative, so deeply nested arrays and objects cannot exhaust the stack; every value
        takes at least one byte, so a forged length cannot make it loop past the input's end.
        """
        left = [1]  # values still to skip at each nesting level
        keyed = [False]  # whether the values of that level are object entries (key first)
        while left:
            if left[-1] == 0:
                left.pop()
                keyed.pop()
                continue
            left[-1] -= 1
            if keyed[-1]:
                self.var_bytes()
            tag = self.uint8()
            if tag in _ANY_EMPTY:
                continue
            if tag == _ANY_VAR_INT:
                self.skip_var_int()
            elif tag in _ANY_FIXED:
                self.skip(_ANY_FIXED[tag])
            elif tag in _ANY_BYTES:
                self.var_bytes()
            elif tag in _ANY_NESTED:
                left.append(self.var_uint())
                keyed.append(tag == _ANY_OBJECT)
            else:
                raise InvalidMessage(f"unknown lib0 any type {tag}")

    def var_bytes(self) -> bytes:
        """Read a varUint-prefixed byte string."""
        length = self.var_uint()
        end = self.pos + length
        if end > len(self.data):
            raise InvalidMessage("truncated byte string")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def var_string(self) -> str:
        """Read a varUint-prefixed UTF-8 string."""
        try:
            return self.var_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMessage("string is not valid UTF-8") from exc

    def rest(self) -> bytes:
        """Read every remaining byte."""
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


# lib0 ``any`` type tags (lib0/encoding.js ``writeAny``).
_ANY_EMPTY = frozenset((127, 126, 121, 120))  # undefined, null, false, true
_ANY_VAR_INT = 125
_ANY_FIXED = {124: 4, 123: 8, 122: 8}  # float32, float64, bigint64
_ANY_BYTES = frozenset((119, 116))  # string, Uint8Array
_ANY_OBJECT = 118
_ANY_NESTED = frozenset((_ANY_OBJECT, 117))  # object (key, value pairs), array
