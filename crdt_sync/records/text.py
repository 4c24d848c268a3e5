"""Collaborative text fields addressed by character (code point) positions.

pycrdt's ``Text`` indexes by UTF-8 byte offset, and an offset that falls inside a multi-byte
character silently appends at the end of the text. Every position in this API is a count of
characters, converted here, so notes full of accents and emoji edit where the user means.
"""

from __future__ import annotations

from pycrdt import Text

from ..errors import InvalidEdit
from .values import check_text


def byte_offset(text: str, pos: int) -> int:
    """UTF-8 byte offset of character position ``pos`` in ``text``."""
    return len(text[:pos].encode("utf-8"))


class TextField:
    """A collaborative text field of a record, edited inside :meth:`LocalStore.edit`.

    Positions and lengths are characters. ``field += "more"`` appends.
    """

    __slots__ = ("_text",)

    def __init__(self, text: Text) -> None:
        self._text = text

    def __str__(self) -> str:
        return str(self._text)

    def __repr__(self) -> str:
        return f"TextField({str(self._text)!r})"

    def __len__(self) -> int:
        return len(str(self._text))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextField):
            return str(self) == str(other)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def insert(self, pos: int, value: str) -> None:
        """Insert ``value`` before character ``pos`` (``0 <= pos <= len(self)``).

        Raises :class:`InvalidEdit` for a position out of range or a ``value`` that is not
        valid Unicode text (a lone surrogate).
        """
        current = str(self._text)
        if not 0 <= pos <= len(current):
            raise InvalidEdit(f"text position {pos} is outside 0..{len(current)}")
        check_text(value, path="text")
        if value:
            self._text.insert(byte_offset(current, pos), value)

    def delete(self, pos: int, length: int = 1) -> None:
        """Delete ``length`` characters starting at character ``pos``."""
        current = str(self._text)
        if length < 0 or not 0 <= pos <= pos + length <= len(current):
            raise InvalidEdit(
                f"cannot delete {length} characters at {pos} from a text of {len(current)}"
            )
        if length:
            start = byte_offset(current, pos)
            end = start + len(current[pos : pos + length].encode("utf-8"))
            del self._text[start:end]

    def splice(self, pos: int, delete: int, insert: str = "") -> None:
        """Delete ``delete`` characters at ``pos``, then insert ``insert`` there.

        Validates everything before changing anything: an invalid splice changes nothing.
        """
        check_text(insert, path="text")
        self.delete(pos, delete)
        self.insert(pos, insert)

    def append(self, value: str) -> None:
        """Append ``value`` at the end."""
        self.insert(len(self), value)

    def __iadd__(self, value: str) -> TextField:
        self.append(value)
        return self

    def replace(self, value: str) -> None:
        """Make the text equal to ``value`` with one minimal splice (keeps concurrent edits
        outside the changed span)."""
        check_text(value, path="text")
        current = str(self._text)
        if current == value:
            return
        prefix = 0
        limit = min(len(current), len(value))
        while prefix < limit and current[prefix] == value[prefix]:
            prefix += 1
        suffix = 0
        while (
            suffix < limit - prefix
            and current[len(current) - 1 - suffix] == value[len(value) - 1 - suffix]
        ):
            suffix += 1
        self.splice(prefix, len(current) - prefix - suffix, value[prefix : len(value) - suffix])
