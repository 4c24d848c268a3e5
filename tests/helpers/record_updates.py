"""Record updates (layout v2) built in memory, for relay tests that need a record's fields."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, TransactionEvent

from crdt_sync.records.clock import HybridClock, Timestamp
from crdt_sync.records.lww import LwwPolicy
from crdt_sync.records.record import RecordEditor

_NOW = itertools.count(1_790_000_000_000)


class RecordWriter:
    """One record's document; :meth:`write` sets fields and returns the edit's update."""

    def __init__(self, collection: str = "jobs", replica: str = "writer") -> None:
        self.doc: Doc = Doc()
        self.collection = collection
        self.clock = HybridClock(replica)

    def _stamp(self, current: Timestamp | None) -> Timestamp:
        now = next(_NOW)
        return self.clock.after(current, now) if current else self.clock.tick(now)

    def write(self, **fields: Any) -> bytes:
        return self._edit(lambda editor: editor.update(fields))

    def delete(self) -> bytes:
        """The update deleting the record (its tombstone, docs/records.md)."""
        return self._edit(lambda editor: editor.delete_record())

    def _edit(self, change: Callable[[RecordEditor], object]) -> bytes:
        captured: list[bytes] = []

        def capture(event: TransactionEvent) -> None:
            captured.append(event.update)

        sub = self.doc.observe(capture)
        try:
            with self.doc.transaction():
                change(RecordEditor(self.doc, self.collection, LwwPolicy(), self._stamp))
        finally:
            self.doc.unobserve(sub)
        return captured[0]


def record_update(collection: str = "jobs", **fields: Any) -> bytes:
    """The first update of a new record holding ``fields``."""
    return RecordWriter(collection).write(**fields)
