"""Record changes as the store commits them: which record, from where, which fields.

The store reports a :class:`RecordChanged` after each commit that changed a record's
projection row (:mod:`crdt_sync.store.projection`): a local edit (origin ``"local"``), or the
scan that follows remote updates (origin ``"remote"``). Live queries
(:meth:`crdt_sync.store.sqlite.LocalStore.watch`) and the replica's change events are fed
from it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..records.values import same_value
from .projection import Row, decode_fields

__all__ = ["ChangeListeners", "Origin", "RecordChanged"]

log = logging.getLogger("crdt_sync.store")

Origin = Literal["local", "remote"]


@dataclass(frozen=True)
class RecordChanged:
    """A record's top-level fields changed (committed). ``before`` is None for a record new
    to this store, ``after`` is None for a record that left it."""

    collection: str
    record_id: str
    origin: Origin
    before_row: Row | None = field(repr=False)
    after_row: Row | None = field(repr=False)

    @functools.cached_property
    def before(self) -> dict[str, Any] | None:
        """The fields before the change."""
        return None if self.before_row is None else decode_fields(self.before_row)

    @functools.cached_property
    def after(self) -> dict[str, Any] | None:
        """The fields after the change."""
        return None if self.after_row is None else decode_fields(self.after_row)

    @functools.cached_property
    def fields(self) -> frozenset[str]:
        """The names of the top-level fields whose value changed (added, removed, updated)."""
        before, after = self.before or {}, self.after or {}
        return frozenset(
            k
            for k in before.keys() | after.keys()
            if k not in before or k not in after or not same_value(before[k], after[k])
        )


class ChangeListeners:
    """Listeners of :class:`RecordChanged`; a failing listener is logged, not raised."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[RecordChanged], None]] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: Callable[[RecordChanged], None]) -> Callable[[], None]:
        """Call ``listener`` for each change from now on; returns a function removing it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def publish(self, change: RecordChanged) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("a record change listener failed")
