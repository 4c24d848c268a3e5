"""Smoke test of benchmarks/bench_sync.py at tiny sizes, so the sync benchmark cannot rot.

Runs the benchmark's own workloads against a real relay process on 127.0.0.1 and checks that
what they measure is real: the receiving replica holds every edit, the catch-up brings every
remote change down and every local change up (and costs fewer frames than there are cached
records), the idle load holds its connections. The pycrdt-websocket side needs the benchmark's
peer venv (``benchmarks/.venv-peers``): under ``CI=true`` the test creates it, elsewhere it
runs only if the benchmark already did.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bs = _load("bench_sync")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Any]:
    server = bs.start_relay(tmp_path / "relay", durable=False)
    yield server
    server.stop()


@pytest.mark.asyncio
async def test_throughput_one_and_many_records_reach_the_other_replica(
    tmp_path: Path, relay: Any
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    one = await bs.ours_throughput(relay.url, tmp_path / "one", 1, 25, "one")
    assert one["complete"] is True
    assert one["edits"] == 25 and one["edits_per_s"] > 0
    assert one["seconds"] >= one["produce_seconds"] > 0
    many = await bs.ours_throughput(relay.url, tmp_path / "many", 4, 18, "many")
    assert many["complete"] is True
    assert many["records"] == 4
    for mode in ("tasks", "batch"):
        (tmp_path / mode).mkdir()
        result = await bs.ours_throughput(
            relay.url, tmp_path / mode, 3, 20, mode, tasks=mode == "tasks", batch=mode == "batch"
        )
        assert result["complete"] is True, mode


@pytest.mark.asyncio
async def test_relay_only_throughput_delivers_every_update(relay: Any) -> None:
    result = await bs.relay_only_throughput(relay.url, 30, "raw-test")
    assert result["complete"] is True
    assert result["edits"] == 30 and result["edits_per_s"] > 0


@pytest.mark.asyncio
async def test_relay_only_latency_samples_each_update_once(relay: Any) -> None:
    result = await bs.relay_only_latency(relay.url, 8, "raw-lat-test")
    assert result["complete"] is True
    assert len(result["samples"]) == 8
    assert all(0 < s < 30 for s in result["samples"])


@pytest.mark.asyncio
async def test_latency_samples_each_edit_once(tmp_path: Path, relay: Any) -> None:
    result = await bs.ours_latency(relay.url, tmp_path, 6, "lat-test")
    assert result["complete"] is True
    assert len(result["samples"]) == 6
    assert all(0 < s < 30 for s in result["samples"])


@pytest.mark.asyncio
async def test_catchup_moves_every_change_and_costs_what_changed(
    tmp_path: Path, relay: Any
) -> None:
    result = await bs.ours_catchup(relay, tmp_path, 60, [(4, 3), (10, 0), (0, 0)], 1)
    assert result.cached == 60
    assert [(r.remote, r.local) for r in result.runs] == [(4, 3), (10, 0), (0, 0)]
    for run in result.runs:
        assert run.complete, run
        assert run.frames < result.cached  # not one exchange per cached record
    *changed, unchanged = result.runs
    # Nothing changed: a handful of small frames, far less than listing 60 records would take.
    assert unchanged.frames <= 5 and 0 < unchanged.bytes < 600
    for run in changed:
        assert run.bytes > unchanged.bytes + 50 * (run.remote + run.local)


def test_idle_connections_are_held_and_measured(relay: Any) -> None:
    load = [
        sys.executable, str(BENCH_DIR / "bench_sync.py"), "_idle-load", "--url", relay.url,
        "--token", bs.token([bs.COLLECTION, bs.IDLE_COLLECTION]), "--count", "8",
    ]  # fmt: skip
    result = bs.measure_idle(relay, load, 8)
    assert result.held == 8
    assert result.rss_before > 0 and result.rss_after > 0


def test_metrics_parsing_percentiles_and_table() -> None:
    text = (
        "# HELP x\ncrdt_sync_bytes_in_total 10.0\n"
        'crdt_sync_frames_in_total{type="push"} 2.0\ncrdt_sync_frames_in_total{type="sv"} 3.0\n'
    )
    assert bs.parse_metrics(text) == {
        "crdt_sync_bytes_in_total": 10.0,
        "crdt_sync_frames_in_total": 5.0,
    }
    assert bs.percentile([5, 1, 4, 2, 3], 0.5) == 3
    assert bs.percentile(list(range(101)), 0.99) == 99
    config = bs.config_from(bs._parse(["--quick", "--no-peers"]))
    results: dict[str, Any] = {
        "ours": {
            "ours": {
                "throughput_one": [{"edits_per_s": 100.0, "complete": True}],
                "throughput_many": [{"edits_per_s": 50.0, "complete": True}],
                "latency": [{"samples": [0.002, 0.004], "complete": True}],
            }
        },
        "peer": {
            "peer_memory": {
                "throughput_one": [{"edits_per_s": 10.0, "complete": True}],
                "throughput_many": [{"edits_per_s": 25.0, "complete": False}],
                "latency": [{"samples": [0.001], "complete": True}],
            }
        },
    }
    table, verdicts = bs.summarize(results, config)
    assert "| 100/s |" in table and "10.00x" in table and "2.00x" in table
    assert any("10.00x -> MET" in v for v in verdicts)
    assert any("2.00x -> NOT MET" in v for v in verdicts)
    assert any("INCOMPLETE" in v and "peer_memory throughput_many" in v for v in verdicts)


def _peer_python() -> Path | None:
    python = bs.DEFAULT_PEER_VENV / "bin" / "python"
    if not python.exists() and os.environ.get("CI") == "true":
        # CI runs every test: build the peer venv the way the benchmark does (PyPI, ~1 min).
        bs.ensure_peer_venv(bs.DEFAULT_PEER_VENV)
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import pycrdt.websocket, pycrdt.store"], capture_output=True
    )
    return python if probe.returncode == 0 else None


@pytest.mark.skipif(_peer_python() is None, reason="no peer venv (bench_sync.py creates it)")
def test_peer_side_relays_every_edit(tmp_path: Path) -> None:
    python = _peer_python()
    assert python is not None
    for store in (False, True):
        server = bs.start_peer(python, tmp_path / f"peer-{store}", store)
        try:
            one = bs.run_peer_client(python, server.url, "--workload", "throughput",
                                     "--records", "3", "--edits", "12", "--prefix", "t",
                                     timeout=60)  # fmt: skip
            assert one["complete"] is True
            lat = bs.run_peer_client(python, server.url, "--workload", "latency",
                                     "--samples", "4", "--prefix", "l", timeout=60)  # fmt: skip
            assert lat["complete"] is True and len(lat["samples"]) == 4
            if not store:
                cu = bs.run_peer_client(python, server.url, "--workload", "catchup",
                                        "--records", "6", "--remote", "3", "--local", "2",
                                        "--prefix", "c", timeout=60)  # fmt: skip
                assert cu["complete"] is True and cu["bytes"][0] > 0
        finally:
            server.stop()
