"""lib0 binary encoding primitives used by Yjs: variable-length unsigned ints and byte strings.

See ``y-protocols/PROTOCOL.md``: a varUint is unsigned LEB128 (7 bits per byte, least
significant group first, high bit = continuation). Pure functions; malformed input raises
:class:`~crdt_sync.errors.InvalidMessage`.
"""

from __future__ import annotations

from .errors import InvalidMessage


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
        result = 0
        shift = 0
        while True:
            if self.pos >= len(self.data):
                raise InvalidMessage("truncated varUint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise InvalidMessage("varUint longer than 64 bits")

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
