"""Deleting records in the local store, and forgetting the ones whose tombstone the relay purged.

The rule (docs/records.md, "Deleting a record"): a deletion is an edit like any other. It puts a
tombstone in the record's document (:meth:`~crdt_sync.records.layout.Layout.delete_record`),
goes through the outbox, and is pending until the relay acknowledges it. **The deletion wins**:
a deleted record is never revived, and every write made without seeing the deletion shows up
in the conflict log as lost to it (the conflict scan finds them in the document, like any other
conflict).

What the store keeps of a deleted record: its rows stay (a deleted document is small: what
the deleter saw is gone) so that late writes from replicas that had not seen the deletion can
still be merged and logged, until the relay says it purged the tombstone
(:func:`forget_purged`, ``removed`` in docs/protocol.md). Then every row goes
(:func:`~crdt_sync.store.removal.remove_records` with ``drop_pending``); pending changes of
such a record are settled first: each write they hold is logged as lost to the deletion, and
their outbox entries leave the outbox. Nothing is dropped silently.

The store's ``records.deleted`` column (the tombstone key) and an in-memory map of it let reads
skip deleted records without decoding documents: set by the local delete, by a remote update
carrying a tombstone (read from its bytes, :func:`~crdt_sync.records.layout.tombstones_in`),
cleared by discarding an unacknowledged delete. A deleted record has no projection row
(:mod:`crdt_sync.store.projection`): it is removed in the transaction that deletes the record
(local edit, remote update) and never written while the record is deleted, so local queries,
counts, search, live queries and ``get()`` no longer see it; live queries hear it leave.

These functions are the :class:`~crdt_sync.store.sqlite.LocalStore`'s own: they use its
internals (its lock, group commit and caches), and ``LocalStore.delete`` /
``LocalStore.forget_purged`` are their public face.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pycrdt import Doc

from ..errors import InvalidEdit, RecordDeleted
from ..records.clock import Timestamp
from ..records.layout import Conflict, layout_of
from ..records.lww import describe_time
from ..yjs.integrate import apply_updates
from .projection import Row
from .removal import remove_records

if TYPE_CHECKING:
    from .sqlite import ConflictLogEntry, LocalStore


Key = tuple[str, str]


def deleted_error(collection: str, record_id: str, tombstone: str | None) -> RecordDeleted:
    """The error a read of a deleted record raises, naming who deleted it and when."""
    try:
        ts = Timestamp.decode(tombstone) if tombstone else None
    except InvalidEdit:
        ts = None
    if ts is None:
        return RecordDeleted(collection, record_id)
    return RecordDeleted(collection, record_id, ts.replica, describe_time(ts.ms))


def refuse_deleted(store: LocalStore, key: Key, doc: Doc[Any]) -> None:
    """Raise :class:`RecordDeleted` if ``doc`` (taken out of the cache for an edit) is
    deleted; the document goes back to the cache first."""
    tombstone = layout_of(doc).deletion()
    if tombstone is not None:
        store._remember(key, doc)
        raise deleted_error(key[0], key[1], tombstone.encode())


def mark_deleted(store: LocalStore, marks: Mapping[Key, str]) -> Callable[[], None]:
    """Mark records deleted in memory (a write that deletes them is being committed); returns
    the function that takes the marks back if that commit fails."""
    if not marks:
        return _nothing
    before = {key: store._deleted.get(key) for key in marks}
    for key, tombstone in marks.items():
        store._deleted[key] = max(tombstone, store._deleted.get(key, ""))

    def unmark() -> None:
        for key, old in before.items():
            if old is None:
                store._deleted.pop(key, None)
            else:
                store._deleted[key] = old

    return unmark


def _nothing() -> None:
    pass


def set_deleted(store: LocalStore, key: Key, tombstone: Timestamp | None) -> None:
    """The record's committed tombstone is now ``tombstone`` (``None``: not deleted)."""
    if tombstone is None:
        store._deleted.pop(key, None)
    else:
        store._deleted[key] = tombstone.encode()


async def delete(store: LocalStore, collection: str, record_id: str) -> None:
    """:meth:`LocalStore.delete <crdt_sync.store.sqlite.LocalStore.delete>`."""
    if store.is_deleted(collection, record_id):
        return
    try:
        async with store.edit(collection, record_id, create=False) as editor:
            editor.delete_record()
    except RecordDeleted:
        return  # deleted meanwhile (a remote tombstone): nothing more to do


async def forget_purged(
    store: LocalStore, items: Iterable[tuple[str, str, str | None]]
) -> list[Key]:
    """:meth:`LocalStore.forget_purged <crdt_sync.store.sqlite.LocalStore.forget_purged>`."""
    wanted = {(c, r): t for c, r, t in items}
    if not wanted:
        return []
    from .sqlite import _conflict_columns, _log_conflicts  # (a cycle at import time)

    now = store._time()
    limit = store._conflict_log_limit
    rows: list[tuple[Any, ...]] = []
    async with store._edit_lock:  # no edit of these records in between
        present: list[Key] = []
        for key, tombstone in wanted.items():
            if store._writer.in_flight(key):
                await store._writer.settled(key)
            row = await store._record_row(*key)
            if row is None:
                continue
            present.append(key)
            if row[5]:  # pending local changes: log what they wrote as lost to the deletion
                for conflict in await _lost_to_purged(store, key, tombstone):
                    rows.append((*key, *_conflict_columns(conflict), now))
        if not present:
            return []

        def write(
            db: sqlite3.Connection,
        ) -> tuple[list[ConflictLogEntry], dict[Key, Row | None]]:
            new = _log_conflicts(db, rows, limit)
            # A record whose tombstone never got here still has its projection row: live
            # queries hear that it left.
            before = {key: _projection_row(db, key) for key in present}
            remove_records(db, present, drop_pending=True)
            return new, before

        new, removed = await store._write(write, present)
        for key in removed:
            store._deleted.pop(key, None)
        store._forget_removed(removed, "remote")
    await store.outbox._load_counts()  # entries of removed records left the outbox
    store._publish_conflicts(new)
    return list(removed)


def _projection_row(db: sqlite3.Connection, key: Key) -> Row | None:
    found = db.execute(
        "SELECT fields, nested FROM projection WHERE collection = ? AND id = ?", key
    ).fetchone()
    return None if found is None else (str(found[0]), found[1])


async def _lost_to_purged(store: LocalStore, key: Key, tombstone: str | None) -> list[Conflict]:
    """What the record's pending changes wrote that the deletion removes.

    If this store has the tombstone, the document says it all (:meth:`Layout.conflicts`).
    Otherwise (the tombstone was purged before it got here) the deleter is taken to have seen
    what the relay had confirmed to this replica: its removal is replayed on the confirmed
    state, then the pending updates are applied, and what they wrote shows (and is lost).
    """
    current = await store._doc(*key, remember=False)
    layout = layout_of(current)
    if layout.deletion() is not None:
        return layout.conflicts()
    doc = await store._confirmed_doc(*key)
    pending = [
        bytes(data)
        for (data,) in await store.conn.execute_fetchall(
            "SELECT data FROM updates WHERE collection = ? AND id = ? AND outbox_seq IS NOT NULL"
            " ORDER BY outbox_seq",
            key,
        )
    ]
    seen = layout_of(doc)
    with doc.transaction():
        seen.supersede_all()
    apply_updates(doc, pending)
    try:
        ts = Timestamp.decode(tombstone) if tombstone else None
    except InvalidEdit:
        ts = None
    found = {c.key: c for c in seen.conflicts()}
    for conflict in seen.lost_to_deletion(ts):
        found.setdefault(conflict.key, conflict)
    return list(found.values())
