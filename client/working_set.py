"""What a replica keeps, as one sync run sees it: subscriptions, the cursor they go with, and
the records to drop (:class:`WorkingSet`).

A replica subscribes to whole collections, record ids or queries
(:class:`~crdt_sync.subscriptions.Subscription`); its token may restrict collections to
records (the ``scopes`` of ``welcome``). The relay evaluates both at each catch-up and says
which records left them (``drop``). This module keeps the replica's side of that:

- **the cursor belongs to what is kept**: :data:`SELECTION_SETTING` holds the fingerprint of
  the subscriptions and scopes the cursor was obtained with, and ``at``, when the relay
  evaluated them (sent back as ``since``). When the fingerprint changes, the catch-up starts
  from scratch (cursor ``None``): the relay lists every record kept now, and, once the listing
  is complete, the replica drops the records of its filtered collections that were not
  listed. Cursor and selection are written in one transaction. A replica syncing whole
  collections with an unrestricted token has the empty fingerprint, as before this existed;
- **dropping never loses unsynced work**: a record to drop that has unsynced local changes is
  kept (``LocalStore.drop_records`` checks in the same transaction) and remembered in
  :data:`DROP_AFTER_ACK_SETTING`; it is dropped once the relay acknowledged its changes,
  unless the relay sent it again meanwhile (it is kept again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from crdt_sync.query import Filter, from_wire
from crdt_sync.subscriptions import Subscription, fingerprint

from .sync_store import SyncStore

__all__ = ["DROP_AFTER_ACK_SETTING", "SELECTION_SETTING", "WorkingSet"]

log = logging.getLogger("crdt_sync.client")

#: Store setting: ``{"fp": fingerprint, "at": evaluation time}`` of the cursor's catch-up.
SELECTION_SETTING = "sync.selection"
#: Store setting: records to drop once their unsynced changes are acknowledged (JSON list).
DROP_AFTER_ACK_SETTING = "sync.drop_after_ack"

Key = tuple[str, str]


class WorkingSet:
    """The replica's side of subscriptions for one sync run (see the module docstring).

    Args:
        store: the replica's store.
        subscriptions: what the replica keeps; None: whole collections (``collections``).
        collections: the collections to sync when ``subscriptions`` is None (None: every
            collection granted).
        cursor_setting: the store setting holding the sync cursor.
    """

    def __init__(
        self,
        store: SyncStore,
        subscriptions: Sequence[Subscription] | None,
        collections: Sequence[str] | None,
        cursor_setting: str,
    ) -> None:
        self.store = store
        self.cursor_setting = cursor_setting
        self.subscriptions = tuple(subscriptions) if subscriptions is not None else None
        self.collections = tuple(collections) if collections is not None else None
        self.scopes: dict[str, Filter] = {}
        self.fingerprint = ""
        self.fresh = False  # this catch-up started from scratch
        self.filtered: set[str] = set()  # collections where records may be left out
        self._listed: set[Key] = set()
        self._drop_after_ack: set[Key] | None = None

    def welcomed(self, scopes: Iterable[tuple[str, object]]) -> None:
        """The relay's ``welcome`` announced these record-level scopes (wire form)."""
        self.scopes = {c: from_wire(w) for c, w in scopes}

    async def plan(
        self, granted: Sequence[str]
    ) -> tuple[tuple[str, ...], tuple[Subscription, ...] | None, int | None, int | None]:
        """What to put in ``sub``: ``(collections, subscriptions, cursor, since)``."""
        subs = self.subscriptions
        if subs is not None:
            missing = sorted({s.collection for s in subs} - set(granted))
            if missing:  # subscribing to them would fail the connection (forbidden)
                log.warning("the token does not grant collections %s: not syncing them", missing)
            subs = tuple(s for s in subs if s.collection in granted)
            collections = tuple(dict.fromkeys(s.collection for s in subs))
        elif self.collections is not None:
            collections = tuple(c for c in self.collections if c in granted)
            missing = sorted(set(self.collections) - set(granted))
            if missing:
                log.warning("the token does not grant collections %s: not syncing them", missing)
        else:
            collections = tuple(granted)
        scopes = {c: f for c, f in self.scopes.items() if c in collections}
        whole = {s.collection for s in subs or () if s.whole}
        self.filtered = {s.collection for s in subs or () if s.collection not in whole}
        self.filtered |= set(scopes)
        tracked = subs is not None or bool(scopes)
        self.fingerprint = fingerprint(subs or (), scopes) if tracked else ""
        stored = await self._selection()
        raw = await self.store.get_setting(self.cursor_setting)
        cursor = int(raw) if raw is not None else None
        since = None
        if stored.get("fp", "") != self.fingerprint:
            cursor = None  # what is kept changed: catch up from scratch
        elif cursor is not None:
            since = stored.get("at")
        self.fresh = cursor is None
        self._listed = set()
        return collections, subs, cursor, since if isinstance(since, int) else None

    async def _selection(self) -> dict[str, object]:
        raw = await self.store.get_setting(SELECTION_SETTING)
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            value = {}
        return value if isinstance(value, dict) else {}

    def listed(self, keys: Iterable[Key]) -> None:
        """The relay listed these records in the catch-up (they are kept)."""
        if self.fresh:
            self._listed.update((c, r) for c, r in keys if c in self.filtered)
        self.kept_again(keys)

    def kept_again(self, keys: Iterable[Key]) -> None:
        """The relay sent these records: not to be dropped after all."""
        if self._drop_after_ack:
            self._drop_after_ack.difference_update(keys)

    async def synced(self, cursor: int, at: int | None) -> list[Key]:
        """The catch-up is complete: drop what a fresh listing left out, then persist the
        cursor with its selection (one transaction). Returns the records dropped."""
        dropped: list[Key] = []
        if self.fresh and self.filtered:
            unlisted = [
                (c, r)
                for c in sorted(self.filtered)
                for r in await self.store.ids(c)
                if (c, r) not in self._listed
            ]
            dropped = await self.drop(unlisted)
        selection = json.dumps({"fp": self.fingerprint, "at": at})
        settings = {self.cursor_setting: str(cursor), SELECTION_SETTING: selection}
        await self.store.apply_remote([], settings)
        self.fresh = False
        self._listed = set()
        return dropped

    async def drop(self, keys: Sequence[Key]) -> list[Key]:
        """Drop these records now, except those with unsynced changes (dropped once those
        are acknowledged). Returns the records dropped."""
        if not keys:
            return []
        kept = await self.store.drop_records(keys)
        pending = await self._pending()
        before = set(pending)
        pending.update(kept)
        if pending != before:
            await self._save_pending(pending)
        kept_set = set(kept)
        return [key for key in keys if key not in kept_set]

    async def acknowledged(self) -> list[Key]:
        """Entries were acknowledged: drop the remembered records that have none left.
        Returns the records dropped."""
        pending = await self._pending()
        if not pending:
            return []
        wanted = sorted(pending)
        kept = set(await self.store.drop_records(wanted))
        if kept != pending:
            await self._save_pending(kept)
        return [key for key in wanted if key not in kept]

    async def _pending(self) -> set[Key]:
        if self._drop_after_ack is None:
            raw = await self.store.get_setting(DROP_AFTER_ACK_SETTING)
            try:
                self._drop_after_ack = {(str(c), str(r)) for c, r in json.loads(raw or "[]")}
            except (ValueError, TypeError):
                self._drop_after_ack = set()
        return self._drop_after_ack

    async def _save_pending(self, pending: set[Key]) -> None:
        self._drop_after_ack = set(pending)
        await self.store.set_setting(DROP_AFTER_ACK_SETTING, json.dumps(sorted(pending)))

    @property
    def may_have_drops(self) -> bool:
        """Whether records wait to be dropped after an acknowledgement (or it is unknown)."""
        return self._drop_after_ack is None or bool(self._drop_after_ack)
