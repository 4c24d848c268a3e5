"""What the relay has of each record, as Yjs state vectors: the input of its dependency check.

The relay stores an update only if everything it builds on is the relay's (docs/relay.md,
"Dependencies first"). :class:`RecordClocks` keeps, per record, the state vector of what the
relay has *or will have once the writes in flight commit*:

- loaded once from the record's committed state (:meth:`RecordClocks.load`), extended by the
  updates accepted and not yet committed at that point (those the caller saw before reading the
  state, which may have been committed since, and those now);
- extended by every update the relay accepts (:meth:`RecordClocks.accept`), before its commit:
  the group commit stores writes in submission order, so an update accepted on top of it is
  stored after it (or fails with it);
- forgotten when a commit fails (:meth:`RecordClocks.settled`), to be loaded again from what was
  committed.

A vector only ever claims clocks the relay has or is committing, so an update it says is
integrable is. Bounded: the least recently used records are forgotten and loaded again when
needed. Pure bookkeeping: the relay reads the states.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable

from pycrdt import get_state

from crdt_sync.yjs.updates import UpdateClocks, decode_state_vector

RecordKey = tuple[str, str, str]
"""``(tenant, collection, record_id)``."""

#: Records whose state vector is kept at most (a few dozen bytes each).
DEFAULT_MAX_RECORDS = 65_536


class RecordClocks:
    """Per record, the clocks the relay has or is committing (see the module docstring)."""

    def __init__(self, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.max_records = max_records
        self._vectors: OrderedDict[RecordKey, dict[int, int]] = OrderedDict()
        self._uncommitted: dict[RecordKey, deque[UpdateClocks]] = {}

    def get(self, key: RecordKey) -> dict[int, int] | None:
        """The record's state vector if it is loaded (the caller may extend it), else None."""
        vector = self._vectors.get(key)
        if vector is not None:
            self._vectors.move_to_end(key)
        return vector

    def uncommitted(self, key: RecordKey) -> tuple[UpdateClocks, ...]:
        """The record's updates accepted and not yet committed (take it before reading the
        committed state, and give it to :meth:`load`)."""
        return tuple(self._uncommitted.get(key, ()))

    def load(
        self, key: RecordKey, state: bytes | None, before: Iterable[UpdateClocks]
    ) -> dict[int, int]:
        """The record's state vector from its committed ``state`` (None: no record), plus the
        updates accepted and not yet committed: ``before`` (when the state was read) and now.
        A vector loaded meanwhile by another caller is kept and returned."""
        vector = self.get(key)
        if vector is not None:
            return vector
        vector = decode_state_vector(get_state(state)) if state is not None else {}
        for clocks in (*before, *self._uncommitted.get(key, ())):
            clocks.extend(vector)
        self._vectors[key] = vector
        while len(self._vectors) > self.max_records:
            self._vectors.popitem(last=False)
        return vector

    def forget(self, keys: Iterable[RecordKey]) -> None:
        """These records are gone (purged): drop their vectors."""
        for key in keys:
            self._vectors.pop(key, None)

    def accept(self, key: RecordKey, clocks: UpdateClocks) -> None:
        """An update of the record was accepted (submitted to the group commit): its clocks
        count as the relay's until :meth:`settled`."""
        self._uncommitted.setdefault(key, deque()).append(clocks)
        vector = self._vectors.get(key)
        if vector is not None:
            clocks.extend(vector)

    def settled(self, key: RecordKey, clocks: UpdateClocks, *, stored: bool) -> None:
        """The commit of an accepted update completed: ``stored``, or failed (then the record's
        vector, which counted it, is forgotten)."""
        pending = self._uncommitted.get(key)
        if pending:
            if pending[0] is clocks:  # commits complete in submission order
                pending.popleft()
            else:
                for index, other in enumerate(pending):
                    if other is clocks:
                        del pending[index]
                        break
            if not pending:
                del self._uncommitted[key]
        if not stored:
            self._vectors.pop(key, None)
