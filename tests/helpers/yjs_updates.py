"""Small Yjs updates for the relay's tests: a text typed one edit at a time, and reading it back."""

from __future__ import annotations

from pycrdt import Doc, Text


def text_edits(count: int, client_id: int = 7) -> list[bytes]:
    """``count`` updates of one Yjs client appending ``"0,"``, ``"1,"``, ... to the text
    ``notes``: each depends on the one before it."""
    doc = Doc(client_id=client_id)
    text = doc.get("notes", type=Text)
    updates = []
    for index in range(count):
        before = doc.get_state()
        text += f"{index},"
        updates.append(doc.get_update(before))
    return updates


def text_update(text: str, client_id: int) -> bytes:
    """One update inserting ``text`` into ``notes`` (depends on nothing)."""
    doc = Doc(client_id=client_id)
    doc.get("notes", type=Text).insert(0, text)
    return doc.get_update()


def text_of(update: bytes) -> str:
    """The text ``notes`` of the state ``update`` holds."""
    doc = Doc()
    doc.apply_update(update)
    return str(doc.get("notes", type=Text))
