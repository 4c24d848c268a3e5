"""Smoke test of benchmarks/bench_yjs.py on tiny sizes, so the benchmark cannot rot: both
servers start, the Node load generator runs against each, and the table has both rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from helpers.node import require_node

BENCH_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_yjs.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_yjs", BENCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_yjs_runs_on_tiny_sizes(tmp_path: Path) -> None:
    require_node()
    bench = _load()
    out = tmp_path / "out.json"
    argv = ["--rooms", "1", "--updates", "30", "--latency-updates", "10", "--runs", "1"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [row["updates"] for row in rows] == [60, 60]
    assert all(row["p50_ms"] > 0 and row["updates_per_s"] > 0 for row in rows)
