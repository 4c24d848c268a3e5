"""Working-set benchmark: a replica whose subscription matches 10,000 of 100,000 records on the
relay, against the first full sync of those 10,000 records today, in one run.

- **Subscription**: tenant ``acme`` holds ``--total`` appointments (dates over 100 days); a
  fresh replica subscribes to ``field("date").window(0, 9)`` (10 of the 100 days: ``--total``
  / 10 records) and syncs until it holds all of them. The relay evaluates the window on its
  field index (an indexed query) and sends only those.
- **Full sync today**: tenant ``solo`` holds exactly the same matching records (the same
  updates) and nothing else; a fresh replica syncs the whole collection, as every replica did
  before subscriptions.

Both against the same relay process (its clock fixed with ``$CRDT_SYNC_TEST_NOW``), in
alternated order over ``--runs`` runs (medians). Reported: records/s (records / seconds from
``Replica.open`` until synced), bytes on the wire (the relay's ``/metrics``), their ratio, the
subscription evaluation's query plan and its time on the relay's database.

Run from anywhere: ``python benchmarks/bench_working_set.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sync import (
    RELAY_READY,
    SECRET,
    ProtocolLink,
    Server,
    _captured,
    start_server,
)
from crdt_sync.client import Replica, Subscription
from crdt_sync.server.storage.field_index import members_query
from crdt_sync.server.tokens import mint
from pycrdt import Doc

from crdt_sync.query import field
from crdt_sync.records.record import RecordEditor
from crdt_sync.subscriptions import Selection

COLLECTION = "appointments"
NOW = "2026-12-02T09:00:00+00:00"
FIRST_DAY = dt.date(2026, 12, 1)
DAYS = 100
WINDOW = (0, 9)  # 12-02 .. 12-11: 10 of the 100 days


def appointment(i: int) -> tuple[str, bytes, bool]:
    """Record ``i``: its id, its update (fields + a text), whether the window holds it."""
    day = FIRST_DAY + dt.timedelta(days=i % DAYS)
    doc: Doc[Any] = Doc()

    def edit(editor: RecordEditor) -> None:
        editor["date"] = day.isoformat()
        editor["title"] = f"Visit {i}"
        editor["status"] = "scheduled"
        editor["customer"] = f"customer-{i % 977}"
        editor.text("notes").append(f"Boiler service at site {i}; bring the spare valve.")

    update = _captured(doc, edit)
    first, last = (FIRST_DAY + dt.timedelta(days=1 + d) for d in WINDOW)
    return f"a{i:06}", update, first <= day <= last


async def seed(url: str, total: int) -> int:
    """Push ``total`` records to tenant ``acme`` and the matching ones to ``solo``."""
    acme = await ProtocolLink.open(url, "seed-acme", mint(SECRET, "acme", [COLLECTION], 86400))
    solo = await ProtocolLink.open(url, "seed-solo", mint(SECRET, "solo", [COLLECTION], 86400))
    matching = 0
    batch: list[tuple[int, str, str, bytes]] = []
    solo_batch: list[tuple[int, str, str, bytes]] = []
    for seq, i in enumerate(range(total), start=1):
        record_id, update, inside = appointment(i)
        batch.append((seq, COLLECTION, record_id, update))
        if inside:
            matching += 1
            solo_batch.append((seq, COLLECTION, record_id, update))
        if len(batch) == 1000:
            await acme.push_all(batch)
            if solo_batch:
                await solo.push_all(solo_batch)
            batch, solo_batch = [], []
    if batch:
        await acme.push_all(batch)
    if solo_batch:
        await solo.push_all(solo_batch)
    await acme.close()
    await solo.close()
    return matching


async def first_sync(
    relay: Server, workdir: Path, name: str, tenant: str, expected: int, subscribed: bool
) -> dict[str, float]:
    """Open a fresh replica and time it until it holds ``expected`` records, synced."""
    options: dict[str, Any] = {"collections": [COLLECTION]}
    if subscribed:
        window = field("date").window(*WINDOW, tz="UTC")
        options = {"subscriptions": [Subscription(COLLECTION, where=window)]}
    before = relay.metrics()
    t0 = time.perf_counter()
    async with Replica.open(
        workdir / f"{name}.db",
        url=relay.url,
        token=mint(SECRET, tenant, [COLLECTION], 86400),
        replica_id=name,
        backoff_initial=0.05,
        backoff_max=0.5,
        **options,
    ) as replica:
        await replica.wait_synced(1800)
        seconds = time.perf_counter() - t0
        held = len(await replica.store.ids(COLLECTION))
    after = relay.metrics()
    if held != expected:
        raise RuntimeError(f"{name}: holds {held} records, expected {expected}")
    wire = sum(
        after.get(k, 0) - before.get(k, 0)
        for k in ("crdt_sync_bytes_in_total", "crdt_sync_bytes_out_total")
    )
    return {"seconds": seconds, "records": held, "records_per_s": held / seconds, "bytes": wire}


def evaluation_plan(data_dir: Path) -> dict[str, Any]:
    """The subscription's SQL on the relay's database: its plan and its time."""
    now = dt.datetime.fromisoformat(NOW)
    selection = Selection.of(
        COLLECTION, [Subscription(COLLECTION, where=field("date").window(*WINDOW, tz="UTC"))]
    ).resolve(now, {})
    sql, params = members_query("acme", selection)
    with sqlite3.connect(f"file:{data_dir / 'relay.sqlite3'}?mode=ro", uri=True) as db:
        plan = [str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            count = len(db.execute(sql, params).fetchall())
            times.append(time.perf_counter() - t0)
    return {"plan": plan, "members": count, "ms": statistics.median(times) * 1000}


async def run(total: int, runs: int, workdir: Path) -> dict[str, Any]:
    data = workdir / "relay-data"
    command = [
        sys.executable,
        "-m",
        "crdt_sync.server",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data",
        str(data),
        "--secret",
        SECRET,
        "--log-level",
        "WARNING",
    ]
    saved = os.environ.get("CRDT_SYNC_TEST_NOW")
    os.environ["CRDT_SYNC_TEST_NOW"] = NOW  # the relay's clock (test/benchmark only)
    try:
        relay = start_server("relay", command, RELAY_READY, workdir)
    finally:
        if saved is None:
            del os.environ["CRDT_SYNC_TEST_NOW"]
        else:
            os.environ["CRDT_SYNC_TEST_NOW"] = saved
    try:
        t0 = time.perf_counter()
        matching = await seed(relay.url, total)
        seed_seconds = time.perf_counter() - t0
        print(f"seeded {total} records ({matching} matching) in {seed_seconds:.1f} s", flush=True)
        results: dict[str, list[dict[str, float]]] = {"subscription": [], "full": []}
        for n in range(runs):
            order = [("subscription", "acme", True), ("full", "solo", False)]
            for kind, tenant, subscribed in order if n % 2 == 0 else reversed(order):
                result = await first_sync(
                    relay, workdir, f"{kind}-{n}", tenant, matching, subscribed
                )
                results[kind].append(result)
                print(f"run {n + 1} {kind}: {json.dumps(result)}", flush=True)
        plan = evaluation_plan(data)
    finally:
        relay.stop()
    med = {
        kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for kind, rs in results.items()
    }
    return {
        "total": total,
        "matching": matching,
        "runs": runs,
        "seed_seconds": seed_seconds,
        "median": med,
        "ratio_records_per_s": med["subscription"]["records_per_s"] / med["full"]["records_per_s"],
        "ratio_bytes": med["subscription"]["bytes"] / med["full"]["bytes"],
        "evaluation": plan,
        "raw": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=100_000, help="records on the relay")
    parser.add_argument("--runs", type=int, default=3, help="alternated runs (medians)")
    parser.add_argument("--quick", action="store_true", help="10,000 records, 1 run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    total, runs = (10_000, 1) if args.quick else (args.total, args.runs)
    with tempfile.TemporaryDirectory(prefix="bench-working-set-") as tmp:
        results = asyncio.run(run(total, runs, Path(tmp)))
    med = results["median"]
    print()
    print(f"| first sync of {results['matching']:,} records | records/s | bytes on the wire |")
    print("|---|---|---|")
    for kind, label in (
        ("subscription", f"subscription (window) over {total:,} records on the relay"),
        ("full", f"whole collection of those {results['matching']:,} records (today)"),
    ):
        print(f"| {label} | {med[kind]['records_per_s']:,.0f}/s | {med[kind]['bytes']:,.0f} B |")
    print(
        f"| ratio subscription / today | {results['ratio_records_per_s']:.2f}x "
        f"| {results['ratio_bytes']:.2f}x |"
    )
    evaluation = results["evaluation"]
    print(
        f"\nsubscription evaluation on the relay: {evaluation['members']:,} ids in "
        f"{evaluation['ms']:.1f} ms; plan:"
    )
    for line in evaluation["plan"]:
        print(f"    {line}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
