"""Shared test configuration, and the ``relay_factory`` fixture (relay processes started on
demand, killed after the test) used by the relay and end-to-end tests.

This file being here (outside any package) makes pytest put ``tests/`` on ``sys.path``, so
tests import their helpers as ``from helpers.protocol_pair import ProtocolPair``. The tests
directories are deliberately not packages: putting the repository root on ``sys.path`` would
make ``crdt_sync`` resolve to the source folder, where ``crdt_sync.server`` and
``crdt_sync.client`` do not exist (they are mapped from ``server/`` and ``client/`` only in
the installed package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import RelayProcess, start_relay


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    """Start relays on demand (``factory(name="data", **start_relay_kwargs)``); killed after."""
    started: list[RelayProcess] = []

    def factory(name: str = "data", **kwargs: Any) -> RelayProcess:
        process = start_relay(tmp_path / name, **kwargs)
        started.append(process)
        return process

    yield factory
    for process in started:
        process.kill()
