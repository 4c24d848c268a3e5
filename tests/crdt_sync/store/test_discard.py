"""Discarding a refused entry takes back only what that entry did (issue 10): what other
replicas wrote meanwhile stays, on every replica. Real SQLite files, hypothesis-driven edits
(tests/helpers/tokens.py: every value written is a unique token)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from helpers.tokens import Tokens, in_conflicts, random_op, visible
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pycrdt import Doc

from crdt_sync.store.sqlite import LocalStore

KEY = ("jobs", "job-1")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


async def _doc(store: LocalStore) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    if await store.exists(*KEY):
        doc.apply_update(await store.encode_state(*KEY))
    return doc


async def _send(source: LocalStore, target: LocalStore) -> None:
    vector = await target.state_vector(*KEY) if await target.exists(*KEY) else b"\x00"
    await target.apply_remote([(*KEY, await source.encode_state(*KEY, vector))])


async def _edit(data: st.DataObject, store: LocalStore, tokens: Tokens, ops: int) -> set[str]:
    """``ops`` random operations in one edit; the tokens its author saw disappear."""
    seen = visible(await _doc(store))
    async with store.edit(*KEY) as rec:
        for _ in range(ops):
            random_op(data, rec, tokens)
    return seen - visible(await _doc(store))


async def _scenario(data: st.DataObject, workdir: Path) -> None:
    tokens = Tokens()
    async with (
        await LocalStore.open(workdir / "a.db", replica_id="a", time_source=Clock(1000)) as a,
        await LocalStore.open(workdir / "b.db", replica_id="b", time_source=Clock(1001)) as b,
    ):
        # The record as the relay confirmed it, on both replicas.
        removed = await _edit(data, a, tokens, 3)
        await a.outbox.acknowledge([e.seq for e in await a.outbox.entries()])
        await _send(a, b)
        # B edits concurrently; A gets some of it before its refused edit, some after.
        b_written = set(tokens.written)
        early = data.draw(st.booleans(), label="A sees B's first edits before its own")
        for _ in range(data.draw(st.integers(0, 3), label="B's edits before")):
            removed |= await _edit(data, b, tokens, 1)
        if early:
            await _send(b, a)
        before = tokens.written.copy()
        seen = visible(await _doc(a))
        await _edit(data, a, tokens, data.draw(st.integers(1, 3)))
        refused_wrote = tokens.written - before
        refused_removed = seen - visible(await _doc(a))
        pending = await a.outbox.entries()
        if not pending:
            event("the refused edit changed nothing")
            return
        [entry] = pending
        for _ in range(data.draw(st.integers(0, 3), label="B's edits after")):
            removed |= await _edit(data, b, tokens, 1)
        b_written = tokens.written - b_written - refused_wrote
        await _send(b, a)
        # The relay refused A's edit; A discards it.
        await a.outbox.mark_error(entry.seq, "rejected", "job closed by the office")
        await a.outbox.discard(entry.seq)
        await _send(a, b)
        await _send(b, a)
        docs = [await _doc(a), await _doc(b)]
        assert docs[0].get_state() == docs[1].get_state()
        for doc in docs:
            shown, lost = visible(doc), in_conflicts(doc)
            # Nothing another replica wrote went away (unless its author removed it).
            assert b_written - removed <= shown | lost
            # What the refused edit wrote is gone from the record...
            assert not refused_wrote & shown
            # ...and what it removed came back, unless someone else removed it too.
            assert refused_removed - removed <= shown | lost


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_discard_keeps_what_other_replicas_wrote(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(_scenario(data, Path(workdir)))
