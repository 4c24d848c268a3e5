"""Edits that become durable together: the bookkeeping behind ``LocalStore.batch()``.

Inside a batch an edit returns as soon as it is applied in memory and queued for its group
commit, instead of waiting for that commit; the batch's exit waits for every one of them. An
import or a bulk change then goes at the speed of the group commit, not of one commit round
trip per edit, and is still durable (or says which records' edits failed) when the block exits.

The batch is found through a context variable, so edits made by tasks started inside the
block join it too (until it exits; later ones wait for their own commit again).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["EditBatch", "Settled", "current", "enter", "leave"]

_CURRENT: ContextVar[EditBatch | None] = ContextVar("crdt_sync_edit_batch", default=None)


class EditBatch:
    """The commits of the edits made in one batch block of one store."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.closed = False
        self._pending: list[tuple[asyncio.Future[Any], tuple[str, str]]] = []

    def add(self, committed: asyncio.Future[Any], key: tuple[str, str]) -> None:
        """An edit of record ``key`` was queued for this commit."""
        self._pending.append((committed, key))

    async def settle(self) -> Settled:
        """Close the batch and wait for every commit of its edits.

        A cancelled wait leaves the commits running (they are not the waiter's to cancel).
        """
        self.closed = True
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.wait([committed for committed, _ in pending])
        failed: dict[tuple[str, str], None] = {}
        first: BaseException | None = None
        for committed, key in pending:
            if committed.cancelled():
                error: BaseException | None = asyncio.CancelledError(
                    "the edit's commit was cancelled (store closed?)"
                )
            else:
                error = committed.exception()
            if error is not None:
                failed[key] = None
                first = first or error
        return Settled(len(pending), list(failed), first)


@dataclass(frozen=True)
class Settled:
    """How the edits of a batch ended: how many, the records of those that failed (in
    order, each once), and the first failure."""

    edits: int
    failed: list[tuple[str, str]]
    first: BaseException | None


def current(owner: object) -> EditBatch | None:
    """The open batch of ``owner`` (a store) in this context, if any."""
    batch = _CURRENT.get()
    if batch is None or batch.owner is not owner or batch.closed:
        return None
    return batch


def enter(owner: object) -> tuple[EditBatch, object]:
    """Open a batch of ``owner`` in this context; pass the token to :func:`leave`."""
    batch = EditBatch(owner)
    return batch, _CURRENT.set(batch)


def leave(token: object) -> None:
    """Restore the context as it was before :func:`enter`."""
    _CURRENT.reset(token)  # type: ignore[arg-type]
