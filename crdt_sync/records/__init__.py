"""Records: the data model of crdt-sync, pure (pycrdt documents in memory, no I/O).

One record is one pycrdt document in record layout v2 (docs/records.md):

- :mod:`~crdt_sync.records.record`: ``Record`` (a read-only snapshot) and the editors;
- :mod:`~crdt_sync.records.layout`: slots, what each shows, conflicts, the writer's rules;
- :mod:`~crdt_sync.records.lww`: register entries and the LWW policy;
- :mod:`~crdt_sync.records.clock`: the hybrid logical clock;
- :mod:`~crdt_sync.records.text`: text fields addressed by character;
- :mod:`~crdt_sync.records.values`: plain values in and out of documents;
- :mod:`~crdt_sync.records.rollback`: taking back one refused update.
"""

from __future__ import annotations

from .clock import HybridClock as HybridClock
from .clock import Timestamp as Timestamp
from .layout import Conflict as Conflict
from .layout import read_fields as read_fields
from .lww import LwwPolicy as LwwPolicy
from .record import ArrayEditor as ArrayEditor
from .record import LegacyMapEditor as LegacyMapEditor
from .record import MapEditor as MapEditor
from .record import Record as Record
from .record import RecordEditor as RecordEditor
from .text import TextField as TextField
