"""The gateway: what every endpoint does with a token and with an update, done once.

Theory of operation
===================

The native, y-websocket and Hocuspocus endpoints speak different protocols, but a token and an
update mean the same to all of them:

- :meth:`Gateway.verify_token` runs the verifier (``--verifier``, or HMAC tokens) and turns
  any failure into :class:`~crdt_sync.errors.AuthError` ``bad_token`` / ``token_expired``.
- :meth:`Gateway.admit` decides, update by update, in order (docs/relay.md, "Validation
  hook" and "Dependencies first"):

  1. the update decodes as a Yjs v1 update whose structs the relay can read, else
     ``invalid_update``;
  2. it depends only on clocks the relay has: the record's committed state, the updates
     accepted and not yet committed, and the updates admitted before it in the same call
     (:class:`~crdt_sync.server.record_clocks.RecordClocks`), else ``blocked``;
  3. the token's record-level access allows it (:mod:`crdt_sync.server.record_access`): the
     record is inside the grant's filter and stays inside it, else ``forbidden``;
  4. the validation hook (``--validator``) accepts it, given the record's committed state,
     else ``rejected`` (any other exception from the hook also rejects, logged).

  Before all of these, an update of a record whose tombstone was purged is refused with
  ``deleted`` (docs/relay.md, "Deletion and purge"): the relay has nothing of the record
  anymore, and a deleted record is never revived. :class:`Admission` lists such records
  (``removed``) so that the native endpoint tells the replica before it rejects.

  Refusals are counted (``crdt_sync_rejects_total{code}``). An accepted update counts as the
  relay's from then on (later updates may build on it), so it must be submitted right away.
- :meth:`Gateway.submit` hands the accepted updates to the storage's group commit and, once
  it committed, settles their clocks, counts them, calls the endpoint back (to acknowledge)
  and gives them to :class:`~crdt_sync.server.fanout.Fanout` with their change seqs. With
  ``early`` they go to the fan-out at once too, before the commit.
- :meth:`Gateway.submit_update` does both, admit then submit, for one update from a Yjs
  endpoint, with the refusal as an exception and the commit as a future.
- :func:`missing_from` answers a state vector from a committed state (every endpoint's catch-up).

:class:`InFlight` counts the work a graceful shutdown waits for; the gateway counts each write
from its submission until its commit callback ran.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pycrdt import get_state, get_update

from crdt_sync.errors import AuthError, InvalidMessage, InvalidState, UpdateForbidden
from crdt_sync.messages import PushItem, RejectItem, RemovedItem
from crdt_sync.query import Filter
from crdt_sync.yjs.updates import EMPTY_STATE_VECTOR, UpdateClocks, read_update_clocks

from .fanout import Fanout, Write
from .metrics import RelayMetrics
from .record_access import readable, resolved_scope, write_refusal
from .record_clocks import RecordClocks
from .record_fields import indexed_fields
from .relay_clock import system_clock
from .storage import IndexedFields, RecordKey, RelayStorage
from .tokens import Grant, Verifier
from .validation import UpdateBlocked, UpdateRejected, Validator

log = logging.getLogger(__name__)

CommitCallback = Callable[["asyncio.Future[list[int]]"], None]
"""Called with the storage's future once a submitted write's commit completed (or failed)."""


class InFlight:
    """Work a graceful shutdown waits for: frames being handled, writes waiting for their
    commit, acknowledgements not yet queued."""

    __slots__ = ("_count", "_idle")

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return self._count

    def enter(self) -> None:
        """One more piece of work; pair it with :meth:`leave`."""
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
        """One piece of work done."""
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Wait until no work is in flight."""
        await self._idle.wait()


@dataclass(slots=True)
class Admission:
    """What :meth:`Gateway.admit` decided about some updates of one tenant.

    Attributes:
        tenant: whose records they are.
        accepted: the accepted updates, in order, with their clocks (they count as the
            relay's until :meth:`Gateway.submit` settles them).
        refused: ``(seq, code, reason)`` of the refused ones, in seq order.
        removed: the purged records the refused ``deleted`` updates were for.
    """

    tenant: str
    accepted: list[tuple[PushItem, UpdateClocks]] = field(default_factory=list)
    refused: list[RejectItem] = field(default_factory=list)
    removed: list[RemovedItem] = field(default_factory=list)


class Gateway:
    """Token checks, update admission and submission for every endpoint (see the module
    docstring).

    Args:
        storage: where accepted updates are committed and committed states are read.
        fanout: where committed (and early) updates go.
        metrics: counts refusals and stored updates.
        inflight: counts the writes waiting for their commit.
        verifier: the token check.
        validator: the optional validation hook.
        clock: the relay's clock (rolling windows in grants).
    """

    def __init__(
        self,
        storage: RelayStorage,
        fanout: Fanout,
        metrics: RelayMetrics,
        inflight: InFlight,
        *,
        verifier: Verifier,
        validator: Validator | None,
        clock: Callable[[], dt.datetime] = system_clock,
    ) -> None:
        self.clock = clock
        self.storage = storage
        self.fanout = fanout
        self.metrics = metrics
        self.verifier = verifier
        self.validator = validator
        self._inflight = inflight
        # What the relay has of each record, for the dependency check (``blocked``).
        self._clocks = RecordClocks()
        self._closing = False

    def close(self) -> None:
        """The relay is shutting down: :meth:`submit_update` refuses from now on."""
        self._closing = True

    # -- tokens ------------------------------------------------------------------------------

    async def verify_token(self, token: str) -> Grant:
        """Run the verifier on ``token``.

        Raises:
            AuthError: code ``bad_token`` or ``token_expired``; a verifier failing with any
                other exception counts as ``bad_token`` (logged).
        """
        try:
            result: Grant | Awaitable[Grant] = self.verifier(token)
            grant = await result if inspect.isawaitable(result) else result
            if not isinstance(grant, Grant):
                raise TypeError(f"verifier returned {type(grant).__name__}, not Grant")
        except AuthError as exc:
            code = exc.code if exc.code in ("bad_token", "token_expired") else "bad_token"
            raise AuthError(code, exc.reason or code) from exc
        except Exception as exc:
            log.exception("token verifier failed")
            raise AuthError("bad_token", "token could not be verified") from exc
        return grant

    # -- reads -------------------------------------------------------------------------------

    async def purged(self, tenant: str, collection: str, record_id: str) -> str | None:
        """The record's tombstone if it was deleted and purged, else ``None``."""
        found = await self.storage.purged(tenant, [(collection, record_id)])
        return found.get((collection, record_id))

    def forget_purged(self, keys: Sequence[tuple[str, str, str]]) -> None:
        """These ``(tenant, collection, record_id)`` records were purged: forget their clocks
        (an update of them is refused from now on, before its clocks are looked at)."""
        self._clocks.forget(keys)

    async def record_state(self, tenant: str, collection: str, record_id: str) -> bytes | None:
        """The record's committed state (a Yjs v1 update), or ``None`` if it has none."""
        states = await self.storage.get_states(tenant, [(collection, record_id)])
        return states.get((collection, record_id))

    async def readable(self, grant: Grant, collection: str, record_id: str) -> bool:
        """Whether ``grant``'s record-level access lets it read the record (a record that
        does not exist yet is readable: writing it is checked on its own)."""
        scope = resolved_scope(grant, collection, self.clock())
        if scope is None:
            return True
        found = await self.storage.fields(grant.tenant, [(collection, record_id)])
        return readable(scope, found.get((collection, record_id)))

    # -- admission ---------------------------------------------------------------------------

    async def admit(self, grant: Grant, items: Sequence[PushItem]) -> Admission:
        """Decide which of ``items`` (inside ``grant``'s collections) the relay takes.

        Give the accepted ones to :meth:`submit` right away, without awaiting anything in
        between: later updates may already build on them.
        """
        tenant = grant.tenant
        admission = Admission(tenant)
        refused: list[tuple[int, str, str]] = []
        readable: list[tuple[PushItem, UpdateClocks]] = []
        purged = await self.storage.purged(tenant, [(i.collection, i.record_id) for i in items])
        for key, tombstone in purged.items():
            admission.removed.append(RemovedItem(*key, tombstone))
        for item in items:
            gone = purged.get((item.collection, item.record_id))
            if gone is not None:
                refused.append((item.seq, DELETED, deleted_reason(item, gone)))
                continue
            try:
                readable.append((item, _read_clocks(item.update)))
            except UpdateRejected as exc:
                refused.append((item.seq, "invalid_update", exc.reason))
        now = self.clock()
        scopes = {
            c: scope
            for c in {item.collection for item, _ in readable}
            if (scope := resolved_scope(grant, c, now)) is not None
        }
        scoped = [(i.collection, i.record_id) for i, _ in readable if i.collection in scopes]
        states, vectors = await self._states_and_vectors(
            tenant,
            [(item.collection, item.record_id, clocks) for item, clocks in readable],
            also=scoped,
        )
        before = await self.storage.fields(tenant, scoped) if scoped else {}
        admitted: dict[RecordKey, list[bytes]] = {}  # this call's accepted updates per record
        for item, clocks in readable:
            key = (item.collection, item.record_id)
            vector = vectors.get(key, {})
            refusal = _blocked(clocks, vector)
            if refusal is None and item.collection in scopes:
                refusal = self._access_refusal(
                    scopes[item.collection], key, item.update, states, before, admitted
                )
            if refusal is None and self.validator is not None:
                refusal = await self._validate(grant, item, states.get(key))
            if refusal is not None:
                refused.append((item.seq, refusal.code, refusal.reason))
                continue
            self._clocks.accept((tenant, *key), clocks)
            clocks.extend(vector)  # the later entries of the push may build on this one
            admission.accepted.append((item, clocks))
            if item.collection in scopes:
                admitted.setdefault(key, []).append(item.update)
        refused.sort()
        for _, code, _ in refused:
            self.metrics.rejects.labels(code).inc()
        admission.refused = [RejectItem(*r) for r in refused]
        return admission

    def _access_refusal(
        self,
        scope: Filter,
        key: RecordKey,
        update: bytes,
        states: dict[RecordKey, bytes],
        before: dict[RecordKey, IndexedFields],
        admitted: dict[RecordKey, list[bytes]],
    ) -> UpdateForbidden | None:
        """The refusal of an update under a record-level scope (see record_access)."""
        state = states.get(key)
        earlier = admitted.get(key, [])
        current: IndexedFields | None = before.get(key)
        if earlier:
            so_far = indexed_fields([*([state] if state else []), *earlier])
            if so_far is not None:
                current = so_far
        # A deleted record keeps the fields it had (server/record_fields.py): a deletion, or a
        # write that loses to one, is judged on the record as it was.
        after = indexed_fields([*([state] if state else []), *earlier, update])
        if after is None:
            after = current if current is not None else {}
        reason = write_refusal(scope, current, after)
        return None if reason is None else UpdateForbidden(reason)

    async def _states_and_vectors(
        self,
        tenant: str,
        updates: Sequence[tuple[str, str, UpdateClocks]],
        also: Sequence[RecordKey] = (),
    ) -> tuple[dict[RecordKey, bytes], dict[RecordKey, dict[int, int]]]:
        """What checking ``(collection, record_id, clocks)`` updates takes: the committed states
        of their records if there is a validator (and of the records in ``also``), and the
        state vectors (:class:`RecordClocks`) of the records of the updates that need clocks
        they do not carry themselves."""
        vectors: dict[RecordKey, dict[int, int]] = {}
        load: dict[RecordKey, tuple[UpdateClocks, ...]] = {}
        for collection, record_id, clocks in updates:
            key = (collection, record_id)
            if key in vectors or key in load or clocks.missing({}) is None:
                continue
            vector = self._clocks.get((tenant, *key))
            if vector is None:  # loaded from the state, with what is committed meanwhile
                load[key] = self._clocks.uncommitted((tenant, *key))
            else:
                vectors[key] = vector
        wanted = list(dict.fromkeys([*load, *also]))
        if self.validator is not None:
            wanted = list(dict.fromkeys([(c, r) for c, r, _ in updates]))
        states = await self.storage.get_states(tenant, wanted) if wanted else {}
        for key, before in load.items():
            vectors[key] = self._clocks.load((tenant, *key), states.get(key), before)
        return states, vectors

    async def _validate(
        self, grant: Grant, item: PushItem, state: bytes | None
    ) -> UpdateRejected | None:
        """The validator's refusal of an update (``state``: the record's committed state)."""
        assert self.validator is not None
        try:
            outcome = self.validator(item.collection, item.record_id, item.update, state, grant)
            if inspect.isawaitable(outcome):
                await outcome
        except UpdateRejected as exc:
            return exc
        except Exception:
            log.exception("validator failed on %s/%s", item.collection, item.record_id)
            return UpdateRejected("validation failed")
        return None

    # -- submission --------------------------------------------------------------------------

    def submit(
        self,
        admission: Admission,
        replica: str,
        origin: object,
        *,
        early: bool,
        on_commit: CommitCallback,
    ) -> None:
        """Submit the accepted updates of ``admission`` (there must be some) to the group
        commit.

        Once the commit completed: their clocks are settled, then, if it succeeded, they are
        counted, ``on_commit(done)`` runs and the fan-out of :meth:`Fanout.committed` is
        queued; if it failed, ``on_commit(done)`` runs (``done`` holds the error) and nothing
        goes out at commit time.

        Args:
            admission: from :meth:`admit`, with nothing awaited since.
            replica: the sender's replica id (the storage's origin of the changes).
            origin: the sender (never a subscriber of its own updates).
            early: also queue the updates for their early copies (:meth:`Fanout.early`).
            on_commit: the sender's acknowledgement.

        Raises:
            InvalidState: the storage is closing: nothing is stored or sent, and the clocks
                of the updates no longer count as the relay's.
        """
        tenant, accepted = admission.tenant, admission.accepted
        write = Write(tenant, origin, [item for item, _ in accepted])
        # Queued before the write wakes the storage writer: the early copies go out first.
        if early:
            self.fanout.early(write)
        rows = [(i.collection, i.record_id, i.update) for i in write.items]
        try:
            stored = self.storage.submit(tenant, replica, rows)
        except InvalidState:
            self._settle(admission, None)
            self.fanout.withdraw(write)
            raise
        self._inflight.enter()

        def committed(done: asyncio.Future[list[int]]) -> None:
            try:
                self._settle(admission, done)
                ok = not done.cancelled() and done.exception() is None
                if ok:
                    self.metrics.updates_applied.inc(len(write.items))
                else:
                    # Early copies may be out, but no seq and so no cursor ever covers these
                    # updates; their sender gets no ack and re-sends them.
                    error = None if done.cancelled() else done.exception()
                    log.error("commit failed for replica %r: %s", replica, error)
                on_commit(done)
                if ok:
                    self.fanout.committed(write, done.result())
            finally:
                self._inflight.leave()

        stored.add_done_callback(committed)

    def _settle(self, admission: Admission, done: asyncio.Future[list[int]] | None) -> None:
        """The commit of admitted updates completed (``done``), or they were not submitted."""
        stored = done is not None and not done.cancelled() and done.exception() is None
        tenant = admission.tenant
        for item, clocks in admission.accepted:
            self._clocks.settled((tenant, item.collection, item.record_id), clocks, stored=stored)

    async def submit_update(
        self,
        grant: Grant,
        replica: str,
        origin: object,
        collection: str,
        record_id: str,
        update: bytes,
    ) -> asyncio.Future[int]:
        """Admit one update from a Yjs endpoint and submit it to the group commit.

        The caller checked ``grant.allows(collection)``. Returns a future that completes with
        the commit's sequence number once the update is durable (its fan-out to native
        subscribers and Yjs rooms is then queued), or fails if the commit failed.

        Raises:
            UpdateRejected: not a Yjs v1 update, or refused by the validation hook;
                :class:`UpdateBlocked` if it depends on updates the relay does not have.
            InvalidState: the relay is shutting down (nothing stored).
        """
        if self._closing:
            raise InvalidState("the relay is shutting down")
        admission = await self.admit(grant, [PushItem(0, collection, record_id, update)])
        if admission.refused:
            _, code, reason = admission.refused[0]
            if code == UpdateBlocked.code:
                raise UpdateBlocked(reason)
            if code == UpdateForbidden.code:
                raise UpdateForbidden(reason)
            raise UpdateRejected(reason)
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def committed(done: asyncio.Future[list[int]]) -> None:
            if done.cancelled():
                result.cancel()
            elif (error := done.exception()) is not None:
                result.set_exception(error)
            else:
                result.set_result(done.result()[0])

        self.submit(admission, replica, origin, early=False, on_commit=committed)
        return result


#: The reject code of an update of a record whose tombstone was purged.
DELETED = "deleted"


def deleted_reason(item: PushItem | tuple[str, str], tombstone: str) -> str:
    """Why an update of a purged record is refused (the reason of a ``deleted`` reject)."""
    collection, record_id = (
        (item.collection, item.record_id) if isinstance(item, PushItem) else item
    )
    return (
        f"deleted: record {record_id!r} of collection {collection!r} was deleted "
        f"(tombstone {tombstone}) and purged; it can no longer be written"
    )


def missing_from(state: bytes, state_vector: bytes) -> bytes:
    """What a peer whose state vector is ``state_vector`` lacks of ``state`` (a Yjs v1
    update), computed at byte level; an unreadable state vector gets the whole state."""
    try:
        return get_update(state, state_vector or EMPTY_STATE_VECTOR)
    except ValueError:
        return state


def _read_clocks(update: bytes) -> UpdateClocks:
    """What an update carries and needs.

    Raises:
        UpdateRejected: not a Yjs v1 update (pycrdt cannot decode it), or one whose structs
            the relay cannot read (content types beyond Yjs', such as Yrs' move extension).
    """
    try:
        get_state(update)
    except ValueError:
        raise UpdateRejected("not a Yjs v1 update") from None
    try:
        return read_update_clocks(update)
    except InvalidMessage as exc:
        raise UpdateRejected(f"a Yjs v1 update the relay cannot read: {exc}") from None


def _blocked(clocks: UpdateClocks, vector: dict[int, int]) -> UpdateRejected | None:
    """The refusal of an update that needs clocks the relay does not have (``vector``: what it
    has of the record, see :class:`~crdt_sync.server.record_clocks.RecordClocks`)."""
    gap = clocks.missing(vector)
    if gap is None:
        return None
    return UpdateBlocked(
        "an earlier update of this record was refused or has not reached the relay: this one "
        f"builds on it and waits for it (clocks {gap.have}..{gap.needed - 1} of Yjs client "
        f"{gap.client} are missing)"
    )
