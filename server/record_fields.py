"""A record's indexed top-level fields, read on the relay from its Yjs updates.

The relay keeps, per record, the values of its scalar top-level fields in an indexed table
(``crdt_sync.subscriptions.indexed_values``), rewritten in the transaction that commits each
update: subscriptions and access grants are then evaluated by indexed queries, never by
decoding documents. This module is the one place that decodes a record for it: the record's
updates go into a fresh ``pycrdt.Doc`` (in any order, :func:`crdt_sync.yjs.integrate.
apply_updates`) and :func:`crdt_sync.records.layout.read_fields` reads what shows.

A deleted record (a tombstone in its document, docs/records.md "Deleting a record") keeps the
indexed fields it had when it was deleted, until the relay purges it: the replicas that held it
through a query subscription or a scoped token keep receiving it (the tombstone, then writes
that lose to it, which they log), and writes that lost to the deletion never change what it
matches (docs/relay.md, "Deletion and purge"). The functions here say ``None`` for a deleted
record: "its fields as they were".
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from pycrdt import Doc

from crdt_sync.records.layout import layout_of
from crdt_sync.subscriptions import indexed_values
from crdt_sync.yjs.integrate import apply_updates

log = logging.getLogger(__name__)

IndexedFields = dict[str, int | float | str]
"""A record's indexed top-level fields: name -> scalar as SQLite compares it."""


def indexed_fields(updates: Iterable[bytes]) -> IndexedFields | None:
    """The indexed top-level fields of the record whose updates these are (``{}`` if it has
    none, or if its documents are not records, e.g. a Yjs app's own shapes); ``None`` if it is
    deleted (its fields stay those it had before, see the module docstring)."""
    doc: Doc[Any] = Doc()
    try:
        apply_updates(doc, updates)
        return _indexed(doc)
    except Exception:  # stored updates the record layout cannot read: nothing indexed
        log.debug("record fields not readable", exc_info=True)
        return {}


class FieldReader:
    """Indexed fields of records being written, keeping the documents of the records written
    last (least recently used out) so that a commit applies only its own updates to them
    instead of decoding the record's whole state again.

    Used by one thread only (the storage writer's: pycrdt documents stay on the thread that
    made them). After a failed transaction, :meth:`forget` the records it touched: their
    documents hold updates that were not stored.

    Args:
        max_docs: how many documents to keep.
    """

    def __init__(self, max_docs: int = 256) -> None:
        self.max_docs = max_docs
        self._docs: OrderedDict[tuple[str, str, str], Doc[Any]] = OrderedDict()

    def after(
        self,
        key: tuple[str, str, str],
        load: Callable[[], list[bytes]],
        updates: list[bytes],
    ) -> tuple[bool, IndexedFields | None]:
        """``(whether the record existed before, its indexed fields once ``updates`` are
        applied)``, the fields ``None`` if it is deleted then; ``load()`` gives its committed
        updates when its document is not kept."""
        doc = self._docs.pop(key, None)
        existed = doc is not None
        try:
            if doc is None:
                doc = Doc()
                parts = load()
                existed = bool(parts)
                apply_updates(doc, parts)
            apply_updates(doc, updates)
            fields = _indexed(doc)
        except Exception:  # stored updates the record layout cannot read: nothing indexed
            log.debug("record fields not readable", exc_info=True)
            return existed, {}
        if self.max_docs:
            self._docs[key] = doc
            while len(self._docs) > self.max_docs:
                self._docs.popitem(last=False)
        return existed, fields

    def forget(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Drop the documents of these records (a transaction that wrote them failed)."""
        for key in keys:
            self._docs.pop(key, None)


def _indexed(doc: Doc[Any]) -> IndexedFields | None:
    layout = layout_of(doc)
    if layout.deletion() is not None:
        return None
    return dict(indexed_values(layout.read()))
