"""crdt-sync: offline-first replication of CRDT records (pycrdt/Yjs) through a relay."""

from __future__ import annotations

from .clock import HybridClock as HybridClock
from .clock import Timestamp as Timestamp
from .errors import AuthError as AuthError
from .errors import BatchError as BatchError
from .errors import ConnectionClosed as ConnectionClosed
from .errors import CorruptStoreError as CorruptStoreError
from .errors import CrdtSyncError as CrdtSyncError
from .errors import InvalidEdit as InvalidEdit
from .errors import InvalidMessage as InvalidMessage
from .errors import InvalidState as InvalidState
from .errors import MessageTooBig as MessageTooBig
from .errors import OfflineError as OfflineError
from .errors import OutboxError as OutboxError
from .errors import ProtocolError as ProtocolError
from .errors import RecordNotFound as RecordNotFound
from .errors import SchemaVersionError as SchemaVersionError
from .errors import StoreError as StoreError
from .errors import UnsupportedVersion as UnsupportedVersion
from .layout import Conflict as Conflict
from .lww import LwwPolicy as LwwPolicy
from .outbox import OutboxEntry as OutboxEntry
from .outbox import OutboxStatus as OutboxStatus
from .record import ArrayEditor as ArrayEditor
from .record import MapEditor as MapEditor
from .record import Record as Record
from .record import RecordEditor as RecordEditor
from .store.sqlite import ConflictLogEntry as ConflictLogEntry
from .store.sqlite import LocalStore as LocalStore
from .store.sqlite import Outbox as Outbox
from .store.sqlite import RemoteUpdate as RemoteUpdate
from .text import TextField as TextField

__version__ = "0.1.0"
