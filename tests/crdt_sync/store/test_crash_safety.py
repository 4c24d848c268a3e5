"""SIGKILL a writer process at random points, many times: nothing returned is lost, nothing is
half-written, and the outbox matches the records."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdt_sync.records.record import read_fields
from crdt_sync.store.sqlite import LocalStore

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 12


def _run_and_kill(db: Path, start: int, rng: random.Random, cwd: Path) -> list[int]:
    """Start the writer, let it report a random number of edits, SIGKILL it."""
    with subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,  # not the checkout: its crdt_sync/ folder must not shadow the installed package
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        wanted = rng.randint(1, 80)
        returned: list[int] = []
        try:
            for line in proc.stdout:
                returned.append(int(line))
                if len(returned) >= wanted:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        if not returned:
            pytest.fail(f"writer produced nothing: {proc.stderr.read()}")
    return returned


@pytest.mark.asyncio
async def test_sigkill_at_random_points_loses_nothing_returned(tmp_path: Path) -> None:
    db = tmp_path / "replica.db"
    rng = random.Random(20261123)
    returned: set[int] = set()
    next_start = 0
    for _ in range(ROUNDS):
        returned.update(_run_and_kill(db, next_start, rng, tmp_path))
        async with await LocalStore.open(db, lww={"jobs": ["status"]}) as store:
            present: set[int] = set()
            for record in await store.records("jobs"):
                mine = sorted(int(k[1:]) for k in record if k.startswith("f"))
                assert all(record[f"f{i}"] == i for i in mine)
                # Nothing half-written: the text log holds exactly the edits whose field is here.
                assert record["log"] == "".join(f"{i}é;" for i in mine)
                assert record["status"] == f"s{mine[-1]}"
                present.update(mine)
                # The outbox matches the record: confirmed state + pending entries rebuild it.
                doc: pycrdt.Doc[Any] = pycrdt.Doc()
                doc.apply_update(await store.confirmed_state("jobs", record.id))
                for entry in await store.outbox.for_record("jobs", record.id):
                    doc.apply_update(entry.update)
                assert read_fields(doc) == dict(record)
                assert record.pending == bool(await store.outbox.for_record("jobs", record.id))
            assert returned <= present, f"lost edits {sorted(returned - present)}"
            # Edits are sequential: what is there is a prefix (the one in flight may be there).
            assert present == set(range(len(present)))
            seqs = [e.seq for e in await store.outbox.entries()]
            assert seqs == sorted(seqs)
            next_start = len(present)
