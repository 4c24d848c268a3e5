"""Replica: a local store that syncs itself through a relay, online or offline.

A :class:`Replica` wraps a :class:`~crdt_sync.store.sqlite.LocalStore` (reads and edits go
straight to the local SQLite file and never wait for the network) and runs one background
task that keeps it synced:

- the connection lifecycle is the pure :class:`~crdt_sync.client.session.Session`; this module
  reports what happened to it and acts on its state: connect, wait out a backoff delay
  (exponential, full jitter: :func:`crdt_sync.backoff.backoff`, reset after every completed
  sync), or wait for the user (``go_online()``) or the network (``network_changed("up")``);
- each connection is a :class:`~crdt_sync.client.connection.Connection` (websocket, protocol
  core, heartbeat) run by a :class:`~crdt_sync.client.sync_run.SyncRun` (upload, then
  download, then live), which reports to the replica's private ``_SyncReports`` (welcome,
  progress, completion, outbox counts, record changes, relay errors);
- a connection refused or ended with ``token_expired`` asks the token provider for a fresh
  token and reconnects at once (no backoff), keeping the outbox as it is.

Status (:attr:`Replica.status`), record changes (:meth:`Replica.changes`,
:meth:`Replica.on_change`), conflicts (:meth:`Replica.conflict_events`,
:meth:`Replica.on_conflict`) and the cache's evictions and warnings
(:meth:`Replica.cache_events`, :meth:`Replica.on_cache_event`) are published as events.
Online-only actions (:meth:`Replica.sync_now`) raise :class:`~crdt_sync.errors.OfflineError`
when offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Literal

from websockets.exceptions import InvalidHandshake, InvalidURI

from crdt_sync.backoff import DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY, backoff
from crdt_sync.cache_policy import CacheEvent, CachePolicy
from crdt_sync.errors import InvalidState, OfflineError, UnsyncedChangesError
from crdt_sync.outbox import OutboxEntry
from crdt_sync.protocol import Welcomed
from crdt_sync.query import Filter
from crdt_sync.records.lww import LwwPolicy
from crdt_sync.records.record import Record, RecordEditor
from crdt_sync.store.cache_keeper import CacheReport
from crdt_sync.store.live_query import LiveQuery
from crdt_sync.store.local_query import SearchHit
from crdt_sync.store.record_changes import Origin, RecordChanged
from crdt_sync.store.sqlite import ConflictLogEntry, LocalStore, Outbox
from crdt_sync.subscriptions import Subscription, normalize

from .connection import Connection
from .session import Session, SessionEvent, SessionState
from .status import Progress, Status, StatusFeed
from .sync_run import DEFAULT_WINDOW, SyncPhase, SyncRun

__all__ = ["RecordChange", "Replica", "TokenProvider"]

log = logging.getLogger("crdt_sync.client")

TokenProvider = str | Callable[[], str] | Callable[[], Awaitable[str]]
"""A token, or a function (sync or async) returning a fresh one; called before each connect."""

#: Default seconds between heartbeat pings.
DEFAULT_HEARTBEAT_INTERVAL = 10.0

#: Default seconds of silence after which the link is declared dead.
DEFAULT_DEAD_AFTER = 30.0

_AUTH_CODES = ("token_expired",)

_ACTIVE = (SessionState.CONNECTING, SessionState.SYNCING, SessionState.ONLINE)


class _TokenUnavailable(Exception):
    """The token provider raised (the cause); the attempt backs off."""


@dataclass(frozen=True, slots=True)
class RecordChange:
    """A record changed in the store: by a local edit (``origin="local"``, reported once
    committed, with the top-level ``fields`` that changed) or by updates from the relay
    (``origin="remote"``, reported as soon as they are applied; ``fields`` is None: read the
    record, or use :meth:`Replica.watch` for field-level changes).

    ``deleted`` is true when the record reads as gone after the change: a deletion from
    another replica (or from this one, :meth:`Replica.delete`), a write that lost to a
    deletion, or the relay's purge of a deleted record.
    """

    collection: str
    record_id: str
    origin: Origin = "remote"
    fields: frozenset[str] | None = None
    deleted: bool = False


class Replica:
    """A synced local store. Open with ``async with Replica.open(...) as replica``.

    Do not construct directly; use :meth:`open`.
    """

    def __init__(
        self,
        store: LocalStore,
        *,
        url: str,
        token: TokenProvider,
        collections: Sequence[str] | None,
        offline: bool,
        subscriptions: Sequence[Subscription | str] | None = None,
        heartbeat_interval: float,
        dead_after: float,
        open_timeout: float,
        backoff_initial: float,
        backoff_max: float,
        upload_window: int,
    ) -> None:
        if heartbeat_interval <= 0 or dead_after <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < dead_after")
        self.store = store
        self.url = url
        if subscriptions is not None and collections is not None:
            raise ValueError("give collections or subscriptions, not both")
        #: What this replica keeps (None: the whole ``collections``).
        self.subscriptions = normalize(subscriptions) if subscriptions is not None else None
        if self.subscriptions is not None:
            collections = list(dict.fromkeys(s.collection for s in self.subscriptions))
        self.collections = tuple(collections) if collections is not None else None
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.open_timeout = open_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.upload_window = upload_window
        self._token = token
        self._session = Session(SessionState.FORCED_OFFLINE if offline else SessionState.OFFLINE)
        self.status = StatusFeed(Status(session=self._session.state))
        self._kick = asyncio.Event()
        self._connection: Connection | None = None
        self._sync_run: SyncRun | None = None
        self._connecting: asyncio.Task[Connection] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._change_callbacks: list[Callable[[RecordChange], None]] = []
        self._change_queues: list[asyncio.Queue[RecordChange]] = []
        self._delays = self._new_backoff()
        self._auth_retried = False
        self._epoch = 0  # bumped by go_offline()/go_online(): outdated attempts report nothing
        #: How many connections were opened (welcomed or not), for tests and metrics.
        self.connections_opened = 0
        #: The tenant and collections the relay granted on the last welcome.
        self.grant: Welcomed | None = None
        self._reports = _SyncReports(self)
        self._unsubscribe_outbox = store.outbox.on_queued(self._entry_queued)
        self._unsubscribe_local = store.on_record_change(self._local_change)

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        url: str,
        token: TokenProvider,
        collections: Sequence[str] | None = None,
        subscriptions: Sequence[Subscription | str] | None = None,
        lww: LwwPolicy | Mapping[str, Any] | None = None,
        replica_id: str | None = None,
        offline: bool = False,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = DEFAULT_DEAD_AFTER,
        open_timeout: float = 10.0,
        backoff_initial: float = DEFAULT_INITIAL_DELAY,
        backoff_max: float = DEFAULT_MAX_DELAY,
        upload_window: int = DEFAULT_WINDOW,
        cache: CachePolicy | None = None,
        **store_options: Any,
    ) -> _Opening:
        """Open the store at ``path`` and start syncing it with the relay at ``url``.

        Use as ``async with Replica.open(...) as replica`` (closes it at the end), or
        ``replica = await Replica.open(...)`` then ``await replica.close()``. Opening never
        waits for the network: the replica works offline and connects in the background.

        Args:
            path: the replica's SQLite file (one per account).
            url: the relay's websocket URL (``ws://`` or ``wss://``).
            token: the auth token, or a (sync or async) function returning a fresh one; it is
                called before every connection attempt.
            collections: the collections to sync; None: every collection the token grants.
            subscriptions: what this replica keeps, instead of ``collections``: collection
                names (kept whole) and :class:`~crdt_sync.subscriptions.Subscription`-s
                (record ids, queries on top-level fields, rolling date windows), evaluated
                by the relay at each sync; records that leave them are dropped from the
                store, except those with unsynced changes (dropped once acknowledged).
            lww: last-write-wins fields per collection (``{"jobs": ["status"]}``).
            replica_id: this replica's id when the file is created (default: random).
            offline: start with sync switched off (as after ``go_offline()``).
            heartbeat_interval: seconds between pings.
            dead_after: seconds without hearing from the relay after which the link is dead
                (a dead link is noticed within ``dead_after`` + ``heartbeat_interval``).
            open_timeout: seconds to open the websocket.
            backoff_initial: the upper bound of the first reconnect delay (seconds).
            backoff_max: the cap of the reconnect delays (seconds).
            upload_window: the most outbox entries in flight.
            cache: retention, quota and warning thresholds of the local cache (default:
                :class:`~crdt_sync.cache_policy.CachePolicy`: 30-day retention, no quota); the
                cache's maximum age comes from the relay.
            store_options: passed to :meth:`LocalStore.open`.
        """
        return _Opening(
            cls,
            path,
            dict(
                url=url,
                token=token,
                collections=collections,
                subscriptions=subscriptions,
                offline=offline,
                heartbeat_interval=heartbeat_interval,
                dead_after=dead_after,
                open_timeout=open_timeout,
                backoff_initial=backoff_initial,
                backoff_max=backoff_max,
                upload_window=upload_window,
            ),
            dict(store_options, lww=lww, replica_id=replica_id, cache=cache),
        )

    def _start(self) -> None:
        if self._session.state is SessionState.OFFLINE:
            self._transition(SessionEvent.CONNECT)
        self._runner = asyncio.create_task(self._run(), name=f"replica {self.replica_id}")

    async def close(self) -> None:
        """Stop syncing (closing the connection gracefully) and close the store. Idempotent."""
        if self._session.state is SessionState.CLOSED:
            return
        self._transition(SessionEvent.CLOSE)
        await self._drop_connection()
        if self._runner is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):  # already logged
                await self._runner
        self._unsubscribe_outbox()
        self._unsubscribe_local()
        await self.store.close()

    async def wipe(self, *, force: bool = False) -> None:
        """Log out: stop syncing, close the replica and delete its local data (the store's
        files). Refused while changes are not synced yet, unless ``force`` (they are lost).

        Raises:
            UnsyncedChangesError: unsynced changes exist and ``force`` is false; it says how
                many. The replica is left open and syncing (sync, then try again).
        """
        if not force and self._session.state is not SessionState.CLOSED:
            entries, records = await self.store.unsynced()
            if entries:
                raise UnsyncedChangesError(self.store.path, entries, records)
        await self.close()
        await self.store.wipe(force=force)  # checks the closed file again

    async def __aenter__(self) -> Replica:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def replica_id(self) -> str:
        """This replica's id (stable for the store file)."""
        return self.store.replica_id

    # -- local data (never waits for the network) -----------------------------------------

    async def get(self, collection: str, record_id: str) -> Record:
        """The record from the local store.

        Raises:
            RecordNotFound: the record is not in the local store.
        """
        return await self.store.get(collection, record_id)

    async def exists(self, collection: str, record_id: str) -> bool:
        """Whether the record is in the local store."""
        return await self.store.exists(collection, record_id)

    async def records(self, collection: str) -> list[Record]:
        """Every record of ``collection`` in the local store, sorted by id."""
        return await self.store.records(collection)

    async def search(
        self,
        collection: str,
        text: str | None = None,
        where: Filter | Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """Search the local store (see :meth:`LocalStore.search`)."""
        return await self.store.search(collection, text, where)

    async def query(
        self,
        collection: str,
        where: Filter | Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Record]:
        """Query the local store (see :meth:`LocalStore.query`); works offline."""
        return await self.store.query(
            collection, where, order_by=order_by, limit=limit, offset=offset
        )

    async def count(self, collection: str, where: Filter | Mapping[str, Any] | None = None) -> int:
        """How many local records match (see :meth:`LocalStore.count`)."""
        return await self.store.count(collection, where)

    async def search_text(
        self,
        collection: str,
        text: str,
        *,
        where: Filter | Mapping[str, Any] | None = None,
        limit: int = 20,
        prefix: bool = True,
    ) -> list[SearchHit]:
        """Full-text search in the local store (see :meth:`LocalStore.search_text`)."""
        return await self.store.search_text(
            collection, text, where=where, limit=limit, prefix=prefix
        )

    def watch(
        self,
        collection: str,
        where: Filter | Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> LiveQuery:
        """A live query of the local store (see :meth:`LocalStore.watch`): its result now and
        again after each local edit or remote update that affects it."""
        return self.store.watch(collection, where, order_by=order_by, limit=limit, offset=offset)

    def edit(
        self, collection: str, record_id: str, *, create: bool = True
    ) -> contextlib.AbstractAsyncContextManager[RecordEditor]:
        """Edit one record in one local transaction (one outbox entry); never waits for the
        network. Online, the edit is pushed to the relay as soon as it is committed.

        ``async with replica.edit("jobs", "job-42") as job: job["status"] = "done"`` (the
        store's :meth:`~crdt_sync.store.sqlite.LocalStore.edit`: durable when the block exits).

        Raises:
            RecordNotFound: the record does not exist and ``create`` is false.
        """
        return self.store.edit(collection, record_id, create=create)

    async def delete(self, collection: str, record_id: str) -> None:
        """Delete the record: a tombstone that syncs like any edit (pending until the relay
        acknowledges it); reads say it is gone at once. A concurrent edit elsewhere loses to
        the deletion and is logged in the conflict log (docs/records.md, "Deleting a
        record"). Reported to :meth:`on_change` listeners once committed, with
        ``origin="local"`` and ``deleted=True``; live queries see the record leave.

        Raises:
            RecordNotFound: the record is not in the local store.
        """
        await self.store.delete(collection, record_id)

    def batch(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Edits made in the block are durable together, when it exits (the store's
        :meth:`~crdt_sync.store.sqlite.LocalStore.batch`): for imports and bulk changes. Each
        edit is pushed as soon as it is committed, as always."""
        return self.store.batch()

    def _entry_queued(self, _entry: OutboxEntry) -> None:
        if self._sync_run is None:  # else the sync run pushes the entry and recounts
            self._recount()

    @property
    def outbox(self) -> Outbox:
        """The store's outbox (``list()``, ``count()``, ``resolve()``, ``discard()``...)."""
        return self.store.outbox

    async def retry(self) -> None:
        """Push queued entries now (e.g. after ``outbox.resolve()``); no-op offline."""
        self._recount()
        if self._sync_run is not None:
            self._sync_run.relist()

    # -- record-change events --------------------------------------------------------------

    def on_change(self, callback: Callable[[RecordChange], None]) -> Callable[[], None]:
        """Call ``callback(change)`` for each record changed, by local edits or by remote
        updates (see :class:`RecordChange`).

        Returns a function that unsubscribes.
        """
        self._change_callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._change_callbacks.remove(callback)

        return unsubscribe

    async def changes(self) -> AsyncGenerator[RecordChange, None]:
        """Yield a :class:`RecordChange` for each record changed (local edits and remote
        updates), forever."""
        queue: asyncio.Queue[RecordChange] = asyncio.Queue()
        self._change_queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._change_queues.remove(queue)

    def _local_change(self, change: RecordChanged) -> None:
        if change.origin == "local":
            deleted = self.store.is_deleted(change.collection, change.record_id)
            self._publish(
                RecordChange(change.collection, change.record_id, "local", change.fields, deleted)
            )

    def _publish_changes(self, keys: Sequence[tuple[str, str]], *, removed: bool = False) -> None:
        for collection, record_id in keys:
            deleted = removed or self.store.is_deleted(collection, record_id)
            self._publish(RecordChange(collection, record_id, deleted=deleted))

    def _publish(self, change: RecordChange) -> None:
        for queue in self._change_queues:
            queue.put_nowait(change)
        for callback in list(self._change_callbacks):
            try:
                callback(change)
            except Exception:
                log.exception("record-change callback %r failed", callback)

    # -- conflicts -------------------------------------------------------------------------

    async def conflicts(self, collection: str, record_id: str) -> list[ConflictLogEntry]:
        """What was overwritten in this record by a concurrent write, oldest first: each
        entry says what lost, to what, from which replica, and when (``describe()`` says it
        in a sentence). docs/records.md has the rules."""
        return await self.store.conflicts(collection, record_id)

    async def recent_conflicts(
        self, limit: int = 100, *, after: int | None = None
    ) -> list[ConflictLogEntry]:
        """Conflicts of every record, newest first; ``after``: only those logged after the
        entry with that ``seq`` (the last one the app showed)."""
        return await self.store.recent_conflicts(limit, after=after)

    def on_conflict(self, callback: Callable[[ConflictLogEntry], None]) -> Callable[[], None]:
        """Call ``callback(entry)`` for each conflict logged from now on (remote updates are
        scanned for conflicts in the background, shortly after they arrive). Returns a
        function that unsubscribes."""
        return self.store.on_conflict(callback)

    async def conflict_events(self) -> AsyncGenerator[ConflictLogEntry, None]:
        """Yield each conflict logged from now on, forever."""
        queue: asyncio.Queue[ConflictLogEntry] = asyncio.Queue()
        unsubscribe = self.store.on_conflict(queue.put_nowait)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    # -- the cache: retention, quota, expiry ---------------------------------------------

    async def clear_cache(self) -> CacheReport:
        """Remove every local record without unsynced changes; records with unsynced changes
        (outbox entries of any status) stay. Removed records come back when they change on
        the relay (docs/client.md, "Retention, quota and expiry")."""
        return await self.store.clear_cache()

    async def apply_cache_policy(self) -> CacheReport:
        """Apply retention and quota now (they also run by themselves in the background)."""
        return await self.store.cache.apply_policy()

    @property
    def cache_expires_at(self) -> float | None:
        """When the offline cache expires (Unix time), from the relay's maximum age and the
        last completed sync; None: no expiry, or online now."""
        return self.store.cache.expires_at

    def on_cache_event(self, callback: Callable[[CacheEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for each :class:`~crdt_sync.cache_policy.CacheEvent` from
        now on (records evicted; warnings: expiry soon, expired, eviction blocked by unsynced
        changes, unsynced changes getting old). Returns a function that unsubscribes."""
        return self.store.cache.on_event(callback)

    async def cache_events(self) -> AsyncGenerator[CacheEvent, None]:
        """Yield each cache event from now on, forever."""
        queue: asyncio.Queue[CacheEvent] = asyncio.Queue()
        unsubscribe = self.store.cache.on_event(queue.put_nowait)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    # -- user and network control ---------------------------------------------------------

    async def go_offline(self) -> None:
        """Switch sync off (forced offline mode) until :meth:`go_online`.

        Closes the connection gracefully; local reads and edits keep working.
        """
        self._epoch += 1
        self._transition(SessionEvent.GO_OFFLINE)
        await self._drop_connection()

    def go_online(self) -> None:
        """Switch sync back on after :meth:`go_offline` (connects at once)."""
        self._epoch += 1
        self._transition(SessionEvent.GO_ONLINE)

    def network_changed(self, reachability: Literal["up", "down", "metered"]) -> None:
        """Report the network's reachability, as the OS tells the app.

        ``"up"`` (or ``"metered"``) while waiting to reconnect tries at once instead of
        waiting out the backoff delay. ``"down"`` stops reconnect attempts until ``"up"``
        (a live connection is kept: the heartbeat decides whether it still works).
        """
        if reachability not in ("up", "down", "metered"):
            raise ValueError(f"reachability must be 'up', 'down' or 'metered': {reachability!r}")
        self._session.metered = reachability == "metered"
        if reachability == "down":
            self._transition(SessionEvent.NETWORK_DOWN)
        else:
            self._delays = self._new_backoff()
            self._transition(SessionEvent.NETWORK_UP)

    # -- online-only actions --------------------------------------------------------------

    @property
    def online(self) -> bool:
        """True while connected and caught up."""
        return self._session.state is SessionState.ONLINE

    async def sync_now(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Push every queued entry now and wait until the relay acknowledged (or refused) it.
        Entries held behind an entry in error (see :attr:`Status.held`) are not waited for.

        Fails fast when offline; while a connection attempt is under way it waits for it.

        Raises:
            OfflineError: offline (forced, network down, or waiting to retry), or the
                connection was lost before the outbox was settled.
            TimeoutError: not settled within ``timeout`` seconds.
        """
        if not self._session.wants_connection:
            raise OfflineError(f"cannot sync now: the replica is {self.status.current.state}")
        if self._connection is not None:
            self._connection.wake()
        self._recount()
        async with asyncio.timeout(timeout):
            status = await self.status.wait_for(
                lambda s: (
                    s.session not in _ACTIVE
                    or (s.session is SessionState.ONLINE and s.pending == s.errors + s.held)
                )
            )
        if status.session is not SessionState.ONLINE:
            raise OfflineError(f"the connection was lost: the replica is {status.state}")

    async def wait_synced(self, timeout: float = 30.0) -> Status:  # noqa: ASYNC109
        """Wait until the replica is online with nothing queued or in flight.

        Entries in error (refused by the relay) do not count, nor the entries held behind
        them (later entries of the same records, which wait for them). For tests and apps that
        want to know their edits reached the relay.

        Raises:
            TimeoutError: not synced within ``timeout`` seconds.
        """
        self._recount()
        async with asyncio.timeout(timeout):
            return await self.status.wait_for(
                lambda s: s.session is SessionState.ONLINE and s.pending == s.errors + s.held
            )

    # -- the background task --------------------------------------------------------------

    def _new_backoff(self) -> Iterator[float]:
        return backoff(self.backoff_initial, max_delay=max(self.backoff_max, self.backoff_initial))

    def _transition(self, event: SessionEvent, **status_changes: Any) -> None:
        """Apply ``event`` to the session; publish the new state with ``status_changes``."""
        before = self._session.state
        after = self._session.handle(event)
        if after is before:
            if status_changes:
                self.status.update(**status_changes)
        else:
            log.debug(
                "replica %s: %s -(%s)-> %s",
                self.store.replica_id,
                before.name,
                event.name,
                after.name,
            )
            if SessionState.SYNCING in (before, after):
                # A sync under way: the expiry waits for its outcome.
                self.store.cache.set_syncing(after is SessionState.SYNCING)
            if SessionState.ONLINE in (before, after):
                # Online, the cache is current: it does not age toward its expiry.
                self.store.cache.set_live(after is SessionState.ONLINE)
            changes: dict[str, Any] = {**status_changes, "session": after}
            if after is SessionState.SYNCING:
                changes["progress"] = Progress()
            self.status.update(**changes)
            self._kick.set()
            if self._connecting is not None and not self._session.wants_connection:
                self._connecting.cancel()

    async def _wait_kick(self, delay: float | None = None) -> None:
        self._kick.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._kick.wait()

    async def _run(self) -> None:
        try:
            while True:
                state = self._session.state
                if state is SessionState.CLOSED:
                    return
                if state in (SessionState.OFFLINE, SessionState.FORCED_OFFLINE):
                    await self._wait_kick()
                elif state is SessionState.BACKOFF:
                    delay = next(self._delays)
                    log.debug("replica %s: reconnecting in %.2f s", self.replica_id, delay)
                    await self._wait_kick(delay)
                    if self._session.state is SessionState.BACKOFF:
                        self._transition(SessionEvent.CONNECT)
                else:
                    try:
                        await self._attempt()
                    except Exception:
                        if self._session.state is SessionState.CLOSED:
                            return
                        log.exception("replica %s: sync failed; reconnecting", self.replica_id)
                        self._lost("internal")
        except Exception:
            log.exception("replica %s: the sync task failed", self.replica_id)
            raise

    async def _attempt(self) -> None:
        """One connection attempt, run to its end; leaves the session in its next state."""
        epoch = self._epoch
        try:
            # A task, so that going offline or closing cancels a slow provider or connect.
            self._connecting = asyncio.create_task(self._open_connection())
            try:
                connection = await self._connecting
            finally:
                self._connecting = None
        except asyncio.CancelledError:
            if self._runner is not None and self._runner.cancelling():
                raise
            return  # gone offline or closed while connecting
        except _TokenUnavailable as exc:
            log.warning("replica %s: token provider failed: %r", self.replica_id, exc.__cause__)
            self._lost("token_unavailable")
            return
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            log.info("replica %s: cannot connect to %s: %s", self.replica_id, self.url, exc)
            self._lost("connection_failed")
            return
        self.connections_opened += 1
        self._connection = connection
        if not self._session.wants_connection:
            await connection.close()
        run = SyncRun(
            connection,
            self.store,
            self._reports,
            self.collections,
            window=self.upload_window,
            subscriptions=self.subscriptions,
        )
        self._sync_run = run
        try:
            code = await run.run()
        except BaseException:
            connection.abort()  # e.g. a store error: drop the link, the caller backs off
            raise
        finally:
            self._connection = None
            self._sync_run = None
            await connection.wait_ended()
        self._recount()
        if not self._session.wants_connection or self._epoch != epoch:
            return  # the user switched sync off (and maybe on again): not a failure
        if code in _AUTH_CODES and (run.phase is not SyncPhase.HANDSHAKE or not self._auth_retried):
            # The token expired: ask the provider for a fresh one and reconnect at once
            # (once in a row if it is refused at the handshake, then back off).
            self._auth_retried = run.phase is SyncPhase.HANDSHAKE
            self._transition(SessionEvent.AUTH_EXPIRED, last_error=code)
            return
        self._lost(code)

    def _lost(self, code: str) -> None:
        if self._session.wants_connection:
            self._transition(SessionEvent.LOST, last_error=code)
        else:
            self.status.update(last_error=code)

    async def _open_connection(self) -> Connection:
        try:
            token = await self._fresh_token()
        except Exception as exc:
            raise _TokenUnavailable() from exc
        return await Connection.open(
            self.url,
            self.store.replica_id,
            token,
            heartbeat_interval=self.heartbeat_interval,
            dead_after=self.dead_after,
            open_timeout=self.open_timeout,
        )

    async def _fresh_token(self) -> str:
        token = self._token
        if isinstance(token, str):
            return token
        result = token()
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str):
            raise TypeError(f"the token provider returned {type(result).__name__}, not str")
        return result

    async def _drop_connection(self) -> None:
        connection = self._connection
        if connection is not None:
            await connection.close()

    def _recount(self) -> None:
        if self._session.state is SessionState.CLOSED:
            return
        pending, errors = self.store.outbox.tally()
        self.status.update(pending=pending, errors=errors, held=self.store.outbox.held())


class _SyncReports:
    """The :class:`~crdt_sync.client.sync_run.SyncOwner` of a replica's sync runs: what they
    report moves the replica's session and status, and raises record changes. Its own object,
    so that these callbacks stay off :class:`Replica`'s public surface."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def sync_welcomed(self, event: Welcomed) -> None:
        """The relay accepted the handshake."""
        replica = self._replica
        replica.grant = event
        replica._auth_retried = False
        replica.store.cache.set_max_age(event.cache_max_age)
        if replica._session.state is SessionState.CONNECTING:
            replica._transition(SessionEvent.WELCOMED)

    def sync_completed(self) -> None:
        """Upload then download finished."""
        replica = self._replica
        replica._delays = replica._new_backoff()
        done = {"last_synced_at": time.time(), "last_error": None}
        replica.store.cache.synced()
        if replica._session.state is SessionState.SYNCING:
            replica._transition(SessionEvent.SYNCED, **done)
        else:
            replica.status.update(**done)

    def sync_progress(self, progress: Progress) -> None:
        """Progress of the current sync."""
        self._replica.status.update(progress=progress)

    def outbox_counted(self) -> None:
        """Entries were acknowledged, refused or sent."""
        self._replica._recount()

    def records_changed(self, keys: Sequence[tuple[str, str]]) -> None:
        """Remote updates changed these records."""
        self._replica._publish_changes(keys)

    def records_removed(self, keys: Sequence[tuple[str, str]]) -> None:
        """Records deleted and purged on the relay left the store."""
        self._replica._publish_changes(keys, removed=True)

    def sync_error(self, code: str, reason: str) -> None:
        """The relay sent an error frame."""
        log.info("replica %s: relay error %s: %s", self._replica.replica_id, code, reason)
        self._replica.status.update(last_error=code)


class _Opening:
    """What :meth:`Replica.open` returns: awaitable, or an async context manager."""

    def __init__(
        self,
        cls: type[Replica],
        path: str | os.PathLike[str],
        options: dict[str, Any],
        store_options: dict[str, Any],
    ) -> None:
        self._cls = cls
        self._path = path
        self._options = options
        self._store_options = store_options
        self._replica: Replica | None = None

    async def _open(self) -> Replica:
        store = await LocalStore.open(self._path, **self._store_options)
        try:
            replica = self._cls(store, **self._options)
        except BaseException:
            await store.close()
            raise
        replica._recount()
        replica._start()
        return replica

    def __await__(self) -> Generator[Any, None, Replica]:
        return self._open().__await__()

    async def __aenter__(self) -> Replica:
        if self._replica is not None:
            raise InvalidState("this Replica.open() was already entered")
        self._replica = await self._open()
        return self._replica

    async def __aexit__(self, *exc: object) -> None:
        assert self._replica is not None
        await self._replica.close()
