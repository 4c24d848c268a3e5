"""Relay-process fixtures for the relay tests (helpers live in ``tests/helpers/relay.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.relay import RelayProcess, start_relay


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay process shared by a test module (tests use distinct tenants or records)."""
    process = start_relay(tmp_path_factory.mktemp("relay") / "data")
    yield process
    process.kill()
