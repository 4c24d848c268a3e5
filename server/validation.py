"""Server-side validation hooks: an app's veto over pushed updates.

A validator is a Python callable the relay runs on every pushed update that passed
authorization, before it is stored::

    def validate(collection, record_id, update, current_state, grant) -> None: ...

``update`` is the pushed Yjs v1 update, ``current_state`` the record's merged state as the
relay last committed it (``None`` for a new record) and ``grant`` the pusher's
:class:`~crdt_sync.server.tokens.Grant`. To refuse, raise :class:`UpdateRejected` with a reason
the replica can show: the entry is answered with ``reject [seq, "rejected", reason]`` and the
rest of the push is unaffected. Returning (or returning an awaitable that completes) accepts.
Any other exception also rejects the entry (code ``rejected``, reason withheld) and is logged.

Entries of one push are validated in order, each against the state committed before the push;
an app needing to see its own earlier entries should decode ``update`` alone.
The relay loads one with ``--validator module:function``.

Before the hook, the relay refuses an update that depends on updates it does not have (an
earlier update of the same record was refused, or has not reached it): ``reject [seq,
"blocked", reason]``, never stored (:class:`UpdateBlocked`; the hook is not run). Such an
update could not integrate anywhere until its dependency arrives.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from crdt_sync.errors import UpdateBlocked as UpdateBlocked
from crdt_sync.errors import UpdateRejected as UpdateRejected

from .tokens import Grant

Validator = Callable[[str, str, bytes, "bytes | None", Grant], "Awaitable[None] | None"]
"""``validate(collection, record_id, update, current_state, grant)``; raise to refuse."""


def load_object(spec: str) -> Any:
    """Import ``module:attribute`` (``attribute`` may be dotted) and return it.

    Raises:
        ValueError: ``spec`` is not ``module:attribute`` or the attribute is not callable.
        ImportError: the module cannot be imported.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected module:function, got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec} is not callable")
    return obj
