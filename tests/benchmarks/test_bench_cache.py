"""Smoke test of benchmarks/bench_cache.py at a tiny size, so the cache benchmark cannot rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cache.py"


def test_bench_cache_runs_and_checks_itself() -> None:
    spec = importlib.util.spec_from_file_location("bench_cache", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [result] = module.main(["--sizes", "300"])
    assert result["size"] == 300 and " records in " in result["quota"]
