"""The crdt-sync client runtime (installed as ``crdt_sync.client``).

:class:`Replica` is the entry point: a local store that syncs itself through a relay.
"""

from __future__ import annotations

from crdt_sync.subscriptions import Subscription as Subscription

from .replica import RecordChange as RecordChange
from .replica import Replica as Replica
from .replica import TokenProvider as TokenProvider
from .session import SessionState as SessionState
from .status import Progress as Progress
from .status import Status as Status
