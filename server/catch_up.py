"""What a native replica's catch-up sends, subscriptions and record-level access included.

A ``sub`` names collections, optionally narrowed by subscriptions (ids, queries, rolling
windows), and the token may restrict collections to records (``Grant.scopes``). Per
collection this gives a :class:`~crdt_sync.subscriptions.Selection`; a collection whose
selection is everything (no subscription narrows it, no scope) is caught up as before: the
records changed by others since the cursor. For a filtered one the relay evaluates the
selection with indexed queries (``RelayStorage.members``), at its own clock (windows in the
subscription's time zone), and sends (``crdt_sync.subscriptions.plan_catch_up``):

- in ``changed``: the records held now that others changed since the cursor, and those that
  entered the selection since the last catch-up (a window moved onto them, or a field changed);
- in ``drop`` (before ``changed``): the records changed since the cursor, by anyone, that are
  not held now, and those the previous evaluation held (at ``since``, the ``at`` the replica
  got with its cursor) that are not held now.

With no cursor (first sync, or the replica's subscriptions changed) it lists every record
held now, and the replica drops by itself what it keeps of those collections that is not
listed (docs/protocol.md, "Subscriptions"). The selections, resolved now, also filter the
connection's live fan-out until its next catch-up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from crdt_sync.subscriptions import Selection, Subscription, plan_catch_up

from .record_access import selection_for
from .storage import RecordKey, RelayStorage
from .tokens import Grant


@dataclass(slots=True)
class CatchUp:
    """The answer to one ``sub``.

    Attributes:
        changed: records to list in ``changed`` (sorted).
        dropped: records to send in ``drop`` (sorted).
        live: per filtered collection, the selection resolved now (for the live fan-out).
        at: when the selections were evaluated (Unix ms; ``synced`` carries it).
    """

    changed: list[RecordKey] = field(default_factory=list)
    dropped: list[RecordKey] = field(default_factory=list)
    live: dict[str, Selection] = field(default_factory=dict)
    at: int = 0


def epoch_ms(moment: dt.datetime) -> int:
    """``moment`` as Unix milliseconds."""
    return int(moment.timestamp() * 1000)


async def catch_up(
    storage: RelayStorage,
    grant: Grant,
    replica: str,
    collections: tuple[str, ...],
    cursor: int | None,
    subscriptions: tuple[Subscription, ...] | None,
    since: int | None,
    now: dt.datetime,
) -> CatchUp:
    """Evaluate a ``sub`` (see the module docstring).

    Raises:
        InvalidQuery: a grant filter needs a claim the token does not carry.
    """
    tenant = grant.tenant
    result = CatchUp(at=epoch_ms(now))
    selections = {c: selection_for(grant, c, subscriptions) for c in collections}
    filtered = {c: s for c, s in selections.items() if s.filtered}
    result.live = {c: s.resolve(now, grant.claims) for c, s in filtered.items()}
    plain = [c for c in collections if c not in filtered]
    if plain:
        result.changed += await storage.changed_since(tenant, plain, cursor, replica)
    before_time = now if since is None else dt.datetime.fromtimestamp(since / 1000, dt.UTC)
    for collection, selection in filtered.items():
        current = result.live[collection]
        now_members = await storage.members(tenant, current)
        if cursor is None:
            plan = plan_catch_up(
                now_members=now_members,
                before_members=None,
                changed_by_others=set(),
                changed_by_anyone=set(),
            )
        else:
            others = await storage.changed_since(tenant, [collection], cursor, replica)
            anyone = await storage.changed_since(tenant, [collection], cursor, None)
            before = now_members
            if selection.timed and before_time != now:
                previous = selection.resolve(before_time, grant.claims)
                if previous != current:
                    before = await storage.members(tenant, previous)
            plan = plan_catch_up(
                now_members=now_members,
                before_members=before,
                changed_by_others={r for _, r in others},
                changed_by_anyone={r for _, r in anyone},
            )
        result.changed += [(collection, r) for r in sorted(plan.send)]
        result.dropped += [(collection, r) for r in sorted(plan.drop)]
    result.changed.sort()
    return result
