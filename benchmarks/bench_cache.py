"""What the cache's retention/quota checks cost the local store, and what edits feel meanwhile.

For each size: a store file holding N records (2 fields, one a 200-character string), their
state vectors settled and the WAL checkpointed; then, each with a loop of small edits running
(one every 5 ms, to other records) whose latencies are recorded:

* a check with nothing to do (``apply_cache_policy()`` under no quota: the two totals only);
* a quota eviction of half the records (LRU);
* ``clear_cache()`` of the rest.

Usage: ``.venv/bin/python benchmarks/bench_cache.py [--sizes 10000,100000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from pycrdt import Doc, Map

from crdt_sync.cache_policy import CachePolicy
from crdt_sync.store.sqlite import LocalStore

T = TypeVar("T")


async def with_edits(store: LocalStore, work: Awaitable[T]) -> tuple[T, float, list[float]]:
    """Run ``work`` while editing other records every 5 ms; (result, seconds, edit latencies)."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def edit_loop() -> None:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            async with store.edit("notes", f"n{i % 50}") as note:
                note["v"] = i
            latencies.append(time.perf_counter() - started)
            i += 1
            await asyncio.sleep(0.005)

    editing = asyncio.ensure_future(edit_loop())
    started = time.perf_counter()
    result = await work
    took = time.perf_counter() - started
    stop.set()
    await editing
    return result, took, latencies


def _ms(latencies: list[float]) -> str:
    if not latencies:
        return "no edit"
    p50, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
    return f"edits p50 {p50:.1f} ms, max {worst:.0f} ms"


async def run(size: int, directory: Path) -> dict[str, Any]:
    store = await LocalStore.open(
        directory / f"cache-{size}.db", cache=CachePolicy(check_interval=1e6)
    )
    try:
        for start in range(0, size, 1000):
            batch = []
            for i in range(start, min(size, start + 1000)):
                doc: Doc[Any] = Doc()
                fields = doc.get("fields", type=Map)
                fields["title"] = f"Job {i}"
                fields["notes"] = "x" * 200
                batch.append(("jobs", f"j{i}", doc.get_update()))
            await store.apply_remote(batch)
        await store.refresh_state_vectors()
        await store.disk_usage()  # checkpoints the WAL
        total = sum(r.size for r in await store.cache.measure())
        check, check_s, check_lat = await with_edits(store, store.cache.apply_policy())
        store.cache.policy = CachePolicy(quota=total // 2, check_interval=1e6)
        quota, quota_s, quota_lat = await with_edits(store, store.cache.apply_policy())
        cleared, clear_s, clear_lat = await with_edits(store, store.clear_cache())
        assert check.evicted == 0 and not quota.blocked and quota.total <= total // 2
        assert await store.ids("jobs") == []
        return {
            "size": size,
            "check": f"{check_s * 1000:.0f} ms ({_ms(check_lat)})",
            "quota": f"{quota.evicted} records in {quota_s * 1000:.0f} ms ({_ms(quota_lat)})",
            "clear": f"{cleared.evicted} records in {clear_s * 1000:.0f} ms ({_ms(clear_lat)})",
        }
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="record counts, comma-separated")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            result = asyncio.run(run(size, Path(tmp)))
            results.append(result)
            print(
                f"{size:>7} records | check, nothing to do: {result['check']} | quota (half): "
                f"{result['quota']} | clear: {result['clear']}",
                flush=True,
            )
    return results


if __name__ == "__main__":
    main()
