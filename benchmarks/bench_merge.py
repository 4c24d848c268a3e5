"""Merge-throughput benchmark: how fast remote updates get into the local store.

Measures, in one run (medians of ``--runs`` runs):

* the trace: a real editing trace (default ``../shared/data/automerge-paper.json.gz``) replayed
  into a record's text field ``body`` (created through the record API, so in the record
  layout of the code under test), one patch per transaction, capturing each transaction's
  update; then those updates applied
  (a) by raw pycrdt to a fresh ``Doc`` (the baseline),
  (b) by ``LocalStore.apply_remote``, one update per call (on a prefix) and in batches, with the
  record not in memory ("cold": the store only appends rows, the merge happens on the first
  read, timed separately) and with the record in the store's document cache ("warm": the
  updates are integrated into the cached document during ``apply_remote``);
* small records: many records (~10 fields: strings, numbers, a short text), each receiving a
  few updates (create + edits, written through the record API), applied in batches, against
  raw pycrdt applying the same updates to as many fresh documents;
* read-back time (``store.get``) and bytes on disk after compaction vs the raw update bytes and
  the encoded full state.

Run ``python benchmarks/bench_merge.py --help``. Without the trace file a synthetic trace is
generated (seeded) and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text, TransactionEvent

from crdt_sync.records.clock import HybridClock, Timestamp
from crdt_sync.records.lww import LwwPolicy
from crdt_sync.records.record import RecordEditor, read_fields
from crdt_sync.store.sqlite import LocalStore

#: Where the shared editing trace lives, relative to this repository.
DEFAULT_TRACE = (
    Path(__file__).resolve().parent.parent.parent / "shared/data/automerge-paper.json.gz"
)

#: Collection and id of the record the trace is replayed into.
TRACE_KEY = ("docs", "paper")

#: Name of the text field the trace edits.
TEXT_FIELD = "body"

Patch = tuple[int, int, str]


# --------------------------------------------------------------------------------- traces


@dataclass(frozen=True, slots=True)
class Trace:
    """An editing trace: patches with ``Array.splice`` semantics and the expected final text."""

    patches: list[Patch]
    end_content: str
    source: str
    synthetic: bool


def load_trace(path: Path, limit: int | None = None) -> Trace:
    """Read a trace in the josephg/editing-traces sequential format (gzip'd JSON or plain).

    With ``limit``, only the first ``limit`` patches are kept and the expected final text is
    computed by replaying them on a Python string (the file's ``endContent`` is for the whole
    trace).
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    data = json.loads(raw)
    if data.get("startContent", ""):
        raise ValueError(f"{path}: traces with a non-empty startContent are not supported")
    patches: list[Patch] = [
        (int(p[0]), int(p[1]), str(p[2])) for txn in data["txns"] for p in txn["patches"]
    ]
    if limit is not None and limit < len(patches):
        patches = patches[:limit]
        return Trace(patches, splice_all(patches), f"{path} (first {limit} patches)", False)
    return Trace(patches, str(data["endContent"]), str(path), False)


def synthetic_trace(patches: int, seed: int = 1) -> Trace:
    """A generated ASCII editing trace: mostly typing near a moving cursor, some deletions."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " \n.,"
    out: list[Patch] = []
    length = 0
    cursor = 0
    for _ in range(patches):
        if rng.random() < 0.05:
            cursor = rng.randint(0, length)
        if length and rng.random() < 0.3:
            pos = min(cursor, length - 1)
            n = min(rng.choice((1, 1, 1, 2, 5)), length - pos)
            out.append((pos, n, ""))
            length -= n
            cursor = pos
        else:
            text = "".join(rng.choice(alphabet) for _ in range(rng.choice((1, 1, 1, 3))))
            out.append((cursor, 0, text))
            length += len(text)
            cursor += len(text)
    return Trace(out, splice_all(out), f"SYNTHETIC ({patches} patches, seed {seed})", True)


def splice_all(patches: Sequence[Patch]) -> str:
    """The text after applying ``patches`` to an empty string (reference implementation)."""
    chars: list[str] = []
    for pos, deleted, inserted in patches:
        chars[pos : pos + deleted] = inserted
    return "".join(chars)


@dataclass(slots=True)
class Replay:
    """The updates captured while replaying a trace, and the resulting document."""

    updates: list[bytes]
    doc: Doc[Any]
    seconds: float

    @property
    def update_bytes(self) -> int:
        return sum(len(u) for u in self.updates)


def record_text(doc: Doc[Any]) -> str:
    """The trace field's text in a record document ('' if absent)."""
    return str(read_fields(doc).get(TEXT_FIELD, ""))


def record_editor(doc: Doc[Any], replica: str = "bench") -> RecordEditor:
    """An editor of ``doc`` as the store makes one (call it inside a transaction)."""
    clock = HybridClock(replica)
    now = 1_764_000_000_000

    def stamp(current: Timestamp | None) -> Timestamp:
        return clock.after(current, now) if current else clock.tick(now)

    return RecordEditor(doc, TRACE_KEY[0], LwwPolicy(), stamp)


def replay(trace: Trace) -> Replay:
    """Replay ``trace`` into a record's text field, one transaction per patch.

    The first update creates the text field (through the record API); then there is one update
    per patch, made on the field's pycrdt ``Text`` directly (the record API's character
    positions cost a scan of the text per edit, which is not what this benchmark measures).
    Raises ``AssertionError`` if the final text differs from the trace's expected text.
    """
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []

    def capture(event: TransactionEvent) -> None:
        updates.append(event.update)

    subscription = doc.observe(capture)
    start = time.perf_counter()
    with doc.transaction():
        text: Text = record_editor(doc).text(TEXT_FIELD)._text
    # The trace is ASCII (or synthetic ASCII): code point offsets equal pycrdt's UTF-8 offsets.
    for pos, deleted, inserted in trace.patches:
        with doc.transaction():
            if deleted:
                del text[pos : pos + deleted]
            if inserted:
                text.insert(pos, inserted)
    seconds = time.perf_counter() - start
    doc.unobserve(subscription)
    got = str(text)
    assert got == trace.end_content, f"replay diverged from endContent ({len(got)} chars)"
    assert len(updates) == len(trace.patches) + 1
    return Replay(updates, doc, seconds)


# --------------------------------------------------------------------------------- small records


@dataclass(frozen=True, slots=True)
class SmallRecords:
    """Updates of many small records: ``updates[i]`` are record ``i``'s, in order."""

    updates: list[list[bytes]]
    expected: list[dict[str, Any]]

    @property
    def count(self) -> int:
        return sum(len(u) for u in self.updates)

    @property
    def update_bytes(self) -> int:
        return sum(len(u) for per in self.updates for u in per)


def record_id(i: int) -> str:
    return f"job-{i:06d}"


def make_small_records(records: int, edits: int = 2, seed: int = 2) -> SmallRecords:
    """``records`` record documents of ~10 fields, each created in one update and then edited
    ``edits`` times (a status change, a counter, a note typed into)."""
    rng = random.Random(seed)
    statuses = ["open", "scheduled", "in_progress", "done", "cancelled"]
    all_updates: list[list[bytes]] = []
    expected: list[dict[str, Any]] = []
    for i in range(records):
        doc: Doc[Any] = Doc()
        captured: list[bytes] = []
        sub = doc.observe(lambda e, out=captured: out.append(e.update))
        fields = record_editor(doc, f"r{i}")
        with doc.transaction():
            fields["title"] = f"Repair #{i}"
            fields["customer"] = rng.choice(["Ada", "Grace", "Linus", "Edsger", "Barbara"])
            fields["address"] = f"{rng.randint(1, 999)} Main Street"
            fields["status"] = "open"
            fields["priority"] = rng.randint(1, 5)
            fields["price"] = round(rng.uniform(10, 500), 2)
            fields["hours"] = 0
            fields["paid"] = False
            fields["technician"] = f"tech-{rng.randint(1, 40)}"
            fields.text("notes").append("Customer called. ")
        for e in range(edits):
            with doc.transaction():
                if e % 2 == 0:
                    fields["status"] = rng.choice(statuses)
                    fields["hours"] = e + 1
                else:
                    fields.text("notes").append(f"Visit {e}. ")
        doc.unobserve(sub)
        all_updates.append(captured)
        expected.append(_normalized(read_fields(doc)))
    return SmallRecords(all_updates, expected)


def _normalized(values: dict[str, Any]) -> dict[str, Any]:
    # Yjs numbers are doubles: integral ones read back as int through crdt_sync.
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}


# --------------------------------------------------------------------------------- measurements


def apply_raw(updates: Sequence[bytes]) -> tuple[float, Doc[Any]]:
    """Apply ``updates`` one by one to a fresh ``Doc``: seconds taken, and the document."""
    doc: Doc[Any] = Doc()
    start = time.perf_counter()
    for update in updates:
        doc.apply_update(update)
    return time.perf_counter() - start, doc


def apply_raw_batched(updates: Sequence[bytes], batch: int) -> tuple[float, Doc[Any]]:
    """Apply ``updates`` to a fresh ``Doc``, ``batch`` of them per pycrdt transaction."""
    doc: Doc[Any] = Doc()
    start = time.perf_counter()
    for i in range(0, len(updates), batch):
        with doc.transaction():
            for update in updates[i : i + batch]:
                doc.apply_update(update)
    return time.perf_counter() - start, doc


def apply_raw_many(per_doc: Sequence[Sequence[bytes]]) -> tuple[float, list[Doc[Any]]]:
    """Apply each list of updates to its own fresh ``Doc`` (document creation included)."""
    docs: list[Doc[Any]] = []
    start = time.perf_counter()
    for updates in per_doc:
        doc: Doc[Any] = Doc()
        for update in updates:
            doc.apply_update(update)
        docs.append(doc)
    return time.perf_counter() - start, docs


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(slots=True)
class StoreRun:
    """One timed pass of updates through ``LocalStore.apply_remote``."""

    apply_seconds: float
    first_read_seconds: float
    text: str


async def store_apply_trace(
    path: Path, updates: Sequence[bytes], batch: int, *, warm: bool = False
) -> StoreRun:
    """Apply the trace's updates to a fresh store in batches of ``batch`` (1 = one per call).

    Cold (default): the record is not in memory; ``apply_remote`` appends rows and the first
    ``get`` builds the document (timed as ``first_read_seconds``). Warm: the first update is
    applied and the record read before timing, so the record's document is in the store's
    cache and ``apply_remote`` integrates the rest into it; the update count timed is then one
    less than ``len(updates)``.
    """
    collection, rid = TRACE_KEY
    items = [(collection, rid, u) for u in updates]
    store = await LocalStore.open(path)
    try:
        if warm:
            await store.apply_remote(items[:1])
            await store.get(collection, rid)
            items = items[1:]
        gc.collect()
        start = time.perf_counter()
        for part in chunks(items, batch):
            await store.apply_remote(part)
        applied = time.perf_counter() - start
        start = time.perf_counter()
        record = await store.get(collection, rid)
        read = time.perf_counter() - start
        return StoreRun(applied, read, str(record[TEXT_FIELD]))
    finally:
        await store.close()


@dataclass(slots=True)
class SmallStoreRun:
    apply_seconds: float
    read_seconds: float
    reads: int
    disk_bytes: int
    mismatches: int


async def store_apply_small(
    path: Path, records: SmallRecords, batch_records: int, read_sample: int, seed: int = 3
) -> SmallStoreRun:
    """Apply every small record's updates to a fresh store, ``batch_records`` records' updates
    per ``apply_remote`` call (in each record's order); then read back a random sample and
    compare it with the expected fields."""
    collection = "jobs"
    per_record = [
        [(collection, record_id(i), u) for u in ups] for i, ups in enumerate(records.updates)
    ]
    batches = [
        [item for rec in per_record[i : i + batch_records] for item in rec]
        for i in range(0, len(per_record), batch_records)
    ]
    store = await LocalStore.open(path)
    try:
        gc.collect()
        start = time.perf_counter()
        for part in batches:
            await store.apply_remote(part)
        applied = time.perf_counter() - start
        rng = random.Random(seed)
        sample = rng.sample(range(len(records.updates)), min(read_sample, len(records.updates)))
        mismatches = 0
        start = time.perf_counter()
        got = [await store.get(collection, record_id(i)) for i in sample]
        read = time.perf_counter() - start
        for i, record in zip(sample, got, strict=True):
            if dict(record.fields) != records.expected[i]:
                mismatches += 1
        await store.compact_all()
        disk = await store.disk_usage()
        return SmallStoreRun(applied, read, len(sample), disk, mismatches)
    finally:
        await store.close()


async def trace_disk_usage(path: Path, updates: Sequence[bytes], batch: int) -> tuple[int, int]:
    """Bytes on disk for the trace record before and after ``compact_all`` (fresh store)."""
    collection, rid = TRACE_KEY
    store = await LocalStore.open(path)
    try:
        for part in chunks([(collection, rid, u) for u in updates], batch):
            await store.apply_remote(part)
        before = await store.disk_usage()
        await store.compact_all()
        after = await store.disk_usage()
        return before, after
    finally:
        await store.close()


# --------------------------------------------------------------------------------- reporting


@dataclass(slots=True)
class Row:
    """One line of the results table: a path's median time for ``updates`` updates."""

    workload: str
    path: str
    updates: int
    times: list[float] = field(default_factory=list)
    baseline: Row | None = None
    note: str = ""
    is_baseline: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rate(self) -> float:
        return self.updates / self.median if self.median > 0 else float("inf")

    @property
    def slowdown(self) -> float | None:
        """Time per update relative to the baseline (1.0 = as fast as raw pycrdt)."""
        if self.baseline is None:
            return None
        return self.baseline.rate / self.rate


def format_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| workload | path | updates | median s | updates/s | x raw time | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        slow = r.slowdown
        lines.append(
            f"| {r.workload} | {r.path} | {r.updates:,} | {r.median:.3f} | {r.rate:,.0f} | "
            f"{'1.00 (baseline)' if r.is_baseline else '-' if slow is None else f'{slow:.2f}'}"
            f" | {r.note} |"
        )
    return "\n".join(lines)


def remove_stores(directory: Path) -> None:
    """Delete the store files of a finished run (keeps the temporary disk small)."""
    for path in directory.glob("store-*"):
        path.unlink()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------- main


@dataclass(slots=True)
class Options:
    trace: Path
    limit: int | None
    runs: int
    batches: list[int]
    single_limit: int
    records: int
    record_edits: int
    record_batch: int
    read_sample: int
    synthetic_patches: int
    seed: int


@dataclass(slots=True)
class Results:
    """Everything one benchmark run measured (also what the smoke test checks)."""

    trace: Trace
    replay: Replay
    rows: list[Row]
    lines: list[str]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench_merge.py",
        description="Merge throughput: raw pycrdt vs LocalStore.apply_remote (see module doc).",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        default=DEFAULT_TRACE,
        help="editing trace, josephg/editing-traces sequential format, .json or .json.gz "
        "(default: %(default)s; if missing, a synthetic trace is generated)",
    )
    parser.add_argument("--limit", type=int, help="use only the first N patches of the trace")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument(
        "--batch",
        type=int,
        action="append",
        help="apply_remote batch size for the trace; repeatable (default: 100 and 1000)",
    )
    parser.add_argument(
        "--single-limit",
        type=int,
        default=5000,
        help="one-update-per-call is measured on the first N trace updates (default: 5000)",
    )
    parser.add_argument("--records", type=int, default=10_000, help="small records (10,000)")
    parser.add_argument(
        "--record-edits", type=int, default=2, help="edits per small record after its create (2)"
    )
    parser.add_argument(
        "--record-batch", type=int, default=500, help="small records per apply_remote call (500)"
    )
    parser.add_argument(
        "--read-sample", type=int, default=1000, help="small records read back with get (1000)"
    )
    parser.add_argument(
        "--synthetic-patches",
        type=int,
        default=50_000,
        help="size of the synthetic trace used when --trace is missing (50,000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of generated data")
    args = parser.parse_args(argv)
    for name in ("runs", "single_limit", "records", "record_batch", "read_sample"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    batches = args.batch or [100, 1000]
    if any(b < 1 for b in batches):
        parser.error("--batch must be >= 1")
    return Options(
        trace=args.trace,
        limit=args.limit,
        runs=args.runs,
        batches=batches,
        single_limit=args.single_limit,
        records=args.records,
        record_edits=args.record_edits,
        record_batch=args.record_batch,
        read_sample=args.read_sample,
        synthetic_patches=args.synthetic_patches,
        seed=args.seed,
    )


async def run(options: Options, out: Callable[[str], None] = print) -> Results:
    """Run every measurement; print progress and the results through ``out``.

    Raises ``AssertionError`` if any path produces content different from the trace's
    expected text or the small records' expected fields.
    """
    lines: list[str] = []

    def say(line: str = "") -> None:
        lines.append(line)
        out(line)

    if options.trace.exists():
        trace = load_trace(options.trace, options.limit)
    else:
        n = options.limit or options.synthetic_patches
        trace = synthetic_trace(n, options.seed)
        say(f"NOTE: {options.trace} not found: using a SYNTHETIC trace, not the real one.")
    say(f"trace: {trace.source}")
    rep = replay(trace)
    say(
        f"replayed {len(trace.patches):,} patches in {rep.seconds:.1f} s "
        f"({len(trace.patches) / rep.seconds:,.0f} ops/s), final text {len(trace.end_content):,}"
        f" chars = endContent: OK; {len(rep.updates):,} updates, "
        f"{human_bytes(rep.update_bytes)} ({rep.update_bytes / len(rep.updates):.1f} B/update)"
    )
    full_state = rep.doc.get_update()
    updates = rep.updates
    n_updates = len(updates)
    single = updates[: options.single_limit]
    say(f"python {sys.version.split()[0]}, {options.runs} runs per measurement (median)")

    small = make_small_records(options.records, options.record_edits, options.seed + 1)
    small_count = small.count

    trace_raw = Row("trace", "raw pycrdt Doc.apply_update", n_updates, is_baseline=True)
    raw_txn = Row(
        "trace",
        f"raw pycrdt, {max(options.batches)} updates per transaction",
        n_updates,
        baseline=trace_raw,
        note="for reference: what batching buys",
    )
    single_raw = Row("trace prefix", "raw pycrdt Doc.apply_update", len(single), is_baseline=True)
    single_store = Row(
        "trace prefix", "store apply_remote, 1 update/call", len(single), baseline=single_raw
    )
    cold = {
        b: Row(
            "trace",
            f"store apply_remote, batch {b} (cold)",
            n_updates,
            baseline=trace_raw,
            note="rows appended; merge deferred to first read",
        )
        for b in options.batches
    }
    cold_total = {
        b: Row(
            "trace",
            f"store apply_remote, batch {b} + first get",
            n_updates,
            baseline=trace_raw,
            note="apply + document built on first read",
        )
        for b in options.batches
    }
    warm = {
        b: Row(
            "trace",
            f"store apply_remote, batch {b} (warm)",
            n_updates - 1,
            baseline=trace_raw,
            note="record's doc cached: merged during apply",
        )
        for b in options.batches
    }
    small_raw = Row(
        f"{options.records:,} small records",
        f"raw pycrdt, {options.records:,} fresh Docs",
        small_count,
        is_baseline=True,
    )
    small_store = Row(
        f"{options.records:,} small records",
        f"store apply_remote, {options.record_batch} records/call",
        small_count,
        baseline=small_raw,
        note="rows appended; merge deferred to first read",
    )
    small_read = Row(
        f"{options.records:,} small records",
        f"store get (sample of {min(options.read_sample, options.records):,})",
        min(options.read_sample, options.records),
        note="records/s read back, cold docs",
    )

    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        counter = 0

        def fresh() -> Path:
            nonlocal counter
            counter += 1
            return Path(tmp) / f"store-{counter}.sqlite"

        async def timed(row: Row, job: Callable[[], Awaitable[float]]) -> None:
            gc.collect()
            row.times.append(await job())

        for i in range(options.runs):
            say(f"run {i + 1}/{options.runs} ...")
            # (a) raw pycrdt, full trace and the prefix.
            seconds, doc = apply_raw(updates)
            assert record_text(doc) == trace.end_content, "raw apply diverged"
            trace_raw.times.append(seconds)
            seconds, doc = apply_raw_batched(updates, max(options.batches))
            assert record_text(doc) == trace.end_content, "raw batched apply diverged"
            raw_txn.times.append(seconds)
            seconds, doc = apply_raw(single)
            single_raw.times.append(seconds)
            del doc
            # (b) store, one update per call, on the prefix.
            res = await store_apply_trace(fresh(), single, 1)
            assert res.text == record_text(apply_raw(single)[1]), "store (1/call) diverged"
            single_store.times.append(res.apply_seconds)
            # (b) store, batched, cold and warm.
            for b in options.batches:
                res = await store_apply_trace(fresh(), updates, b)
                assert res.text == trace.end_content, f"store batch {b} (cold) diverged"
                cold[b].times.append(res.apply_seconds)
                cold_total[b].times.append(res.apply_seconds + res.first_read_seconds)
                res = await store_apply_trace(fresh(), updates, b, warm=True)
                assert res.text == trace.end_content, f"store batch {b} (warm) diverged"
                warm[b].times.append(res.apply_seconds)
            # (c) small records.
            seconds, docs = apply_raw_many(small.updates)
            for j in range(0, len(docs), max(1, len(docs) // 50)):
                plain = _normalized(read_fields(docs[j]))
                assert plain == small.expected[j], "raw small records diverged"
            small_raw.times.append(seconds)
            del docs
            small_run = await store_apply_small(
                fresh(), small, options.record_batch, options.read_sample, options.seed
            )
            assert small_run.mismatches == 0, f"{small_run.mismatches} small records differ"
            small_store.times.append(small_run.apply_seconds)
            small_read.times.append(small_run.read_seconds)
            remove_stores(Path(tmp))

        disk_before, disk_after = await trace_disk_usage(fresh(), updates, max(options.batches))

    rows = [
        trace_raw,
        raw_txn,
        *(cold[b] for b in options.batches),
        *(cold_total[b] for b in options.batches),
        *(warm[b] for b in options.batches),
        single_raw,
        single_store,
        small_raw,
        small_store,
        small_read,
    ]
    say()
    say(format_table(rows))
    say()
    say(
        f"trace record on disk: {human_bytes(disk_before)} before compaction, "
        f"{human_bytes(disk_after)} after compact_all; raw updates "
        f"{human_bytes(rep.update_bytes)}; encoded full state {human_bytes(len(full_state))} "
        f"(after compaction = {disk_after / rep.update_bytes:.2f}x raw updates, "
        f"{disk_after / len(full_state):.2f}x full state)"
    )
    small_state = sum(
        len(d.get_update()) for d in apply_raw_many(small.updates[: min(1000, options.records)])[1]
    ) * (options.records / min(1000, options.records))
    say(
        f"{options.records:,} small records on disk after compact_all: "
        f"{human_bytes(small_run.disk_bytes)}; raw updates {human_bytes(small.update_bytes)}; "
        f"encoded full states ~{human_bytes(small_state)}"
    )
    read_all = small_read.median / small_read.updates * options.records
    say(
        f"reading back all {options.records:,} small records at that rate: ~{read_all:.1f} s; "
        f"apply + read all ~{(small_store.median + read_all) / small_raw.median:.1f}x raw time"
    )
    best = max(cold_total.values(), key=lambda r: r.rate)
    best_warm = max(warm.values(), key=lambda r: r.rate)
    met = (best.slowdown or 0) <= 2 and (best_warm.slowdown or 0) <= 2
    say(
        f"target (batched store path within 2x of raw pycrdt): "
        f"{'MET' if met else 'NOT MET'} -- apply+first read {best.slowdown:.2f}x "
        f"({best.path}), warm {best_warm.slowdown:.2f}x ({best_warm.path}), "
        f"small records apply {small_store.slowdown:.2f}x"
    )
    return Results(trace, rep, rows, lines)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
