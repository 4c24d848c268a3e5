"""Relay-process fixtures for the relay tests (helpers live in ``tests/helpers/relay.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import RelayProcess, start_relay


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay process shared by a test module (tests use distinct tenants or records)."""
    process = start_relay(tmp_path_factory.mktemp("relay") / "data")
    yield process
    process.kill()


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
