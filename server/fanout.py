"""Fan-out: who receives an accepted update, with which cursor, and when.

Theory of operation
===================

Native replicas *subscribe* to collections of their tenant (:meth:`Fanout.subscribe`); Yjs
connections open records (rooms of :class:`~crdt_sync.server.yjs_rooms.YjsRooms`). The gateway
hands every accepted update here as a :class:`Write`, and this module decides the deliveries
(docs/relay.md, "Fan-out"; docs/protocol.md, "Live updates"):

- **At commit** (:meth:`Fanout.committed`, with the change seqs the storage gave the write):
  every subscriber of the update's collection, except the connection that sent it, gets it,
  with the newest seq of the frame as its cursor: one ``updates`` frame per subscriber per
  group commit (the commit callbacks of one group commit run in one loop iteration, and the
  deliveries are flushed once, in the next). Commits complete in seq order and each one's
  updates reach every subscriber at once, so a cursor only ever names committed changes its
  subscriber has received. Every Yjs connection that has the record open gets the update too,
  the sender included: the updates of one group commit as one merged Update message.
- **Early** (:meth:`Fanout.early`, ``--early-fanout``): at acceptance, before the commit,
  with cursor ``None``; one frame per subscriber for all writes accepted in one loop
  iteration. At commit, a subscriber that got the early copy gets the cursor that covers it
  (alone, unless it rides on a frame of late copies), and one that subscribed since gets a
  late copy. A write whose submission failed is :meth:`Fanout.withdraw`-n before its early
  copies go out; a write whose commit fails never gets a seq, so no cursor covers it.

**Selections** (subscriptions narrowed by ids or queries, and record-level access): a
subscriber registered with selections (:meth:`Fanout.subscribe`) gets an update of a filtered
collection only if the record, as committed, is in its selection (resolved at its last
catch-up, :class:`~crdt_sync.subscriptions.Selection`), and a ``drop`` for a record that was
in it before the commit and is not after (the sender too: its own change may have moved the
record out). Filtered subscribers get no early copies (a record's fields are known at commit).
A Yjs member whose grant restricts the record gets no update after which the record is
outside its access.

Deliveries only queue frames (:class:`Subscriber`, :class:`~crdt_sync.server.yjs_rooms.
RoomMember`): nothing here waits for a peer.

This is the seam where fan-out between relay nodes (Redis) plugs in: a node would publish its
commits' writes and run :meth:`Fanout.committed` for the writes other nodes committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pycrdt import merge_updates

from crdt_sync.messages import PushItem, RemovedItem
from crdt_sync.query import Filter, matches, resolve
from crdt_sync.subscriptions import Selection
from crdt_sync.yjs.merge import merge

from .relay_clock import system_clock
from .storage import IndexedFields
from .yjs_rooms import RoomKey, YjsRooms

_MERGE_CHUNK = 64  # updates merged into one Yjs Update message (merge_updates is quadratic)

Delivery = tuple[str, str, bytes]
"""``(collection, record_id, update)``: one update sent to a subscriber."""


class Subscriber(Protocol):
    """A native connection subscribed to collections. Queues and never waits."""

    def __hash__(self) -> int: ...

    def deliver(self, updates: list[Delivery], cursor: int | None) -> None:
        """Send ``updates`` as one frame with ``cursor`` (``None``: not committed yet), or
        the cursor alone if ``updates`` is empty. A connection that is closing ignores it."""

    def deliver_removed(self, items: list[RemovedItem]) -> None:
        """Send ``removed`` for these purged records (no cursor: the next catch-up lists
        them again for a replica that missed this). A connection that is closing ignores it."""


class FilteredSubscriber(Subscriber, Protocol):
    """A subscriber with selections: it is also told which records left them."""

    def dropped(self, keys: list[tuple[str, str]]) -> None:
        """Send ``drop`` for these records (before the frame carrying the cursor that covers
        the change that moved them out)."""


@dataclass(eq=False, slots=True)
class Write:
    """Updates accepted and submitted to the group commit together, until fanned out.

    Attributes:
        tenant: whose records they are.
        origin: the connection (or Yjs room member) that sent them: never sent back to it
            as a subscriber (Yjs rooms echo to the sender).
        items: the updates, in push order.
        early: ``(subscriber, collection)`` pairs that got the early copy.
    """

    tenant: str
    origin: object
    items: Sequence[PushItem]
    early: set[tuple[Subscriber, str]] = field(default_factory=set)


class Fanout:
    """The deliveries of one relay (see the module docstring).

    Args:
        rooms: the records open on Yjs connections.
        clock: the relay's clock (windows in Yjs members' grants).
    """

    def __init__(self, rooms: YjsRooms, clock: Callable[[], dt.datetime] = system_clock) -> None:
        self.rooms = rooms
        self.clock = clock
        # subscriber -> collection -> its resolved selection there (filtered ones only)
        self._selections: dict[Subscriber, dict[str, Selection]] = {}
        # tenant -> collection -> subscribers
        self._subscriptions: dict[str, dict[str, set[Subscriber]]] = {}
        self._early: list[Write] = []  # accepted, early copies not yet queued
        self._committed: list[tuple[Write, Sequence[int]]] = []  # committed, not yet delivered

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self,
        tenant: str,
        collections: Iterable[str],
        subscriber: Subscriber,
        selections: Mapping[str, Selection] | None = None,
    ) -> None:
        """Deliver ``tenant``'s updates of ``collections`` to ``subscriber`` from now on.

        ``selections``: per filtered collection, the resolved :class:`Selection` the
        subscriber keeps there (it must then be a :class:`FilteredSubscriber`); replaces the
        ones given before.
        """
        by_collection = self._subscriptions.setdefault(tenant, {})
        for name in collections:
            by_collection.setdefault(name, set()).add(subscriber)
        if selections:
            self._selections[subscriber] = dict(selections)
        else:
            self._selections.pop(subscriber, None)

    def unsubscribe(self, tenant: str, collections: Iterable[str], subscriber: Subscriber) -> None:
        """Stop delivering ``tenant``'s updates of ``collections`` to ``subscriber``."""
        by_collection = self._subscriptions.get(tenant, {})
        for name in collections:
            peers = by_collection.get(name)
            if peers is not None:
                peers.discard(subscriber)
                if not peers:
                    del by_collection[name]
        if not by_collection:
            self._subscriptions.pop(tenant, None)
        if not any(subscriber in peers for peers in by_collection.values()):
            self._selections.pop(subscriber, None)

    # -- deliveries ------------------------------------------------------------------------

    def removed(self, tenant: str, items: Sequence[RemovedItem], reasons: Sequence[str]) -> None:
        """These records of ``tenant`` were purged: tell the native subscribers of their
        collections at once, and refuse them on the Yjs connections that have them open
        (``reasons[i]`` for ``items[i]``)."""
        by_collection = self._subscriptions.get(tenant, {})
        outgoing: dict[Subscriber, list[RemovedItem]] = {}
        for item in items:
            for peer in by_collection.get(item.collection, ()):
                outgoing.setdefault(peer, []).append(item)
        for peer, removed in outgoing.items():
            peer.deliver_removed(removed)
        for item, reason in zip(items, reasons, strict=True):
            self.rooms.remove_record((tenant, item.collection, item.record_id), reason)

    def early(self, write: Write) -> None:
        """Queue the early copies of an accepted write (sent in the next loop iteration)."""
        if write.tenant not in self._subscriptions:
            return
        self._early.append(write)
        if len(self._early) == 1:
            asyncio.get_running_loop().call_soon(self._flush_early)

    def withdraw(self, write: Write) -> None:
        """The write was not submitted after all: its early copies, if still queued, stay
        unsent."""
        if write in self._early:
            self._early.remove(write)

    def committed(self, write: Write, seqs: Sequence[int]) -> None:
        """Queue the commit-time deliveries of a committed write (``seqs``: its change seqs)."""
        tenant = write.tenant
        if tenant not in self._subscriptions and not self.rooms.has_tenant(tenant):
            return
        self._committed.append((write, seqs))
        if len(self._committed) == 1:
            asyncio.get_running_loop().call_soon(self._flush_committed)

    def _flush_early(self) -> None:
        pending, self._early = self._early, []
        outgoing: dict[Subscriber, list[Delivery]] = {}
        for write in pending:
            by_collection = self._subscriptions.get(write.tenant)
            if not by_collection:
                continue
            for item in write.items:
                for peer in by_collection.get(item.collection, ()):
                    if peer is write.origin or item.collection in self._selections.get(peer, ()):
                        continue  # filtered: sent at commit, when the record's fields are known
                    outgoing.setdefault(peer, []).append(
                        (item.collection, item.record_id, item.update)
                    )
                    write.early.add((peer, item.collection))
        # Delivered after the walk: a delivery may cut a slow peer off, which unsubscribes it.
        for peer, updates in outgoing.items():
            peer.deliver(updates, None)

    def _flush_committed(self) -> None:
        """Late copies and cursors to subscribers, committed updates to Yjs rooms."""
        if self._early:
            self._flush_early()  # early copies always precede the cursor that covers them
        pending, self._committed = self._committed, []
        late: dict[Subscriber, list[Delivery]] = {}
        cursors: dict[Subscriber, int] = {}
        drops: dict[Subscriber, dict[tuple[str, str], None]] = {}
        to_rooms: dict[RoomKey, list[bytes]] = {}
        room_fields: dict[RoomKey, IndexedFields] = {}
        selections = self._selections
        for write, seqs in pending:  # in commit (seq) order
            tenant = write.tenant
            fields: Mapping[tuple[str, str], tuple[IndexedFields | None, IndexedFields]] = (
                getattr(seqs, "fields", None) or {}
            )
            states: Mapping[tuple[str, str], list[bytes]] = getattr(seqs, "states", None) or {}
            if self.rooms.has_tenant(tenant):
                for item in write.items:
                    key = (tenant, item.collection, item.record_id)
                    to_rooms.setdefault(key, []).append(item.update)
                    known = fields.get((item.collection, item.record_id))
                    if known is not None:
                        room_fields[key] = known[1]
            by_collection = self._subscriptions.get(tenant)
            if not by_collection:
                continue
            early = write.early
            for item, seq in zip(write.items, seqs, strict=True):
                record = (item.collection, item.record_id)
                for peer in by_collection.get(item.collection, ()):
                    selection = selections.get(peer, {}).get(item.collection)
                    if selection is not None:
                        before, after = fields.get(record, (None, {}))
                        if not selection.keeps(item.record_id, after):
                            if before is not None and selection.keeps(item.record_id, before):
                                drops.setdefault(peer, {})[record] = None
                            if peer is not write.origin:
                                cursors[peer] = seq
                            continue
                        drops.get(peer, {}).pop(record, None)
                        entered = before is None or not selection.keeps(item.record_id, before)
                        if entered and record in states and peer is not write.origin:
                            # It may have nothing of the record: the whole state.
                            late.setdefault(peer, []).append(
                                (item.collection, item.record_id, merge(states[record]))
                            )
                            cursors[peer] = seq
                            continue
                    if peer is write.origin:
                        continue
                    if (peer, item.collection) not in early:
                        late.setdefault(peer, []).append(
                            (item.collection, item.record_id, item.update)
                        )
                    cursors[peer] = seq
        for peer, keys in drops.items():
            if keys:
                peer.dropped(list(keys))  # type: ignore[attr-defined]
        for peer, cursor in cursors.items():
            peer.deliver(late.get(peer, []), cursor)
        now = self.clock() if room_fields else None
        for key, room_updates in to_rooms.items():
            # To every Yjs connection of the record, the sender included: the updates of one
            # group commit as one Update message (merged in bounded chunks); a member whose
            # access the record left gets none.
            readable = None
            if key in room_fields and now is not None:
                after = room_fields[key]

                def readable(scope: Filter, after: IndexedFields = after) -> bool:
                    assert now is not None
                    return matches(resolve(scope, now=now), after)

            for start in range(0, len(room_updates), _MERGE_CHUNK):
                chunk = room_updates[start : start + _MERGE_CHUNK]
                merged = chunk[0] if len(chunk) == 1 else merge_updates(*chunk)
                self.rooms.deliver_update(key, merged, readable)
