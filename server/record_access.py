"""Record-level access: a grant's per-collection filter, applied to records' indexed fields.

A token may restrict a collection to the records matching a filter (``Grant.scopes``, e.g.
``assigned_to = <the token's "sub" claim>``). The relay enforces it on every read and write,
whatever the endpoint:

- **reads**: a native catch-up lists, and live fan-out sends, only records inside the scope
  (``crdt_sync.subscriptions.Selection`` carries it); a ``sv`` for a record outside gets no
  diff; a Yjs or Hocuspocus client cannot open a record outside it, and a record that leaves
  it is no longer sent to the ones that had it open;
- **writes** (:func:`write_refusal`): an update of a record outside the scope, or one after
  which the record would be outside it, is refused with code ``forbidden``
  (:class:`~crdt_sync.errors.UpdateForbidden`). A new record must match once written.

Fields are judged as the relay indexes them (:mod:`crdt_sync.server.record_fields`): the
committed state, plus the updates of the same push admitted before.
"""

from __future__ import annotations

import datetime as dt

from crdt_sync.query import Filter, matches, resolve
from crdt_sync.subscriptions import Selection, Subscription

from .storage import IndexedFields
from .tokens import Grant


def resolved_scope(grant: Grant, collection: str, now: dt.datetime) -> Filter | None:
    """The grant's filter on ``collection`` resolved at ``now`` (None: the whole collection)."""
    scope = grant.scope(collection)
    return None if scope is None else resolve(scope, now=now, claims=grant.claims)


def selection_for(
    grant: Grant, collection: str, subscriptions: tuple[Subscription, ...] | None
) -> Selection:
    """What a native replica receives of ``collection``: its subscriptions there (the whole
    collection without any) within the grant's scope; windows and claims not resolved yet."""
    subs = subscriptions if subscriptions is not None else ()
    if not any(s.collection == collection for s in subs):
        subs = (Subscription(collection),)
    return Selection.of(collection, subs, grant.scope(collection))


def readable(scope: Filter | None, fields: IndexedFields | None) -> bool:
    """Whether a record with these indexed ``fields`` (None: it does not exist yet) may be
    read under the resolved ``scope``."""
    return scope is None or fields is None or matches(scope, fields)


def write_refusal(
    scope: Filter | None, before: IndexedFields | None, after: IndexedFields
) -> str | None:
    """Why an update taking a record from ``before`` (None: new) to ``after`` is refused under
    the resolved ``scope``, or None if it is allowed."""
    if scope is None:
        return None
    if before is not None and not matches(scope, before):
        return "the record is outside this token's access"
    if not matches(scope, after):
        return "this change would move the record outside this token's access"
    return None
