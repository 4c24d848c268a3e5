"""Every error crdt-sync raises on purpose.

The hierarchy::

    CrdtSyncError
    ├── InvalidState          an API called in a state that does not allow it (caller bug)
    ├── InvalidEdit           an edit that cannot be applied (bad position, unsupported value type)
    ├── RecordNotFound        no record with that collection and id in this store
    │   └── RecordDeleted         the record was deleted (a tombstone, docs/records.md)
    ├── InvalidQuery          a filter, query or index declaration that cannot be run
    ├── StoreError            the local store cannot be used; always names the file
    │   ├── SchemaVersionError    written by a newer crdt-sync
    │   ├── CorruptStoreError     not a crdt-sync store, or damaged
    │   ├── BatchError            edits of a ``batch()`` that could not be written
    │   └── UnsyncedChangesError  ``wipe()`` refused: changes not synced yet (how many)
    ├── OutboxError           an outbox operation that does not fit the entry's state
    ├── ProtocolError         the peer sent something the protocol does not allow
    │   ├── InvalidMessage        malformed frame
    │   ├── UnsupportedVersion    protocol version mismatch
    │   └── MessageTooBig         frame over the negotiated limit
    ├── ConnectionClosed      the sync connection ended (``code``, ``reason``)
    ├── AuthError             the relay refused the token (``code`` says why)
    ├── OfflineError          an online-only action was attempted while offline
    └── UpdateRejected        the relay refuses one pushed update (a validation hook says why)
        ├── UpdateBlocked         it depends on updates the relay does not have
        └── UpdateForbidden       the record is, or would move, outside the token's access

Any other exception escaping crdt-sync is a bug.
"""

from __future__ import annotations

from pathlib import Path


class CrdtSyncError(Exception):
    """Root of every error crdt-sync raises on purpose."""


class InvalidState(CrdtSyncError):
    """An API was used in a state that does not allow it (e.g. a closed store)."""


class InvalidEdit(CrdtSyncError):
    """An edit cannot be applied: a text position out of range, an unsupported value type..."""


class InvalidQuery(CrdtSyncError):
    """A filter, query, subscription or index declaration is malformed or cannot be run
    (an unknown operator, a field name that cannot be queried, an unknown time zone...)."""


class RecordNotFound(CrdtSyncError):
    """No record with this collection and id exists in the store."""

    def __init__(self, collection: str, record_id: str) -> None:
        self.collection = collection
        self.record_id = record_id
        super().__init__(f"no record {record_id!r} in collection {collection!r}")


class RecordDeleted(RecordNotFound):
    """The record was deleted: its tombstone says when and by which replica (``deleted_by``
    and ``deleted_at``, when known: a purged tombstone's may not be)."""

    def __init__(
        self,
        collection: str,
        record_id: str,
        deleted_by: str | None = None,
        deleted_at: str | None = None,
    ) -> None:
        super().__init__(collection, record_id)
        self.deleted_by = deleted_by
        self.deleted_at = deleted_at
        by = f" by replica {deleted_by}" if deleted_by else ""
        at = f" at {deleted_at}" if deleted_at else ""
        self.args = (f"record {record_id!r} of collection {collection!r} was deleted{by}{at}",)


class StoreError(CrdtSyncError):
    """The local store cannot be used. ``path`` names the file."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class SchemaVersionError(StoreError):
    """The store file was written by a newer crdt-sync (schema ``found`` > ``supported``)."""

    def __init__(self, path: str | Path, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            path,
            f"store schema version {found} is newer than this crdt-sync supports ({supported}); "
            "upgrade crdt-sync to open it",
        )


class CorruptStoreError(StoreError):
    """The file is not a crdt-sync store, or it is damaged."""


class BatchError(StoreError):
    """Edits of a ``batch()`` could not be written: ``failed`` lists their records, in order
    (each once). The batch's other edits are durable; ``__cause__`` is the first failure."""

    def __init__(
        self, path: str | Path, failed: list[tuple[str, str]], edits: int, first: BaseException
    ) -> None:
        self.failed = failed
        self.edits = edits
        names = ", ".join(f"{c}/{r}" for c, r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        super().__init__(
            path,
            f"edits of {len(failed)} record(s) of the batch ({edits} edits) could not be "
            f"written and were not kept: {names} ({first})",
        )


class UnsyncedChangesError(StoreError):
    """``wipe()`` refused: ``entries`` outbox entries of ``records`` records are not synced
    yet. Sync them first (or discard them), or pass ``force=True`` to lose them."""

    def __init__(self, path: str | Path, entries: int, records: int) -> None:
        self.entries = entries
        self.records = records
        super().__init__(
            path,
            f"{entries} unsynced change(s) in {records} record(s) would be lost: sync them "
            "first, or wipe(force=True) to delete them anyway",
        )


class OutboxError(CrdtSyncError):
    """An outbox operation does not fit the entry (unknown seq, wrong status)."""


class ProtocolError(CrdtSyncError):
    """The peer sent something the sync protocol does not allow."""


class InvalidMessage(ProtocolError):
    """A frame could not be decoded or has missing or ill-typed fields."""


class UnsupportedVersion(ProtocolError):
    """The peer speaks a protocol version we do not support."""


class MessageTooBig(ProtocolError):
    """A frame exceeds the size limit."""


class ConnectionClosed(CrdtSyncError):
    """The sync connection is closed; ``code`` and ``reason`` say why."""

    def __init__(self, code: str, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed ({code}){': ' + reason if reason else ''}")


class AuthError(CrdtSyncError):
    """The relay refused our credentials.

    ``code`` is ``bad_token``, ``token_expired`` or ``forbidden``.
    """

    def __init__(self, code: str, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"authentication failed ({code}){': ' + reason if reason else ''}")


class OfflineError(CrdtSyncError):
    """An action that needs the relay was attempted while offline."""


class UpdateRejected(CrdtSyncError):
    """Raised by a relay validation hook to refuse one pushed update; ``reason`` goes to the
    replica (``reject [seq, "rejected", reason]``)."""

    code = "rejected"
    """The reject code the replica gets."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UpdateBlocked(UpdateRejected):
    """The relay refuses an update that depends on updates it does not have (code
    ``blocked``): storing it would keep it pending, invisible, on the relay and on every
    replica. It is accepted once what it depends on has been stored."""

    code = "blocked"


class UpdateForbidden(UpdateRejected):
    """The relay refuses an update of a record outside the token's record-level access, or
    one that would move the record out of it (code ``forbidden``)."""

    code = "forbidden"
