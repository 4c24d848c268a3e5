"""Which Yjs connections (y-websocket and Hocuspocus) have which record open, and their presence.

A *room* is one record, keyed ``(tenant, collection, record_id)``. Its *members* are the
y-websocket connections and Hocuspocus (socket, document) pairs that opened it. The relay
delivers every committed update of a record to all of its members, the sender included (the
reference servers echo, and y-websocket v4 derives its "synced" status from that echo), and
relays awareness between members. Awareness lives here only, never in storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from crdt_sync.query import Filter
from crdt_sync.yjs.awareness import AwarenessRoom

RoomKey = tuple[str, str, str]
"""``(tenant, collection, record_id)``."""

#: How often the relay drops awareness states that were not renewed (:meth:`YjsRooms.
#: expire_awareness`).
AWARENESS_CHECK_INTERVAL = 3.0


class RoomMember(Protocol):
    """One open record on a Yjs connection. Both methods queue and never wait."""

    def __hash__(self) -> int: ...

    def deliver_update(self, update: bytes) -> None:
        """Send a committed update of the record (a y-protocols Update message)."""

    def deliver_awareness(self, update: bytes) -> None:
        """Send an awareness update of the record."""

    def deliver_removed(self, reason: str) -> None:
        """The record was deleted and purged: refuse it to the client (``reason`` says so)
        and leave the room."""


@dataclass(eq=False, slots=True)
class _Room:
    members: set[RoomMember] = field(default_factory=set)
    # members whose grant restricts the record (record-level access): their scope filter
    scopes: dict[RoomMember, Filter] = field(default_factory=dict)
    awareness: AwarenessRoom[RoomMember] = field(default_factory=lambda: AwarenessRoom())


class YjsRooms:
    """The rooms of one relay (see the module docstring)."""

    __slots__ = ("_rooms", "_tenants")

    def __init__(self) -> None:
        self._rooms: dict[RoomKey, _Room] = {}
        self._tenants: dict[str, int] = {}

    def has_tenant(self, tenant: str) -> bool:
        """Whether any record of ``tenant`` is open on a Yjs connection."""
        return tenant in self._tenants

    def members(self, key: RoomKey) -> frozenset[RoomMember]:
        """The members of ``key`` (empty if nobody has it open)."""
        room = self._rooms.get(key)
        return frozenset(room.members) if room else frozenset()

    def join(self, key: RoomKey, member: RoomMember, scope: Filter | None = None) -> None:
        """Add ``member`` to the room of ``key`` (it receives updates from now on).

        ``scope``: the member's record-level access to the record (its grant's filter, claims
        bound); once the record's fields leave it, the member gets no more of its updates.
        """
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room()
            self._tenants[key[0]] = self._tenants.get(key[0], 0) + 1
        room.members.add(member)
        if scope is not None:
            room.scopes[member] = scope

    def leave(self, key: RoomKey, member: RoomMember) -> None:
        """Remove ``member``; broadcast the removal of the awareness states it announced."""
        room = self._rooms.get(key)
        if room is None or member not in room.members:
            return
        room.members.discard(member)
        room.scopes.pop(member, None)
        removal = room.awareness.remove_connection(member)
        if removal is not None:
            for other in room.members:
                other.deliver_awareness(removal)
        if not room.members:
            del self._rooms[key]
            count = self._tenants[key[0]] - 1
            if count:
                self._tenants[key[0]] = count
            else:
                del self._tenants[key[0]]

    def deliver_update(
        self,
        key: RoomKey,
        update: bytes,
        readable: Callable[[Filter], bool] | None = None,
    ) -> None:
        """Send a committed update to every member of ``key``, the sender included; with
        ``readable``, a member with a scope gets it only if ``readable(scope)``."""
        room = self._rooms.get(key)
        if room is None:
            return
        for member in list(room.members):
            scope = room.scopes.get(member)
            if scope is not None and readable is not None and not readable(scope):
                continue
            member.deliver_update(update)

    def remove_record(self, key: RoomKey, reason: str) -> None:
        """The record was purged: every member is refused it (and leaves)."""
        room = self._rooms.get(key)
        if room is None:
            return
        for member in list(room.members):
            member.deliver_removed(reason)

    def apply_awareness(self, key: RoomKey, member: RoomMember, update: bytes, now: float) -> None:
        """Apply an awareness update from ``member`` and broadcast what changed to every member
        (the sender included, as the reference server does: it keeps idle clients alive).

        Raises:
            crdt_sync.errors.InvalidMessage: ``update`` does not decode.
        """
        room = self._rooms.get(key)
        if room is None or member not in room.members:
            return
        changed = room.awareness.apply(member, update, now)
        if changed is not None:
            for other in list(room.members):
                other.deliver_awareness(changed)

    def full_awareness(self, key: RoomKey) -> bytes | None:
        """Every awareness state present in ``key`` as one update, or ``None``."""
        room = self._rooms.get(key)
        return room.awareness.full_update() if room else None

    def expire_awareness(self, now: float) -> None:
        """Drop awareness states not renewed in time and broadcast their removal."""
        for room in list(self._rooms.values()):
            removal = room.awareness.expire(now)
            if removal is not None:
                for member in list(room.members):
                    member.deliver_awareness(removal)
