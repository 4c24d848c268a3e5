"""The optional last-write-wins (LWW) field layer. Pure: works on a pycrdt ``Map``, no I/O.

Encoding (``docs/lww.md``): every LWW write is one entry of the document's root map ``"lww"``,
keyed by the write's HLC timestamp (:meth:`Timestamp.encode`, unique per write)::

    lww["<timestamp>"] = {"f": field, "v": value, "b": "<timestamp it overwrote>" | None}
    lww["<timestamp>"] = {"f": field, "d": True, "b": ...}          # the field was deleted

Because keys are unique, concurrent writes never overwrite each other inside the CRDT: every
replica ends up with the same set of entries and picks, per field, the entry with the greatest
timestamp. A writer removes the entries of that field it has seen (all smaller than its own),
so the map holds about one entry per field. ``b`` (the base) records which write the author
saw. Since every writer removes the entries it saw, an entry that is still present beside a
greater one was not seen by the winner's author: it is a concurrent write that lost (a
conflict), until the next write of the field removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pycrdt import Map

from .clock import Timestamp
from .errors import InvalidEdit

#: Name of the document's root map that holds LWW entries.
LWW_ROOT = "lww"


@dataclass(frozen=True, slots=True)
class LwwEntry:
    """One LWW write as stored in the document."""

    field: str
    ts: Timestamp
    value: Any
    deleted: bool
    base: Timestamp | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A concurrent LWW write that lost: ``lost`` was overwritten by ``won``."""

    field: str
    lost: LwwEntry
    won: LwwEntry

    def describe(self) -> str:
        """A sentence an app can show: what lost, to what, from which replica, and when.

        For example ``status: value 'open' from replica tech-17 was overwritten by 'closed'
        from replica office at 2026-11-23T09:15:00.000Z``. The time is the winner's HLC
        physical time, in UTC.
        """
        lost = "a deletion" if self.lost.deleted else repr(self.lost.value)
        won = "a deletion" if self.won.deleted else repr(self.won.value)
        return (
            f"{self.field}: value {lost} from replica {self.lost.ts.replica} was overwritten by "
            f"{won} from replica {self.won.ts.replica} at {_utc(self.won.ts.ms)}"
        )


class LwwPolicy:
    """Which collections and fields use last-write-wins.

    Args:
        declarations: collection name -> ``"*"`` (every top-level field of its records) or an
            iterable of field names. Collections not named keep plain CRDT semantics.
    """

    def __init__(self, declarations: Mapping[str, str | Iterable[str]] | None = None) -> None:
        self._all: set[str] = set()
        self._fields: dict[str, frozenset[str]] = {}
        for collection, fields in (declarations or {}).items():
            if fields == "*":
                self._all.add(collection)
            elif isinstance(fields, str):
                raise InvalidEdit(
                    f"LWW declaration for {collection!r} must be '*' or a list of field names"
                )
            else:
                self._fields[collection] = frozenset(fields)

    def is_lww(self, collection: str, field: str) -> bool:
        """Whether writes to ``field`` of records in ``collection`` are last-write-wins."""
        return collection in self._all or field in self._fields.get(collection, ())

    def covers(self, collection: str) -> bool:
        """Whether any field of ``collection`` is last-write-wins."""
        return collection in self._all or collection in self._fields


def entries(lww: Map[Any]) -> Iterator[LwwEntry]:
    """Every well-formed entry of an ``lww`` root map. Malformed entries are skipped."""
    for key, raw in lww.items():
        entry = _parse(key, raw)
        if entry is not None:
            yield entry


def winners(lww: Map[Any]) -> dict[str, LwwEntry]:
    """The winning (greatest-timestamp) entry of each field."""
    best: dict[str, LwwEntry] = {}
    for entry in entries(lww):
        current = best.get(entry.field)
        if current is None or entry.ts > current.ts:
            best[entry.field] = entry
    return best


def values(lww: Map[Any]) -> dict[str, Any]:
    """The current value of each LWW field, without deleted fields."""
    return {f: e.value for f, e in winners(lww).items() if not e.deleted}


def write(
    lww: Map[Any], field: str, ts: Timestamp, value: Any = None, *, deleted: bool = False
) -> LwwEntry:
    """Record a write of ``value`` (or a deletion) to ``field`` at ``ts``, inside a transaction.

    ``ts`` must be greater than the field's current winner (use :meth:`HybridClock.after`)
    and must not be the key of an entry already present (of any field): raises
    :class:`InvalidEdit` otherwise. Entries of the same field (all smaller) are removed.
    """
    seen = [e for e in entries(lww) if e.field == field]
    base = max((e.ts for e in seen), default=None)
    if base is not None and ts <= base:
        raise InvalidEdit(f"LWW write to {field!r} at {ts} does not follow the current {base}")
    if ts.encode() in lww:
        raise InvalidEdit(f"LWW write to {field!r}: timestamp {ts} is already used")
    raw: dict[str, Any] = {"f": field, "b": base.encode() if base else None}
    if deleted:
        raw["d"] = True
    else:
        raw["v"] = value
    lww[ts.encode()] = raw
    for old in seen:
        del lww[old.ts.encode()]
    return LwwEntry(field, ts, None if deleted else value, deleted, base)


def conflicts(lww: Map[Any]) -> list[Conflict]:
    """Concurrent writes that lost, each with the entry it lost to, ordered by field then time.

    Every writer removes the entries of the field it saw, so an entry still present beside a
    greater one was not seen by the winner's author (nor did its own author see the winner,
    or its timestamp would be greater): the two were concurrent. The next write of the field
    removes the losers, which resolves the conflict.
    """
    best = winners(lww)
    found = [
        Conflict(entry.field, entry, best[entry.field])
        for entry in entries(lww)
        if entry.ts != best[entry.field].ts
    ]
    found.sort(key=lambda c: (c.field, c.lost.ts))
    return found


def _utc(ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(key: str, raw: Any) -> LwwEntry | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("f"), str):
        return None
    try:
        ts = Timestamp.decode(key)
        base_raw = raw.get("b")
        base = Timestamp.decode(base_raw) if isinstance(base_raw, str) else None
    except InvalidEdit:
        return None
    deleted = raw.get("d") is True
    return LwwEntry(raw["f"], ts, None if deleted else raw.get("v"), deleted, base)
