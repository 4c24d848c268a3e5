"""Outbox entries: local edits waiting to be uploaded, in the order they were made.

Entries of one record go up in order, and the relay takes an entry only once it has the earlier
entries of its record: Yjs updates of one client form a contiguous sequence, so a later update
of a record builds on the earlier ones and cannot be integrated without them.
While an entry is in error, the later entries of its record wait (``held_by``); the relay
itself refuses an update whose dependencies it does not have (code ``blocked``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class OutboxStatus(enum.StrEnum):
    """Where an outbox entry stands."""

    QUEUED = "queued"
    """Waiting to be uploaded. If ``held_by`` is set, it waits for that earlier entry of its
    record (in error) to be resolved or discarded; ``error_code == "blocked"`` says the relay
    refused its last upload because an earlier update of the record was missing there."""
    UPLOADING = "uploading"
    """Sent to the relay, not yet acknowledged."""
    ERROR = "error"
    """Refused by the relay (``error_code``/``error_reason``); waits for resolve or discard."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One local edit of one record, waiting for the relay's acknowledgement.

    ``seq`` orders entries across the whole replica (the order the edits were made).
    ``error_code``/``error_reason``: why the relay refused it (status ``error``), or why its last
    upload was refused as ``blocked`` (status ``queued``: it waits, it is not an error).
    ``held_by``: the seq of an earlier entry of the same record in error; this entry is not
    uploaded before that one is resolved or discarded.
    """

    seq: int
    collection: str
    record_id: str
    status: OutboxStatus
    created_at: float
    update: bytes = field(repr=False)
    attempts: int = 0
    error_code: str | None = None
    error_reason: str | None = None
    held_by: int | None = None
