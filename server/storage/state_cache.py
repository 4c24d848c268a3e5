"""Merged record states kept in memory, for any storage engine (:class:`StateCache`).

A catch-up reads the merged states of the records it lists; reading and merging them from the
database costs a query and a merge per record. The cache keeps recently read or written records'
states (least recently used out, bounded in bytes) and is kept exact by the storage that owns
it, under the rules of :class:`StateCache`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from crdt_sync.yjs.merge import merge

log = logging.getLogger(__name__)

#: Default memory budget of :class:`StateCache` (``crdt-sync serve --state-cache-mb``).
DEFAULT_STATE_CACHE_BYTES = 64 * 1024 * 1024
_CACHED_PARTS = 64  # most updates a cached state holds unmerged


class StateCache:
    """Merged record states kept in memory, least recently used out first, bounded in bytes.

    An entry is a list of Yjs updates whose merge is the record's committed state: the state
    read from the database (or, for a record the writer just created, its first updates), then
    the updates committed since (appended by the writer), merged lazily on the next read. Only
    the storage fills it, under rules that keep it exact:

    - the writer appends a committed update only to an entry that exists, and creates one only
      for a record its transaction found did not exist before;
    - a state read from the database becomes an entry only if no commit touched the record
      while that read was in flight (the read may predate the commit).

    Args:
        max_bytes: the budget; 0 disables the cache.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        # One merged state as bytes (not tracked by the garbage collector: a large cache adds
        # no work to its full collections), or a list of updates still to merge.
        self._entries: OrderedDict[tuple[str, str, str], bytes | list[bytes]] = OrderedDict()
        # per database read in flight: the records committed since it began
        self._reads: list[set[tuple[str, str, str]]] = []
        self._unmerged: dict[tuple[str, str, str], None] = {}  # entries that are lists

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: tuple[str, str, str]) -> bytes | None:
        """The record's merged state, or ``None`` if it is not cached."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        if isinstance(entry, bytes):
            return entry
        merged = merge(entry)
        self._entries[key] = merged
        self._unmerged.pop(key, None)
        self.size += len(merged) - _size(entry)
        self._evict()
        return merged

    def parts(self, key: tuple[str, str, str]) -> list[bytes] | None:
        """The record's cached updates (their merge is its state) without merging them or
        touching the LRU order; ``None`` if it is not cached."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        return [entry] if isinstance(entry, bytes) else list(entry)

    @property
    def unmerged(self) -> int:
        """Entries holding updates still to merge."""
        return len(self._unmerged)

    def merge_some(self, count: int, max_entry_bytes: int) -> int:
        """Merge up to ``count`` entries with updates still to merge, oldest first.

        The storage calls this between other work on the event loop, so that a catch-up
        reading recently changed records finds them merged. Entries over ``max_entry_bytes``
        are left to be merged when read (their merge would hold the loop too long).

        Returns:
            How many entries still wait.
        """
        unmerged = self._unmerged
        while unmerged and count > 0:
            key = next(iter(unmerged))
            del unmerged[key]
            entry = self._entries.get(key)
            if entry is None or isinstance(entry, bytes) or _size(entry) > max_entry_bytes:
                continue
            count -= 1
            try:
                merged = merge(entry)
            except Exception:  # stored but not mergeable: a read reports it
                log.debug("could not merge the cached state of %s", key, exc_info=True)
                continue
            self._entries[key] = merged  # same position in the LRU order
            self.size += len(merged) - _size(entry)
        return len(unmerged)

    def committed(self, key: tuple[str, str, str], update: bytes) -> None:
        """The writer committed ``update`` to the record."""
        for touched in self._reads:
            touched.add(key)
        entry = self._entries.get(key)
        if entry is None:
            return
        if isinstance(entry, bytes):
            self._entries[key] = [entry, update]
        elif len(entry) >= _CACHED_PARTS:
            # Written often, not merged: drop it rather than merge on the commit path (the
            # next read merges the compacted database rows, a bounded merge too).
            del self._entries[key]
            self._unmerged.pop(key, None)
            self.size -= _size(entry)
            return
        else:
            entry.append(update)
        self._unmerged[key] = None
        self.size += len(update)
        self._evict()

    def created(self, key: tuple[str, str, str], updates: list[bytes]) -> None:
        """The writer committed the first updates of a record that did not exist before."""
        for touched in self._reads:
            touched.add(key)
        if key in self._entries:  # a read already saw this commit: the updates merge again
            for update in updates:
                self.committed(key, update)
            return
        if not self.max_bytes or len(updates) > _CACHED_PARTS:
            return
        if len(updates) == 1:
            self._entries[key] = updates[0]
        else:
            self._entries[key] = list(updates)
            self._unmerged[key] = None
        self.size += _size(updates)
        self._evict()

    def removed(self, key: tuple[str, str, str]) -> None:
        """The record's rows were removed (a purged tombstone): forget its state, and make
        a read in flight not cache what it read of it."""
        for touched in self._reads:
            touched.add(key)
        entry = self._entries.pop(key, None)
        self._unmerged.pop(key, None)
        if entry is not None:
            self.size -= _size(entry)

    def read_started(self) -> set[tuple[str, str, str]]:
        """A database read of states begins; pass the token to :meth:`read_done`, always."""
        token: set[tuple[str, str, str]] = set()
        self._reads.append(token)
        return token

    def read_done(
        self, token: set[tuple[str, str, str]], states: dict[tuple[str, str, str], bytes]
    ) -> None:
        """A database read ended: cache what it read, except records committed meanwhile."""
        self._reads = [t for t in self._reads if t is not token]
        if self.max_bytes:
            for key, state in states.items():
                if key not in token and key not in self._entries:
                    self._entries[key] = state
                    self.size += len(state)
            self._evict()

    def _evict(self) -> None:
        while self.size > self.max_bytes and self._entries:
            key, entry = self._entries.popitem(last=False)
            self._unmerged.pop(key, None)
            self.size -= _size(entry)


def _size(entry: bytes | list[bytes]) -> int:
    return len(entry) if isinstance(entry, bytes) else sum(len(p) for p in entry)
