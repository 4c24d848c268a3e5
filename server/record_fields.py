"""A record's indexed top-level fields, read on the relay from its Yjs updates.

The relay keeps, per record, the values of its scalar top-level fields in an indexed table
(``crdt_sync.subscriptions.indexed_values``), rewritten in the transaction that commits each
update: subscriptions and access grants are then evaluated by indexed queries, never by
decoding documents. This module is the one place that decodes a record for it: the record's
updates go into a fresh ``pycrdt.Doc`` (in any order, :func:`crdt_sync.yjs.integrate.
apply_updates`) and :func:`crdt_sync.records.layout.read_fields` reads what shows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pycrdt import Doc

from crdt_sync.records.layout import read_fields
from crdt_sync.subscriptions import indexed_values
from crdt_sync.yjs.integrate import apply_updates

log = logging.getLogger(__name__)

IndexedFields = dict[str, int | float | str]
"""A record's indexed top-level fields: name -> scalar as SQLite compares it."""


def indexed_fields(updates: Iterable[bytes]) -> IndexedFields:
    """The indexed top-level fields of the record whose updates these are (``{}`` if it has
    none, or if its documents are not records, e.g. a Yjs app's own shapes)."""
    doc: Doc[Any] = Doc()
    try:
        apply_updates(doc, updates)
        return dict(indexed_values(read_fields(doc)))
    except Exception:  # stored updates the record layout cannot read: nothing indexed
        log.debug("record fields not readable", exc_info=True)
        return {}
