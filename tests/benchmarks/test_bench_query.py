"""Smoke test of benchmarks/bench_query.py on tiny data, so the benchmark cannot rot: the whole
run (both parts) on 600 records, which also checks that the store's range query returns the
same rows as the plain SQLite table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_query.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_query", BENCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bq = _load()


def test_tiny_run_prints_both_parts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--records", "600", "--queries", "20", "--edits", "30", "--remote", "60", "--runs", "1"]
    assert bq.main(argv) == 0
    out = capsys.readouterr().out
    assert "| edit, one at a time |" in out and "| apply_remote + scan |" in out
    assert "| range + ORDER BY + LIMIT 50 | aiosqlite |" in out
    assert "| full-text search, 20 best | aiosqlite |" in out
    assert "get not in memory:" in out
