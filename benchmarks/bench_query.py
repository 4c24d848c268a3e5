"""Local query benchmark: the store's queries and search against plain SQLite, and what the
projection costs the write paths.

Part 1, **queries** (needs ``LocalStore.query``): ``--records`` records (default 100,000) of 10
fields each (``date`` and ``status`` indexed, ``title`` and ``notes`` searchable) are written
through ``LocalStore.edit`` in batches. The same rows go into a plain SQLite table (one column
per field, the same two indexes) with an FTS5 table over the same text, same tokenizer. Then,
``--queries`` times each, p50 and p99:

* an indexed range with ORDER BY + LIMIT 50 (``date`` in a random 3-day range, ordered by date);
* a full-text search for a random word (20 best);
* ``get`` of a record not in memory (the store's cache is emptied before each), against the
  document path every read took before the projection (decode the record's updates).

The baselines run through aiosqlite too (one thread hop per query, like the store) and, for
reference, through the synchronous ``sqlite3`` module.

Part 2, **write paths** (runs on any version of the store, to compare trees): ``--edits``
durable local edits one at a time (each awaited), the same in one ``batch()``, and
``--remote`` records' updates applied with ``apply_remote`` (500 per call) followed by the
scan that brings them up to date (``scan_conflicts``: conflicts, and the projection where there
is one). Medians over ``--runs`` runs, each on fresh store files.

    .venv/bin/python benchmarks/bench_query.py                # full run (~3 min on 2 cores)
    .venv/bin/python benchmarks/bench_query.py --quick        # a short look
    .venv/bin/python benchmarks/bench_query.py --only writes  # part 2 only (e.g. an old tree)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from crdt_sync.store.sqlite import LocalStore, RemoteUpdate

WORDS = [
    "boiler",
    "pump",
    "valve",
    "leak",
    "roof",
    "heater",
    "filter",
    "fuse",
    "panel",
    "meter",
    "socket",
    "drain",
    "pipe",
    "tank",
    "fan",
    "motor",
    "belt",
    "seal",
    "gasket",
    "thermostat",
    "cable",
    "switch",
    "breaker",
    "duct",
    "vent",
    "compressor",
    "coil",
]
STATUSES = ["open", "scheduled", "in_progress", "on_hold", "done"]
CITIES = ["Lyon", "Paris", "Nantes", "Lille", "Nice", "Metz", "Brest", "Caen"]


def make_fields(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "date": (dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(365))).isoformat(),
        "status": rng.choice(STATUSES),
        "assigned_to": f"tech-{rng.randrange(50)}",
        "prio": rng.randrange(5),
        "title": " ".join(rng.choice(WORDS) for _ in range(3)),
        "notes": " ".join(rng.choice(WORDS) for _ in range(12)),
        "city": rng.choice(CITIES),
        "zip": f"{rng.randrange(10000, 99999)}",
        "amount": round(rng.uniform(10, 2000), 2),
        "billable": rng.random() < 0.5,
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Timing:
    name: str
    baseline: str
    ours: list[float]
    theirs: list[float]

    def row(self) -> str:
        p50, p99 = percentile(self.ours, 0.5), percentile(self.ours, 0.99)
        b50, b99 = percentile(self.theirs, 0.5), percentile(self.theirs, 0.99)
        return (
            f"| {self.name} | {self.baseline} | {p50 * 1e6:,.0f} | {p99 * 1e6:,.0f} |"
            f" {b50 * 1e6:,.0f} | {b99 * 1e6:,.0f} | {p50 / b50:.2f} | {p99 / b99:.2f} |"
        )


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def timed_sync(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


PLAIN_SCHEMA = [
    "CREATE TABLE plain (id TEXT PRIMARY KEY, date TEXT, status TEXT, assigned_to TEXT,"
    " prio INTEGER, title TEXT, notes TEXT, city TEXT, zip TEXT, amount REAL, billable INTEGER)",
    "CREATE INDEX plain_date ON plain (date, id)",
    "CREATE INDEX plain_status ON plain (status, id)",
    "CREATE VIRTUAL TABLE plain_text USING fts5 (body, tokenize = 'unicode61 remove_diacritics 2')",
]
PLAIN_RANGE = "SELECT * FROM plain WHERE date >= ? AND date <= ? ORDER BY date, id LIMIT 50"
PLAIN_SEARCH = (
    "SELECT plain.*, plain_text.rank, snippet(plain_text, 0, '[', ']', '…', 12) FROM plain_text"
    " JOIN plain ON plain.rowid = plain_text.rowid WHERE plain_text MATCH ?"
    " ORDER BY plain_text.rank LIMIT 20"
)


async def part_queries(options: argparse.Namespace, directory: Path) -> list[str]:
    from crdt_sync.query import field

    rng = random.Random(7)
    rows = [make_fields(i, rng) for i in range(options.records)]
    ids = [f"job-{i:06d}" for i in range(options.records)]
    store = await LocalStore.open(
        directory / "store.db",
        indexes={"jobs": ["date", "status"]},
        text_fields={"jobs": ["title", "notes"]},
        cache_size=64,
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        t0 = time.perf_counter()
        for start in range(0, len(rows), 1000):
            async with store.batch():
                for rid, fields in zip(
                    ids[start : start + 1000], rows[start : start + 1000], strict=True
                ):
                    async with store.edit("jobs", rid) as rec:
                        for k, v in fields.items():
                            rec[k] = v
        load_s = time.perf_counter() - t0
        plain_path = directory / "plain.db"
        db = sqlite3.connect(plain_path)
        for ddl in PLAIN_SCHEMA:
            db.execute(ddl)
        db.executemany(
            "INSERT INTO plain VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(rid, *f.values()) for rid, f in zip(ids, rows, strict=True)],
        )
        db.executemany(
            "INSERT INTO plain_text (rowid, body)"
            " SELECT rowid, title || char(10) || notes FROM plain WHERE id = ?",
            [(rid,) for rid in ids],
        )
        db.commit()
        adb = await aiosqlite.connect(plain_path)
        stack.push_async_callback(adb.close)
        stack.callback(db.close)
        n = options.queries
        q_rng = random.Random(11)
        days = sorted({f["date"] for f in rows})

        def some_range() -> tuple[str, str]:
            i = q_rng.randrange(len(days) - 3)
            return days[i], days[i + 2]

        async def ours_range() -> None:
            lo, hi = some_range()
            await store.query("jobs", field("date").between(lo, hi), order_by="date", limit=50)

        async def plain_range() -> None:
            await adb.execute_fetchall(PLAIN_RANGE, some_range())

        def plain_range_sync() -> None:
            db.execute(PLAIN_RANGE, some_range()).fetchall()

        async def ours_search() -> None:
            await store.search_text("jobs", q_rng.choice(WORDS), limit=20, prefix=False)

        async def plain_search() -> None:
            await adb.execute_fetchall(PLAIN_SEARCH, (f'"{q_rng.choice(WORDS)}"',))

        def plain_search_sync() -> None:
            db.execute(PLAIN_SEARCH, (f'"{q_rng.choice(WORDS)}"',)).fetchall()

        async def ours_get() -> None:
            store._cache.clear()
            await store.get("jobs", q_rng.choice(ids))

        async def doc_get() -> None:  # the document path every read took before the projection
            store._cache.clear()
            await store._read("jobs", q_rng.choice(ids))

        # Each correct first (same rows from the store and the plain table).
        lo, hi = days[10], days[12]
        mine = [
            (r.id, r["date"])
            for r in await store.query(
                "jobs", field("date").between(lo, hi), order_by="date", limit=50
            )
        ]
        theirs = [(r[0], r[1]) for r in db.execute(PLAIN_RANGE, (lo, hi))]
        assert mine == theirs, "the store and the plain table disagree"
        (
            await ours_range(),
            await plain_range(),
            await ours_search(),
            await plain_search(),
        )  # warm up
        timings = [
            Timing(
                "range + ORDER BY + LIMIT 50",
                "aiosqlite",
                await timed(ours_range, n),
                await timed(plain_range, n),
            ),
            Timing(
                "range + ORDER BY + LIMIT 50",
                "sqlite3 (sync)",
                await timed(ours_range, n),
                timed_sync(plain_range_sync, n),
            ),
            Timing(
                "full-text search, 20 best",
                "aiosqlite",
                await timed(ours_search, n),
                await timed(plain_search, n),
            ),
            Timing(
                "full-text search, 20 best",
                "sqlite3 (sync)",
                await timed(ours_search, n),
                timed_sync(plain_search_sync, n),
            ),
            Timing(
                "get, not in memory",
                "document decode (before)",
                await timed(ours_get, n),
                await timed(doc_get, n),
            ),
        ]
    lines = [
        f"{options.records:,} records of 10 fields loaded through edit() in batches of 1,000"
        f" in {load_s:.1f} s; {n} queries each",
        "",
        "| query | baseline | ours p50 µs | ours p99 µs | baseline p50 µs | baseline p99 µs"
        " | x p50 | x p99 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(t.row() for t in timings),
    ]
    get = timings[-1]
    lines.append("")
    lines.append(
        f"get not in memory: {1 / percentile(get.ours, 0.5):,.0f}/s (p50) vs"
        f" {1 / percentile(get.theirs, 0.5):,.0f}/s decoding the document:"
        f" {percentile(get.theirs, 0.5) / percentile(get.ours, 0.5):.1f}x"
    )
    return lines


async def one_write_run(
    options: argparse.Namespace, directory: Path, rng: random.Random
) -> dict[str, float]:
    fields = [make_fields(i, rng) for i in range(max(options.edits, options.remote))]
    out: dict[str, float] = {}
    async with await LocalStore.open(directory / "edits.db") as store:
        for i in range(50):  # warm-up, and records to edit again
            async with store.edit("jobs", f"r{i}") as rec:
                for k, v in fields[i].items():
                    rec[k] = v
        t0 = time.perf_counter()
        for i in range(options.edits):
            async with store.edit("jobs", f"r{i % 50}") as rec:
                rec["status"] = STATUSES[i % len(STATUSES)]
                rec["prio"] = i % 5
        out["edit, one at a time"] = options.edits / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        async with store.batch():
            for i in range(options.edits):
                async with store.edit("jobs", f"b{i}") as rec:
                    for k, v in fields[i].items():
                        rec[k] = v
        out["new record of 10 fields, batch()"] = options.edits / (time.perf_counter() - t0)
    async with await LocalStore.open(directory / "source.db") as source:
        async with source.batch():
            for i in range(options.remote):
                async with source.edit("jobs", f"x{i}") as rec:
                    for k, v in fields[i].items():
                        rec[k] = v
        updates = [
            RemoteUpdate("jobs", f"x{i}", await source.encode_state("jobs", f"x{i}"))
            for i in range(options.remote)
        ]
    async with await LocalStore.open(directory / "target.db") as target:
        t0 = time.perf_counter()
        for start in range(0, len(updates), 500):
            await target.apply_remote(updates[start : start + 500])
        applied = time.perf_counter() - t0
        await target.scan_conflicts()
        scanned = time.perf_counter() - t0
        out["apply_remote, 500 records per call"] = options.remote / applied
        out["apply_remote + scan"] = options.remote / scanned
    return out


async def part_writes(options: argparse.Namespace, directory: Path) -> list[str]:
    rng = random.Random(3)
    runs: list[dict[str, float]] = []
    for run in range(options.runs):
        sub = directory / f"w{run}"
        sub.mkdir()
        runs.append(await one_write_run(options, sub, rng))
    lines = ["| write path | median /s | runs |", "|---|---:|---|"]
    for name in runs[0]:
        values = [r[name] for r in runs]
        each = ", ".join(f"{v:,.0f}" for v in values)
        lines.append(f"| {name} | {statistics.median(values):,.0f} | {each} |")
    return lines


async def main_async(options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        directory = Path(tmp)
        print(f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
        if options.only in (None, "writes"):
            print("\n".join(await part_writes(options, directory)))
            print()
        if options.only in (None, "queries"):
            if not hasattr(LocalStore, "query"):
                print("(this store has no query(): part 1 skipped)")
            else:
                print("\n".join(await part_queries(options, directory)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_query.py", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records for part 1")
    parser.add_argument("--queries", type=int, default=500, help="queries of each kind")
    parser.add_argument("--edits", type=int, default=2_000, help="local edits per run (part 2)")
    parser.add_argument("--remote", type=int, default=5_000, help="remote records per run (part 2)")
    parser.add_argument("--runs", type=int, default=5, help="runs of part 2 (median)")
    parser.add_argument("--only", choices=["queries", "writes"], help="run one part")
    parser.add_argument("--quick", action="store_true", help="10,000 records, 200 queries, 3 runs")
    options = parser.parse_args(argv)
    if options.quick:
        options.records, options.queries, options.runs = 10_000, 200, 3
        options.edits, options.remote = 1_000, 2_000
    return options


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(main_async(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
