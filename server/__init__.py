"""The crdt-sync relay server (installed as ``crdt_sync.server``).

Run it with ``crdt-sync serve`` (see ``docs/relay.md``). The pieces an app plugs in:

- :class:`Grant`, :data:`Verifier`, :func:`mint`, :func:`verify`: tokens (``--verifier``);
- :class:`UpdateRejected`, :data:`Validator`: validation hooks (``--validator``);
- :class:`Relay`, :class:`RelayConfig`: embedding the relay in a program;
- :class:`RelayStorage`, :class:`SQLiteRelayStorage`: the storage seam.
"""

from __future__ import annotations

from .relay import Relay, RelayConfig, serve_until_signalled
from .storage import RelayStorage, SQLiteRelayStorage
from .tokens import Grant, Verifier, mint, secret_verifier, verify
from .validation import UpdateRejected, Validator

__all__ = [
    "Grant",
    "Relay",
    "RelayConfig",
    "RelayStorage",
    "SQLiteRelayStorage",
    "UpdateRejected",
    "Validator",
    "Verifier",
    "mint",
    "secret_verifier",
    "serve_until_signalled",
    "verify",
]
