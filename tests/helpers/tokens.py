"""Unique tokens as written values, and random record edits made of them (hypothesis), for
the "no silent loss" property tests: a token is one write, so whether it survived, lost (in a
conflict) or was removed by someone who saw it can be checked by looking for it."""

from __future__ import annotations

import itertools
import re
from typing import Any

from hypothesis import event
from hypothesis import strategies as st
from pycrdt import Doc

from crdt_sync.errors import InvalidEdit
from crdt_sync.records.layout import layout_of, read_fields
from crdt_sync.records.record import RecordEditor
from crdt_sync.records.text import TextField

PLAIN = ("phone", "title")
MAP_KEYS = ("street", "floor", "city")
TOKEN = re.compile("«[0-9]+»")


def tokens_in(value: Any) -> set[str]:
    """Every token in a plain value (strings, also inside texts, dicts and lists)."""
    if isinstance(value, str):
        return set(TOKEN.findall(value))
    if isinstance(value, dict):
        return set().union(*(tokens_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(tokens_in(v) for v in value)) if value else set()
    return set()


def visible(doc: Doc[Any]) -> set[str]:
    """The tokens a record shows."""
    return tokens_in(read_fields(doc))


def in_conflicts(doc: Doc[Any]) -> set[str]:
    """The tokens on the losing side of a record's conflicts."""
    found: set[str] = set()
    for conflict in layout_of(doc).conflicts():
        found |= tokens_in(conflict.lost.value)
    return found


class Tokens:
    """Unique tokens; one counts as written once the operation that made it succeeded."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self.written: set[str] = set()
        self.pending: set[str] = set()

    def new(self) -> str:
        token = f"«{next(self._next)}»"
        self.pending.add(token)
        return token

    def settle(self, done: bool) -> None:
        if done:
            self.written |= self.pending
        self.pending.clear()


def boundaries(text: str) -> list[int]:
    """Character positions between tokens (a token is never split)."""
    return [0, *(m.end() for m in TOKEN.finditer(text))]


def random_op(data: st.DataObject, rec: RecordEditor, tokens: Tokens) -> None:
    """One random operation, valid or skipped for the record's current state."""
    op = data.draw(
        st.sampled_from(
            [
                "plain",
                "lww",
                "nested",
                "delete",
                "delete_nested",
                "text_insert",
                "text_delete",
                "list_insert",
                "list_delete",
                "assign_map",
                "assign_list",
                "retype",
            ]
        ),
        label="op",
    )
    event(f"op {op}")
    try:
        if op == "plain":
            name = data.draw(st.sampled_from(PLAIN))
            if isinstance(rec.get(name), TextField):
                # A str assigned to a text edits it with a minimal splice: characters of the
                # old token stay, so a token is no longer one write. Texts get token inserts.
                event("plain write to a text: skipped")
                return
            rec[name] = tokens.new()
        elif op == "lww":
            rec["status"] = {"by": tokens.new(), "n": data.draw(st.integers(0, 3))}
        elif op == "nested":
            rec.map("address")[data.draw(st.sampled_from(MAP_KEYS))] = tokens.new()
        elif op == "delete":
            present = [k for k in ("status", "notes", "address", "labels", *PLAIN) if k in rec]
            if present:
                del rec[data.draw(st.sampled_from(present))]
        elif op == "delete_nested":
            if "address" in rec and hasattr(rec["address"], "keys") and rec["address"].keys():
                address = rec["address"]
                del address[data.draw(st.sampled_from(sorted(address.keys())))]
        elif op == "text_insert":
            notes = rec.text("notes")
            spots = boundaries(str(notes))
            notes.insert(data.draw(st.sampled_from(spots)), tokens.new())
        elif op == "text_delete":
            if "notes" in rec:
                notes = rec.text("notes")
                found = list(TOKEN.finditer(str(notes)))
                if found:
                    m = data.draw(st.sampled_from(found))
                    notes.delete(m.start(), m.end() - m.start())
        elif op == "list_insert":
            labels = rec.array("labels")
            value: Any = tokens.new()
            if data.draw(st.booleans()):
                value = {"part": value, "qty": data.draw(st.integers(1, 3))}
            labels.insert(data.draw(st.integers(0, len(labels))), value)
        elif op == "list_delete":
            if "labels" in rec:
                labels = rec.array("labels")
                if len(labels):
                    del labels[data.draw(st.integers(0, len(labels) - 1))]
        elif op == "assign_map":
            shown = rec.get("address")
            current = shown.to_dict() if hasattr(shown, "to_dict") else {}
            keep = data.draw(st.lists(st.sampled_from(sorted(current) or ["-"]), max_size=2))
            new = {k: current[k] for k in keep if k in current}
            new[data.draw(st.sampled_from(MAP_KEYS))] = tokens.new()
            rec["address"] = new
        elif op == "assign_list":
            shown = rec.get("labels")
            current = shown.to_list() if hasattr(shown, "to_list") else []
            if current and data.draw(st.booleans()):
                current.pop(data.draw(st.integers(0, len(current) - 1)))
            current.insert(data.draw(st.integers(0, len(current))), tokens.new())
            rec["labels"] = current
        else:  # retype: a field becomes another kind of thing
            name = data.draw(st.sampled_from(["notes", "address", "labels", "phone"]))
            kind = data.draw(st.sampled_from(["value", "text", "map", "list"]))
            if name in rec:
                del rec[name]
            if kind == "value":
                rec[name] = tokens.new()
            elif kind == "text":
                rec.text(name).append(tokens.new())
            elif kind == "map":
                rec.map(name)[data.draw(st.sampled_from(MAP_KEYS))] = tokens.new()
            else:
                rec.array(name).append(tokens.new())
    except InvalidEdit:
        event("refused: the field holds another kind")
        tokens.settle(False)
    else:
        tokens.settle(True)
