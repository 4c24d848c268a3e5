"""Awareness (presence) bookkeeping for one relay room: pure, never persisted.

The awareness update encoding (``y-protocols/awareness.js``)::

    update = varUint(n) • n times (varUint(clientID) • varUint(clock) • varString(JSON state))

A ``null`` state means the client left. A relay room keeps, like the reference server's
``Awareness`` instance, each client's latest clock and state, applies an entry only when it is
newer (a higher clock, or the same clock with ``null`` for a client that still has a state),
remembers which connection announced which client ids, and drops states that were not renewed
within :data:`OUTDATED_TIMEOUT` seconds (clients renew theirs every 15 s).

:class:`AwarenessRoom` returns the awareness update to broadcast for each change; the driver
sends it (wrapped in a y-websocket or Hocuspocus frame) to every connection of the room,
including the sender, as the reference server does. Time comes in as ``now`` arguments
(any monotonic float, seconds).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import InvalidMessage
from .lib0 import Reader, write_var_string, write_var_uint

__all__ = [
    "OUTDATED_TIMEOUT",
    "AwarenessEntry",
    "AwarenessRoom",
    "decode_awareness_update",
    "encode_awareness_update",
]

#: Seconds after which a state that was not renewed is dropped (y-protocols ``outdatedTimeout``).
OUTDATED_TIMEOUT = 30.0

_NULL = "null"

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness: ``state`` is its JSON text, ``None`` when the client left."""

    client_id: int
    clock: int
    state: str | None


def decode_awareness_update(data: bytes) -> list[AwarenessEntry]:
    """Decode an awareness update.

    Raises:
        InvalidMessage: truncated data, or a state that is not JSON text.
    """
    reader = Reader(data)
    count = reader.var_uint()
    entries: list[AwarenessEntry] = []
    for _ in range(count):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        text = reader.var_string()
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidMessage("awareness state is not JSON") from exc
        entries.append(AwarenessEntry(client_id, clock, None if value is None else text))
    return entries


def encode_awareness_update(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode entries as one awareness update (inverse of :func:`decode_awareness_update`)."""
    items = list(entries)
    out = bytearray(write_var_uint(len(items)))
    for entry in items:
        out += write_var_uint(entry.client_id) + write_var_uint(entry.clock)
        out += write_var_string(_NULL if entry.state is None else entry.state)
    return bytes(out)


class AwarenessRoom(Generic[C]):
    """The awareness states of one room (one record), keyed by client id.

    ``C`` is whatever identifies a connection for the driver (any hashable).
    """

    __slots__ = ("_clocks", "_owners", "_states", "_updated")

    def __init__(self) -> None:
        self._clocks: dict[int, int] = {}
        self._states: dict[int, str] = {}
        self._updated: dict[int, float] = {}
        self._owners: dict[C, set[int]] = {}

    @property
    def states(self) -> dict[int, str]:
        """Client id -> JSON state of every client present (a copy)."""
        return dict(self._states)

    def clients_of(self, connection: C) -> frozenset[int]:
        """The client ids ``connection`` announced and that are still present."""
        return frozenset(self._owners.get(connection, ()))

    def apply(self, connection: C, update: bytes, now: float) -> bytes | None:
        """Apply an awareness update received from ``connection``.

        Returns:
            The update to broadcast to every connection of the room (the entries that
            changed something, renewals included), or ``None`` if nothing applied.

        Raises:
            InvalidMessage: ``update`` does not decode (nothing is applied then).
        """
        applied: list[AwarenessEntry] = []
        for entry in decode_awareness_update(update):
            client = entry.client_id
            current = self._clocks.get(client, 0)
            present = client in self._states
            newer = current < entry.clock
            if not (newer or (current == entry.clock and entry.state is None and present)):
                continue
            self._clocks[client] = entry.clock
            for clients in self._owners.values():
                clients.discard(client)
            if entry.state is None:
                if not present:
                    continue
                del self._states[client]
                self._updated.pop(client, None)
            else:
                # The latest connection to announce a client owns it (a reconnect may
                # announce it again before the old socket is noticed closed).
                self._states[client] = entry.state
                self._updated[client] = now
                self._owners.setdefault(connection, set()).add(client)
            applied.append(entry)
        if not applied:
            return None
        return encode_awareness_update(applied)

    def full_update(self) -> bytes | None:
        """Every present state as one update (for query-awareness and newly joined
        connections), or ``None`` when nobody is present."""
        if not self._states:
            return None
        return encode_awareness_update(
            AwarenessEntry(client, self._clocks[client], state)
            for client, state in self._states.items()
        )

    def remove_connection(self, connection: C) -> bytes | None:
        """Forget ``connection``; remove the states it announced.

        Returns:
            The removal update to broadcast to the remaining connections (each state set to
            ``null`` with its clock + 1), or ``None`` if it announced nothing still present.
        """
        owned = self._owners.pop(connection, set())
        return self._remove(owned)

    def expire(self, now: float) -> bytes | None:
        """Remove states not renewed within :data:`OUTDATED_TIMEOUT` before ``now``.

        Returns:
            The removal update to broadcast, or ``None`` if nothing expired.
        """
        stale = [c for c, at in self._updated.items() if now - at >= OUTDATED_TIMEOUT]
        return self._remove(stale)

    def _remove(self, clients: Iterable[int]) -> bytes | None:
        removed: list[AwarenessEntry] = []
        for client in sorted(clients):
            if client not in self._states:
                continue
            del self._states[client]
            self._updated.pop(client, None)
            clock = self._clocks[client] + 1
            self._clocks[client] = clock
            for owned in self._owners.values():
                owned.discard(client)
            removed.append(AwarenessEntry(client, clock, None))
        if not removed:
            return None
        return encode_awareness_update(removed)

    def __len__(self) -> int:
        return len(self._states)
