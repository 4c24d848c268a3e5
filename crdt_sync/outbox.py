"""Outbox entries: local edits waiting to be uploaded, in the order they were made."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class OutboxStatus(enum.StrEnum):
    """Where an outbox entry stands."""

    QUEUED = "queued"
    """Waiting to be uploaded."""
    UPLOADING = "uploading"
    """Sent to the relay, not yet acknowledged."""
    ERROR = "error"
    """Refused by the relay (``error_code``/``error_reason``); waits for resolve or discard."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One local edit of one record, waiting for the relay's acknowledgement.

    ``seq`` orders entries across the whole replica (the order the edits were made).
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
