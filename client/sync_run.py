"""One connection's exchange with the relay: upload the outbox, then download, then live.

:class:`SyncRun` owns what happens between ``welcome`` and the end of one connection, typed
against what it uses: a :class:`SyncLink` (the :class:`~crdt_sync.client.connection.Connection`),
a :class:`~crdt_sync.client.sync_store.SyncStore` (the replica's
:class:`~crdt_sync.store.sqlite.LocalStore`) and a :class:`SyncOwner` it reports to (on the
replica's side); the in-process tests (``tests/client/test_sync_run.py``) run it over an in-memory
link and store. It handles one item at a time (events from the relay, or a wake-up after a
local edit), so store updates never race each other. Its :class:`SyncPhase` goes from
``HANDSHAKE`` (waiting for ``welcome``) through:

1. **Upload first** (``UPLOAD``). Entries left ``uploading`` by an earlier connection are
   queued again (their acks may have been lost; the relay takes a re-sent update harmlessly).
   Queued entries are pushed in seq order with at most ``window`` entries in flight, as many
   per ``push`` frame as are ready, and marked ``uploading``; each ``ack`` acknowledges entries
   in the store (they leave the outbox), each ``reject`` marks an entry ``error`` (it stays
   until the app resolves or discards it). More entries are pushed as acks free the window.
   Per record, head of line: an entry whose record has an earlier entry in error is *held*,
   not pushed, until that one is resolved or discarded (a later update of a record builds on
   the earlier ones); entries of other records keep flowing. An entry the relay refuses as
   ``blocked`` (it builds on an update the relay does not have) is queued again, not an error,
   and pushed again only after the next listing of the outbox. The store's writes for this
   (``uploading``, acknowledgements) join its group commit without the run waiting for them:
   the group commit keeps them in order, and losing one to a crash only means a harmless
   re-send. New entries come from the outbox's ``on_queued`` events as their edits commit; the
   outbox is listed only when the run starts and after :meth:`SyncRun.relist` (an entry queued
   again by resolve/discard).
2. **Then download** (``DOWNLOAD``), once nothing is queued or in flight: ``sub`` with the
   cursor persisted by the last completed sync; each ``changed`` is answered with the records'
   state vectors from the store; ``updates`` are applied with ``store.apply_remote`` (one
   transaction per frame); ``synced`` persists its cursor (setting :data:`CURSOR_SETTING`) and
   the replica is online. ``removed`` (records deleted and purged on the relay, listed before
   ``changed``) are removed from the store (``store.forget_purged``: pending changes of them
   are logged as lost to the deletion and leave the outbox).
3. **Live** (``LIVE``): updates from others are applied as they come, their cursor (if the
   frame carries one) written in the same transaction; local edits are pushed as soon as they
   are committed. A live update of a record the store evicted from its cache
   (``store.absent()``) holds only the latest change: the whole record is asked for with an
   ``sv`` frame (empty state vector), whose ``updates`` answer is applied as it comes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import Protocol

from crdt_sync.errors import InvalidState, MessageTooBig, OutboxError
from crdt_sync.messages import RejectItem
from crdt_sync.outbox import OutboxEntry, OutboxStatus
from crdt_sync.protocol import (
    Acked,
    ChangedReceived,
    ClientEvent,
    ClientProtocol,
    DroppedReceived,
    ErrorReceived,
    Rejected,
    RemovedReceived,
    State,
    SyncedReceived,
    UpdatesReceived,
    Welcomed,
)
from crdt_sync.subscriptions import Subscription
from crdt_sync.yjs.updates import EMPTY_STATE_VECTOR

from .connection import CLOSED, WAKE, Signal
from .status import Progress
from .sync_store import SyncStore
from .working_set import WorkingSet

__all__ = [
    "CURSOR_SETTING",
    "DEFAULT_WINDOW",
    "SyncLink",
    "SyncOwner",
    "SyncPhase",
    "SyncRun",
]

log = logging.getLogger("crdt_sync.client")

#: Store setting holding the relay cursor of the last completed catch-up (or live update).
CURSOR_SETTING = "sync.cursor"

#: Outbox entries in flight at most (pushed, neither acked nor rejected).
DEFAULT_WINDOW = 256

# Reject code of an entry that builds on an update the relay does not have (not an error).
_BLOCKED = "blocked"
# Reject code of an entry of a record deleted and purged on the relay: settled, not an error.
_DELETED = "deleted"


class SyncPhase(enum.Enum):
    """Where a :class:`SyncRun` stands. It only moves forward, one step at a time."""

    HANDSHAKE = "handshake"
    """``hello`` sent, waiting for ``welcome``."""
    UPLOAD = "upload"
    """Welcomed: pushing the outbox, until nothing is queued or in flight."""
    DOWNLOAD = "download"
    """``sub`` sent: catching up, until ``synced``."""
    LIVE = "live"
    """Caught up: live updates flow both ways."""


class SyncLink(Protocol):
    """What a :class:`SyncRun` uses of its connection
    (:class:`~crdt_sync.client.connection.Connection`, or an in-memory double in tests)."""

    @property
    def protocol(self) -> ClientProtocol:
        """The protocol core the run issues commands to (``hello`` already sent)."""
        ...

    async def next(self) -> ClientEvent | Signal:
        """The next event received, a :data:`WAKE`, or :data:`CLOSED` (then forever)."""
        ...

    def wake(self) -> None:
        """Make :meth:`next` return :data:`WAKE` (coalesced with a pending one)."""
        ...

    async def flush(self) -> None:
        """Send what the protocol core queued, in order."""
        ...

    def abort(self) -> None:
        """Drop the link at once; :meth:`next` then returns :data:`CLOSED`."""
        ...

    @property
    def close_code(self) -> str:
        """Why the link ended (once :meth:`next` returned :data:`CLOSED`)."""
        ...


class SyncOwner(Protocol):
    """What a :class:`SyncRun` reports to (a private object of the
    :class:`~crdt_sync.client.replica.Replica`, which moves its session and status)."""

    def sync_welcomed(self, event: Welcomed) -> None:
        """The relay accepted the handshake: the session is syncing."""

    def sync_completed(self) -> None:
        """Upload and download are done: the session is online."""

    def sync_progress(self, progress: Progress) -> None:
        """Progress of the current sync changed."""

    def outbox_counted(self) -> None:
        """Entries left the outbox or changed status: the outbox's counts are current."""

    def records_changed(self, keys: Sequence[tuple[str, str]]) -> None:
        """Remote updates changed these records in the store."""

    def records_removed(self, keys: Sequence[tuple[str, str]]) -> None:
        """These records, deleted and purged on the relay, left the store."""

    def sync_error(self, code: str, reason: str) -> None:
        """The relay sent an ``error`` (fatal or not)."""


class SyncRun:
    """Runs one connection from ``hello`` to its end. Call :meth:`run` once.

    Args:
        connection: the open connection (``hello`` sent).
        store: the replica's store (a :class:`~crdt_sync.store.sqlite.LocalStore`).
        owner: receives the run's reports.
        collections: the collections to subscribe to; None: every collection granted.
        window: the most outbox entries in flight.
        subscriptions: what the replica keeps (ids, queries); None: whole ``collections``.
    """

    def __init__(
        self,
        connection: SyncLink,
        store: SyncStore,
        owner: SyncOwner,
        collections: Sequence[str] | None,
        window: int = DEFAULT_WINDOW,
        subscriptions: Sequence[Subscription] | None = None,
    ) -> None:
        self.connection = connection
        self.protocol = connection.protocol
        self.store = store
        self.owner = owner
        self.collections = tuple(collections) if collections is not None else None
        self.window = window
        self.phase = SyncPhase.HANDSHAKE
        self.progress = Progress()
        self._sizes: dict[int, int] = {}  # bytes of each outbox entry counted in progress
        # Queued entries not pushed yet, by seq (pushed in seq order). Only errored entries
        # change under us (resolve/discard), and those are not queued, so entries stay valid.
        self._backlog: dict[int, OutboxEntry] = {}
        self._sent: set[int] = set()  # pushed on this connection, neither acked nor rejected
        self._records: dict[int, tuple[str, str]] = {}  # the record of each entry in _sent
        self._acking: set[int] = set()  # acked, the (lazy) acknowledgement not yet committed
        self._relist = True  # list the outbox at the next pump (start, or relist())
        self.working_set = WorkingSet(store, subscriptions, collections, CURSOR_SETTING)
        self._unsubscribe = store.outbox.on_queued(self._queued)

    def _queued(self, entry: OutboxEntry) -> None:
        """A new entry's edit is committed: push it at the next pump."""
        self._backlog[entry.seq] = entry
        self.connection.wake()

    def relist(self) -> None:
        """Entries were queued again (resolve/discard): list the outbox at the next pump."""
        self._relist = True
        self.connection.wake()

    async def run(self) -> str:
        """Handle everything until the connection ends; return why it ended (a close code)."""
        try:
            return await self._run()
        finally:
            self._unsubscribe()

    async def _run(self) -> str:
        while True:
            item = await self.connection.next()
            if item is CLOSED:
                return self.connection.close_code
            if self.protocol.state is not State.OPEN:
                continue  # closing: ignore the rest, wait for the end
            try:
                if item is WAKE:
                    if self.phase is not SyncPhase.HANDSHAKE:
                        await self._pump()
                    self.owner.outbox_counted()  # a new edit counts as pending now
                    await self._maybe_download()
                else:
                    await self._handle(item)
            except InvalidState:
                if self.protocol.state is State.OPEN:
                    raise
                # The connection closed while the store was busy: the rest is moot.

    async def _handle(self, event: object) -> None:
        match event:
            case Welcomed():
                self.working_set.welcomed(event.scopes)
                self.phase = SyncPhase.UPLOAD
                self.owner.sync_welcomed(event)
                # Entries an earlier connection left uploading are queued again (not waited
                # for: they are listed with the queued ones below, in seq order).
                self.store.outbox.requeue_uploading(lazy=True)
                await self._start_upload_progress()
                await self._pump()
                await self._maybe_download()
            case Acked(seqs):
                self._sent.difference_update(seqs)
                for seq in seqs:
                    self._records.pop(seq, None)
                self._acking.update(seqs)
                # Not waited for: in order with later writes; the count moves once committed.
                acked = self.store.outbox.acknowledge(seqs, lazy=True)
                acked.add_done_callback(lambda done: self._ack_written(done, seqs))
                self._uploaded(seqs)
                if self.working_set.may_have_drops:  # after the acknowledgement (in order)
                    self._dropped(await self.working_set.acknowledged())
                await self._settled()
            case Rejected(items):
                self._sent.difference_update(i.seq for i in items)
                records = {i.seq: self._records.pop(i.seq, ("", "")) for i in items}
                refused = [i for i in items if i.code not in (_BLOCKED, _DELETED)]
                blocked = [i for i in items if i.code == _BLOCKED]
                deleted = [i for i in items if i.code == _DELETED]
                if blocked:  # not errors: queued again, pushed after the next listing
                    await self.store.outbox.mark_blocked([(i.seq, i.reason) for i in blocked])
                if deleted:  # the relay sent ``removed`` first; this settles what remains
                    gone = dict.fromkeys(records[i.seq] for i in deleted if records[i.seq][0])
                    await self._forget_purged([(c, r, None) for c, r in gone])
                await self._mark_errors(refused)
                self._uploaded([i.seq for i in refused + deleted])
                await self._settled()
            case ChangedReceived(items, _cursor, done):
                self.working_set.listed(items)
                found = await self.store.state_vectors(
                    [(key.collection, key.record_id) for key in items]
                )
                vectors = [
                    (key.collection, key.record_id, vector or EMPTY_STATE_VECTOR)
                    for key, vector in zip(items, found, strict=True)
                ]
                self.protocol.send_state_vectors(vectors, done=done)
                await self.connection.flush()
                self._advance(records_total=len(items))
            case UpdatesReceived(items, cursor) if not items:
                if cursor is not None and self.phase is SyncPhase.LIVE:  # a cursor alone: no hurry
                    self.store.set_setting_lazily(CURSOR_SETTING, str(cursor))
            case UpdatesReceived(items, cursor) if self.phase is SyncPhase.LIVE:
                # Raised once applied in memory and queued for commit (readers of the records
                # wait for it); the cursor commits with the updates.
                settings = {CURSOR_SETTING: str(cursor)} if cursor is not None else None
                # A record the cache evicted comes back with its next change: the live update
                # holds only that change, so ask for the whole record too.
                absent = await self.store.absent([(i.collection, i.record_id) for i in items])
                keys = await self.store.apply_remote(
                    items, settings, on_committed=self._live_written
                )
                self.working_set.kept_again(keys)
                self.owner.records_changed(keys)
                if absent:
                    self.protocol.send_state_vectors(
                        [(c, r, EMPTY_STATE_VECTOR) for c, r in absent]
                    )
                    await self.connection.flush()
            case UpdatesReceived(items, cursor):  # catch-up diffs, and live updates meanwhile
                keys = await self.store.apply_remote(items)
                # Sent during the catch-up: listed, or committed after the listing and kept by
                # the relay's live selection; either way not to be dropped at `synced`.
                self.working_set.listed(keys)
                size = sum(len(i.update) for i in items)
                self._advance(records_done=len(keys), bytes_done=size)
                self.owner.records_changed(keys)
            case RemovedReceived(items):
                await self._forget_purged(list(items))
            case DroppedReceived(items):
                self._dropped(await self.working_set.drop(items))
            case SyncedReceived(cursor, at):
                # Drops what a fresh listing left out, then the cursor (one transaction).
                self._dropped(await self.working_set.synced(cursor, at))
                self.phase = SyncPhase.LIVE
                self.owner.sync_completed()
            case ErrorReceived(code, reason, _fatal):
                self.owner.sync_error(code, reason)
            case _:
                pass  # pongs: the heartbeat only needs something received

    async def _forget_purged(self, items: Sequence[tuple[str, str, str | None]]) -> None:
        removed = await self.store.forget_purged(items)
        if removed:
            self.owner.records_removed(removed)
            self.owner.outbox_counted()

    def _dropped(self, keys: Sequence[tuple[str, str]]) -> None:
        if keys:
            log.info("dropped %d records that left what this replica keeps", len(keys))
            self.owner.records_changed(keys)

    def _live_written(self, error: BaseException | None) -> None:
        if error is not None:  # not stored: the next connection's catch-up fetches them again
            log.error("live updates could not be stored (%s): reconnecting", error)
            self.connection.abort()

    def _ack_written(self, done: asyncio.Future[int], seqs: Sequence[int]) -> None:
        self._acking.difference_update(seqs)
        if done.cancelled() or done.exception() is not None:
            log.warning("acknowledgement not saved (the entries will be sent again): %r", done)
            return
        self.owner.outbox_counted()

    # -- upload ---------------------------------------------------------------------------

    async def _start_upload_progress(self) -> None:
        await self._list_queued()
        self._count(list(self._backlog.values()))

    async def _list_queued(self) -> None:
        self._relist = False
        if self.store.outbox.tally()[0] == 0:
            return  # nothing committed waits (later entries are announced by on_queued)
        entries = await self.store.outbox.entries()
        out = self._sent | self._acking  # on their way, or already acknowledged
        for entry in entries:
            if entry.status is not OutboxStatus.ERROR and entry.seq not in out:
                self._backlog[entry.seq] = entry

    async def _pump(self) -> int:
        """Push queued entries while the window has room; return how many were pushed (or
        put in error as too big to ever send)."""
        done = 0
        while True:
            count, sent = await self._pump_batch()
            done += count
            if sent or not count:  # else only too-big entries: try the next ones now
                return done

    async def _pump_batch(self) -> tuple[int, bool]:
        """One push of queued entries; ``(entries handled, whether any was sent)``."""
        room = self.window - self.protocol.uploads_pending
        if room <= 0:
            return 0, False
        if self._relist:
            await self._list_queued()
        batch: list[OutboxEntry] = []
        for seq in sorted(self._backlog):
            if len(batch) == room:
                break
            entry = self._backlog.pop(seq)
            first_error = self.store.outbox.first_error(entry.collection, entry.record_id)
            if first_error is not None and first_error < seq:
                continue  # builds on the entry in error: held until the next listing
            batch.append(entry)
        if not batch:
            return 0, False
        seqs = [e.seq for e in batch]
        self._sent.update(seqs)
        self._records.update((e.seq, (e.collection, e.record_id)) for e in batch)
        items = [(e.seq, e.collection, e.record_id, e.update) for e in batch]
        too_big: list[tuple[int, str]] = []
        try:
            self.protocol.push(items)
        except MessageTooBig:
            for item in items:  # find the entries that can never be sent; push the rest
                try:
                    self.protocol.push([item])
                except MessageTooBig as exc:
                    too_big.append((item[0], str(exc)))
        await self.connection.flush()
        # Marked after sending, off the latency path and not waited for: a crash in between
        # leaves them queued, and they are sent again (harmless). The group commit writes it
        # before their acknowledgement.
        self.store.outbox.mark_uploading(seqs, lazy=True)
        for seq, reason in too_big:
            self._sent.discard(seq)
            self._records.pop(seq, None)
            await self.store.outbox.mark_error(seq, "too_big", reason)
        self._count(batch)
        self.owner.outbox_counted()
        return len(batch), len(too_big) < len(batch)

    async def _mark_errors(self, items: Sequence[RejectItem]) -> None:
        for seq, code, reason in items:
            try:
                await self.store.outbox.mark_error(seq, code, reason)
            except OutboxError:
                log.info("rejected entry %d is no longer in the outbox", seq)

    async def _settled(self) -> None:
        self.owner.outbox_counted()
        await self._pump()
        await self._maybe_download()

    async def _maybe_download(self) -> None:
        if self.phase is not SyncPhase.UPLOAD or self.protocol.uploads_pending:
            return
        if self._backlog or self._relist:
            return  # more to push first (the next pump lists the outbox if asked to)
        self.phase = SyncPhase.DOWNLOAD
        collections, subscriptions, cursor, since = await self.working_set.plan(
            self.protocol.collections
        )
        self.protocol.subscribe(collections, cursor, subscriptions, since)
        await self.connection.flush()

    # -- progress -------------------------------------------------------------------------

    def _count(self, entries: Sequence[OutboxEntry]) -> None:
        """Add entries not counted yet to the progress totals."""
        fresh = [e for e in entries if e.seq not in self._sizes]
        for entry in fresh:
            self._sizes[entry.seq] = len(entry.update)
        if fresh:
            self._advance(records_total=len(fresh), bytes_total=sum(len(e.update) for e in fresh))

    def _uploaded(self, seqs: Sequence[int]) -> None:
        size = sum(self._sizes.get(s, 0) for s in seqs)
        self._advance(records_done=len(seqs), bytes_done=size)

    def _advance(
        self,
        *,
        records_done: int = 0,
        records_total: int = 0,
        bytes_done: int = 0,
        bytes_total: int = 0,
    ) -> None:
        p = self.progress
        self.progress = Progress(
            records_done=p.records_done + records_done,
            records_total=max(p.records_total + records_total, p.records_done + records_done),
            bytes_done=p.bytes_done + bytes_done,
            bytes_total=max(p.bytes_total + bytes_total, p.bytes_done + bytes_done),
        )
        if self.phase in (SyncPhase.UPLOAD, SyncPhase.DOWNLOAD):
            self.owner.sync_progress(self.progress)
