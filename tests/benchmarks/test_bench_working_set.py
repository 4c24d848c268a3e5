"""Smoke test of benchmarks/bench_working_set.py at a tiny size, so it cannot rot: the
subscribed replica and the whole-collection one each hold exactly the matching records, and
the subscription's evaluation on the relay is an indexed query."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_working_set_smoke(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH_DIR))  # it imports bench_sync
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_working_set", BENCH_DIR / "bench_working_set.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        results = asyncio.run(module.run(500, 1, tmp_path))
    finally:
        sys.path.remove(str(BENCH_DIR))
    assert results["matching"] == 50
    for kind in ("subscription", "full"):
        assert results["median"][kind]["records"] == 50
    evaluation = results["evaluation"]
    assert evaluation["members"] == 50
    assert any("record_fields_by_value" in line for line in evaluation["plan"])
    assert not any(line.startswith("SCAN record_fields") for line in evaluation["plan"])
