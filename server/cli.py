"""``crdt-sync`` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crdt-sync`` console script."""
    print("crdt-sync: the relay server is not built yet (see issue 4)", file=sys.stderr)
    return 2
