"""Helpers for tests that run real replicas against a real relay.

``open_replica`` opens a :class:`~crdt_sync.client.Replica` with test-friendly timings;
``until`` waits (under a timeout, never a fixed sleep) for an async condition, re-checking it
whenever one of the given replicas reports a record change or a status change;
``snapshot`` reads every record of some collections as plain dicts, to compare replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from crdt_sync.client import Replica

from helpers.relay import RelayProcess

WAIT = 30.0


def replica_options(**overrides: Any) -> dict[str, Any]:
    """Options of ``Replica.open`` for tests: short backoff and heartbeat."""
    options: dict[str, Any] = {
        "heartbeat_interval": 0.5,
        "dead_after": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "open_timeout": 5.0,
    }
    options.update(overrides)
    return options


def open_replica(
    tmp_path: Path,
    name: str,
    relay: RelayProcess | str,
    *,
    tenant: str = "acme",
    collections: Sequence[str] | None = ("jobs", "contacts"),
    url: str | None = None,
    **overrides: Any,
) -> Any:
    """``Replica.open`` on ``tmp_path / f"{name}.db"`` with a token for ``tenant``
    (``collections=None``: pass ``subscriptions`` and a ``token``)."""
    if isinstance(relay, RelayProcess):
        token: Any = overrides.pop("token", None) or relay.token(tenant, collections or ())
        target = url or relay.url
    else:
        token = overrides.pop("token")
        target = url or relay
    return Replica.open(
        tmp_path / f"{name}.db",
        url=target,
        token=token,
        collections=list(collections) if collections is not None else None,
        replica_id=name,
        **replica_options(**overrides),
    )


async def until(
    condition: Callable[[], Awaitable[bool]],
    replicas: Iterable[Replica],
    within: float = WAIT,
    what: str = "condition",
) -> None:
    """Wait until ``await condition()`` is true; re-check on every change of ``replicas``.

    Raises:
        AssertionError: not true in time.
    """
    changed = asyncio.Event()
    unsubscribe = []
    for replica in replicas:
        unsubscribe.append(replica.on_change(lambda _c: changed.set()))
        unsubscribe.append(replica.status.subscribe(lambda _s: changed.set()))
    try:
        async with asyncio.timeout(within):
            while True:
                changed.clear()
                if await condition():
                    return
                await changed.wait()
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None
    finally:
        for stop in unsubscribe:
            stop()


async def snapshot(replica: Replica, collections: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every record of ``collections`` as ``{"collection/id": fields}``."""
    result: dict[str, dict[str, Any]] = {}
    for collection in collections:
        for record in await replica.store.records(collection):
            result[f"{collection}/{record.id}"] = dict(record.fields)
    return result


async def converged(replicas: Sequence[Replica], collections: Iterable[str]) -> bool:
    """Whether every replica holds the same records with the same fields."""
    names = list(collections)
    first = await snapshot(replicas[0], names)
    for other in replicas[1:]:
        if await snapshot(other, names) != first:
            return False
    return True
