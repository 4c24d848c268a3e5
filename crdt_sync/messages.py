"""The messages of the crdt-sync wire protocol, version 1, as plain values.

Each websocket message carries exactly one of these, encoded by :mod:`crdt_sync.codec` as a
msgpack map whose key ``"t"`` names the type (``docs/protocol.md`` lists every field). The
classes here only hold data: they neither encode nor validate (the codec validates what it
decodes; the protocol cores build only well-typed messages).

Batched messages carry tuples of small named tuples (:class:`PushItem`, :class:`RecordKey`,
:class:`StateVectorItem`, :class:`UpdateItem`, :class:`RejectItem`). Being tuples, they unpack
like the ``[seq, collection, record_id, update]`` arrays on the wire, and a caller may pass
plain tuples wherever the protocol cores take items.

Update and state-vector payloads are opaque bytes (Yjs v1 updates and state vectors); record
keys are ``(collection, record_id)`` strings everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .subscriptions import Subscription

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Changed",
    "ClientMessage",
    "Dropped",
    "Error",
    "Hello",
    "Limits",
    "Message",
    "Ping",
    "Pong",
    "Push",
    "PushItem",
    "RecordKey",
    "Reject",
    "RejectItem",
    "Removed",
    "RemovedItem",
    "ServerMessage",
    "StateVectorItem",
    "StateVectors",
    "Subscribe",
    "Synced",
    "UpdateItem",
    "Updates",
    "Welcome",
]

#: The protocol version this package speaks (``v`` in ``hello`` and ``welcome``).
PROTOCOL_VERSION = 1


# -- items of batched messages ------------------------------------------------------------


class PushItem(NamedTuple):
    """One outbox entry in a ``push``: ``[seq, collection, record_id, update]``."""

    seq: int
    collection: str
    record_id: str
    update: bytes


class RejectItem(NamedTuple):
    """One refused outbox entry in a ``reject``: ``[seq, code, reason]``."""

    seq: int
    code: str
    reason: str


class RecordKey(NamedTuple):
    """One record named in a ``changed``: ``[collection, record_id]``."""

    collection: str
    record_id: str


class StateVectorItem(NamedTuple):
    """One record's state vector in an ``sv``: ``[collection, record_id, state_vector]``.

    ``state_vector`` is a Yjs v1 encoded state vector; ``b"\\x00"`` (the empty state vector)
    means "I have nothing of this record".
    """

    collection: str
    record_id: str
    state_vector: bytes


class UpdateItem(NamedTuple):
    """One record's update in an ``updates``: ``[collection, record_id, update]``."""

    collection: str
    record_id: str
    update: bytes


class RemovedItem(NamedTuple):
    """One purged record in a ``removed``: ``[collection, record_id, tombstone]``.

    ``tombstone`` is the key of the record's tombstone (``"<ms>.<counter>.<replica>"``: when
    it was deleted and by whom, docs/records.md).
    """

    collection: str
    record_id: str
    tombstone: str


# -- client -> server ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """``hello``: the client's first frame, exactly once. Carries the auth token."""

    token: str
    replica: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Push:
    """``push``: outbox entries, in increasing ``seq`` order."""

    items: tuple[PushItem, ...]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``sub``: live changes of ``collections`` from now on, and catch-up since ``cursor``.

    ``cursor`` is the last ``synced`` cursor the replica persisted, or ``None`` if it never
    synced (catch-up then lists every record of those collections).

    ``subscriptions`` (optional) narrow what the replica keeps of those collections (ids,
    queries, rolling windows; a listed collection without one is kept whole); ``since`` is the
    ``at`` of the ``synced`` that gave ``cursor`` (the relay's clock, Unix milliseconds), so
    the relay can tell which records left a rolling window since.
    """

    collections: tuple[str, ...]
    cursor: int | None
    subscriptions: tuple[Subscription, ...] | None = None
    since: int | None = None


@dataclass(frozen=True, slots=True)
class StateVectors:
    """``sv``: "send me what I miss of these records" (a batched Yjs SyncStep1).

    ``done`` is true on the frame that answers the last ``changed`` frame of a catch-up
    (the one with ``done`` true): the relay answers it with ``updates`` then ``synced``.
    """

    items: tuple[StateVectorItem, ...]
    done: bool = False


# -- either direction ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """``ping``: the receiver answers ``pong`` with the same ``id``."""

    id: int


@dataclass(frozen=True, slots=True)
class Pong:
    """``pong``: the answer to the ``ping`` with the same ``id``."""

    id: int


@dataclass(frozen=True, slots=True)
class Error:
    """``error``: a stable ``code``, a human ``reason``; ``fatal`` ones end the connection."""

    code: str
    reason: str
    fatal: bool


# -- server -> client ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """The relay's limits on what a client sends, announced in ``welcome``."""

    max_frame: int
    max_items: int


@dataclass(frozen=True, slots=True)
class Welcome:
    """``welcome``: the handshake succeeded; the grant (tenant, collections) and limits.

    ``cache_max_age``: the longest the replica may keep its offline cache after its last
    completed sync, in seconds, as the relay's admin set it for the tenant; None (an older
    relay, or none set): no expiry. Optional on the wire (absent when None).
    """

    tenant: str
    collections: tuple[str, ...]
    limits: Limits
    version: int = PROTOCOL_VERSION
    cache_max_age: float | None = None
    #: Per collection, the grant's record filter in its wire form (``crdt_sync.query``):
    #: the replica receives and may write only records matching it. Empty: none.
    scopes: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """``ack``: these pushed entries are durably stored (sent only after commit)."""

    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Reject:
    """``reject``: these pushed entries were refused; the rest of the push is unaffected."""

    items: tuple[RejectItem, ...]


@dataclass(frozen=True, slots=True)
class Changed:
    """``changed``: catch-up listing of records changed by others since the ``sub`` cursor.

    A listing may span several frames; ``done`` is true on the last one. ``cursor`` is the
    relay's change sequence the catch-up runs up to.
    """

    items: tuple[RecordKey, ...]
    cursor: int
    done: bool


@dataclass(frozen=True, slots=True)
class Updates:
    """``updates``: diffs answering ``sv`` (``cursor`` None) or live updates made by others.

    For live updates, ``cursor`` is the relay's change sequence of the newest change included.
    """

    items: tuple[UpdateItem, ...]
    cursor: int | None


@dataclass(frozen=True, slots=True)
class Removed:
    """``removed``: these records were deleted and their tombstones purged: the relay has
    nothing of them anymore and refuses their updates. The replica removes them (settling
    its pending changes of them). ``cursor`` is None (catch-up, or a live purge)."""

    items: tuple[RemovedItem, ...]
    cursor: int | None


@dataclass(frozen=True, slots=True)
class Synced:
    """``synced``: catch-up complete up to ``cursor``; the client persists it.

    ``at`` (Unix milliseconds, the relay's clock) is when the relay evaluated the
    subscriptions of this catch-up; the client sends it back as ``since`` with the cursor.
    """

    cursor: int
    at: int | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    """``drop``: these records left what the replica keeps (a field changed, a rolling window
    moved, the grant excludes them): remove them, except those with unsynced local changes,
    which go once the relay acknowledged those."""

    items: tuple[RecordKey, ...]


ClientMessage = Hello | Push | Subscribe | StateVectors | Ping | Pong | Error
"""Messages a client sends (``Ping``, ``Pong`` and ``Error`` go both ways)."""

ServerMessage = (
    Welcome | Ack | Reject | Changed | Updates | Removed | Synced | Dropped | Ping | Pong | Error
)
"""Messages a relay sends."""

Message = (
    Hello
    | Push
    | Subscribe
    | StateVectors
    | Ping
    | Pong
    | Error
    | Welcome
    | Ack
    | Reject
    | Changed
    | Updates
    | Removed
    | Synced
    | Dropped
)
"""Any protocol message."""
