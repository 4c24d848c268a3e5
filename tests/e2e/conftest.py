"""Fixtures of the end-to-end tests: real relay processes on 127.0.0.1 (tests/helpers/relay.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.relay import RelayProcess, start_relay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """A fresh relay process (own data dir) for one test; killed after it."""
    process = start_relay(tmp_path / "relay-data")
    yield process
    process.kill()
