"""Smoke test of benchmarks/bench_merge.py on tiny data, so the benchmark cannot rot.

Runs the benchmark's own functions (trace loading, replay, raw and store apply paths, the small
records workload and the whole ``run``) and checks that what they produce is right: the replayed
text equals the trace's expected text, the store's records equal the raw documents' content.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_merge.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_merge", BENCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bm = _load()


def _write_trace(path: Path, patches: list[list[object]], end: str) -> None:
    data = {
        "startContent": "",
        "endContent": end,
        "txns": [{"patches": patches[:2]}, {"patches": patches[2:]}],
    }
    path.write_bytes(gzip.compress(json.dumps(data).encode()))


def test_load_trace_reads_the_sequential_format_and_limits(tmp_path: Path) -> None:
    patches: list[list[object]] = [[0, 0, "hello"], [5, 0, " world"], [0, 1, "H"], [11, 0, "!"]]
    path = tmp_path / "t.json.gz"
    _write_trace(path, patches, "Hello world!")
    trace = bm.load_trace(path)
    assert trace.patches == [(0, 0, "hello"), (5, 0, " world"), (0, 1, "H"), (11, 0, "!")]
    assert trace.end_content == "Hello world!"
    assert not trace.synthetic
    limited = bm.load_trace(path, limit=2)
    assert limited.end_content == "hello world"
    assert "first 2" in limited.source


def test_replay_matches_end_content_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    trace = bm.synthetic_trace(400, seed=7)
    assert trace.synthetic
    assert trace.end_content == bm.splice_all(trace.patches)
    rep = bm.replay(trace)
    assert len(rep.updates) == len(trace.patches) + 1
    assert bm.record_text(rep.doc) == trace.end_content
    _, raw = bm.apply_raw(rep.updates)
    assert bm.record_text(raw) == trace.end_content
    _, batched = bm.apply_raw_batched(rep.updates, 37)
    assert bm.record_text(batched) == trace.end_content
    wrong = bm.Trace(trace.patches, trace.end_content + "x", "wrong", True)
    with pytest.raises(AssertionError, match="endContent"):
        bm.replay(wrong)


@pytest.mark.asyncio
@pytest.mark.parametrize(("batch", "warm"), [(1, False), (50, False), (50, True)])
async def test_store_apply_trace_gives_the_trace_text(
    tmp_path: Path, batch: int, warm: bool
) -> None:
    trace = bm.synthetic_trace(300, seed=3)
    rep = bm.replay(trace)
    result = await bm.store_apply_trace(tmp_path / "s.sqlite", rep.updates, batch, warm=warm)
    assert result.text == trace.end_content
    assert result.apply_seconds > 0


@pytest.mark.asyncio
async def test_store_small_records_equal_the_raw_documents(tmp_path: Path) -> None:
    small = bm.make_small_records(40, edits=2, seed=5)
    assert small.count == 120
    _, docs = bm.apply_raw_many(small.updates)
    for doc, expected in zip(docs, small.expected, strict=True):
        assert bm._normalized(bm.read_fields(doc)) == expected
        assert len(expected) == 10
    result = await bm.store_apply_small(tmp_path / "s.sqlite", small, 7, read_sample=40)
    assert result.reads == 40
    assert result.mismatches == 0
    assert result.disk_bytes > 0


@pytest.mark.asyncio
async def test_store_small_records_detects_a_mismatch(tmp_path: Path) -> None:
    small = bm.make_small_records(5, edits=2, seed=5)
    tampered = bm.SmallRecords(small.updates, [{**e, "status": "nope"} for e in small.expected])
    result = await bm.store_apply_small(tmp_path / "s.sqlite", tampered, 2, read_sample=5)
    assert result.mismatches == 5


@pytest.mark.asyncio
async def test_full_run_without_trace_file_says_synthetic(tmp_path: Path) -> None:
    options = bm.parse_args(
        [
            "--trace",
            str(tmp_path / "missing.json.gz"),
            "--synthetic-patches",
            "300",
            "--runs",
            "2",
            "--batch",
            "10",
            "--batch",
            "100",
            "--single-limit",
            "30",
            "--records",
            "30",
            "--record-batch",
            "8",
            "--read-sample",
            "10",
        ]
    )
    lines: list[str] = []
    results = await bm.run(options, out=lines.append)
    assert results.trace.synthetic
    assert any("SYNTHETIC" in line for line in lines)
    assert bm.record_text(results.replay.doc) == results.trace.end_content
    table = "\n".join(lines)
    assert "| trace | raw pycrdt Doc.apply_update | 301 |" in table
    assert "store apply_remote, batch 100 + first get" in table
    assert "target (batched store path within 2x of raw pycrdt):" in table
    for row in results.rows:
        assert len(row.times) == 2
        assert row.rate > 0


def test_parse_args_defaults_and_validation() -> None:
    options = bm.parse_args([])
    assert options.runs == 5
    assert options.batches == [100, 1000]
    assert options.records == 10_000
    assert options.trace == bm.DEFAULT_TRACE
    with pytest.raises(SystemExit):
        bm.parse_args(["--runs", "0"])
