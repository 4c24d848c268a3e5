"""Fixtures of the end-to-end tests: real relay processes on 127.0.0.1 (tests/helpers/relay.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import RelayProcess, start_relay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """A fresh relay process (own data dir) for one test; killed after it."""
    process = start_relay(tmp_path / "relay-data")
    yield process
    process.kill()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    """Start relays on demand (``factory(name="data", **start_relay_kwargs)``); killed after."""
    started: list[RelayProcess] = []

    def factory(name: str = "relay-data", **kwargs: Any) -> RelayProcess:
        process = start_relay(tmp_path / name, **kwargs)
        started.append(process)
        return process

    yield factory
    for process in started:
        process.kill()
