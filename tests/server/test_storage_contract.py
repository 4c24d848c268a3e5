"""The RelayStorage contract (server/storage/base.py), run against every implementation.

Each test gets an open storage of each kind: SQLite on a real file (compacting often, so that
compaction is exercised under every answer) and the in-memory one. PostgreSQL joins here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from crdt_sync.server.storage import (
    MemoryRelayStorage,
    Purged,
    RecordPurged,
    RelayStorage,
    SQLiteRelayStorage,
)
from helpers.yjs_updates import text_edits, text_of
from pycrdt import Doc, Text, get_state, get_update

from crdt_sync.errors import InvalidState
from crdt_sync.records.clock import HybridClock
from crdt_sync.records.layout import layout_of, tombstones_in
from crdt_sync.records.lww import Kind


def _new(kind: str, tmp_path: Path) -> RelayStorage:
    if kind == "sqlite":
        return SQLiteRelayStorage(tmp_path, compact_every=4)
    return MemoryRelayStorage()


@pytest_asyncio.fixture(params=["sqlite", "memory"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RelayStorage]:
    storage = _new(request.param, tmp_path)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


@pytest.mark.asyncio
async def test_write_returns_seqs_per_tenant_after_commit(storage: RelayStorage) -> None:
    updates = text_edits(3)
    assert await storage.write("acme", "r1", [("jobs", "j1", u) for u in updates]) == [1, 2, 3]
    assert await storage.write("globex", "r1", [("jobs", "j1", updates[0])]) == [1]
    assert await storage.head("acme") == 3
    assert await storage.head("initech") == 0
    states = await storage.get_states("acme", [("jobs", "j1"), ("jobs", "missing")])
    assert list(states) == [("jobs", "j1")]
    assert text_of(states[("jobs", "j1")]) == "0,1,2,"
    assert (await storage.submit("acme", "r1", [])) == []  # nothing to store: no seq


@pytest.mark.asyncio
async def test_diff_against_a_state_vector_is_what_the_replica_misses(
    storage: RelayStorage,
) -> None:
    updates = text_edits(10)
    await storage.write("acme", "r1", [("jobs", "j1", u) for u in updates])
    replica = Doc()
    for update in updates[:6]:
        replica.apply_update(update)
    state = (await storage.get_states("acme", [("jobs", "j1")]))[("jobs", "j1")]
    diff = get_update(state, replica.get_state())
    assert len(diff) < len(state)
    replica.apply_update(diff)
    assert str(replica.get("notes", type=Text)) == text_of(state)
    assert get_state(state) == replica.get_state()


@pytest.mark.asyncio
async def test_changed_since_excludes_own_changes_and_other_tenants(
    storage: RelayStorage,
) -> None:
    u = text_edits(1)[0]
    await storage.write("acme", "alice", [("jobs", "a1", u), ("contacts", "c1", u)])  # 1, 2
    cursor = await storage.head("acme")
    await storage.write("acme", "bob", [("jobs", "b1", u)])  # 3
    await storage.write("acme", "alice", [("jobs", "a2", u)])  # 4
    await storage.write("globex", "bob", [("jobs", "g1", u)])
    assert await storage.changed_since("acme", ["jobs"], cursor, "alice") == [("jobs", "b1")]
    assert await storage.changed_since("acme", ["jobs"], cursor, "bob") == [("jobs", "a2")]
    assert await storage.changed_since("acme", ["jobs", "contacts"], None, "alice") == [
        ("contacts", "c1"),
        ("jobs", "a1"),
        ("jobs", "a2"),
        ("jobs", "b1"),
    ]
    assert await storage.changed_since("acme", ["jobs"], 4, "carol") == []
    assert await storage.changed_since("acme", [], 0, "carol") == []
    # a record changed by alice after bob's change still counts for alice as bob's change
    await storage.write("acme", "alice", [("jobs", "b1", u)])
    assert await storage.changed_since("acme", ["jobs"], cursor, "alice") == [("jobs", "b1")]


@pytest.mark.asyncio
async def test_concurrent_writes_are_group_committed_in_order(storage: RelayStorage) -> None:
    updates = text_edits(200)
    futures = [
        storage.submit("acme", f"r{i % 5}", [("jobs", "j", u)]) for i, u in enumerate(updates)
    ]
    results = await asyncio.gather(*futures)
    assert [seqs[0] for seqs in results] == list(range(1, 201))
    assert 1 <= storage.numbers().commits < 20  # batched, not one transaction per write
    state = (await storage.get_states("acme", [("jobs", "j")]))[("jobs", "j")]
    assert text_of(state) == "".join(f"{i}," for i in range(200))


@pytest.mark.asyncio
async def test_close_commits_what_was_submitted_then_refuses_writes(
    storage: RelayStorage,
) -> None:
    assert storage.healthy
    futures = [storage.submit("acme", "r", [("jobs", "j", u)]) for u in text_edits(50)]
    await storage.close()
    assert [f.result() for f in futures] == [[seq] for seq in range(1, 51)]
    assert not storage.healthy
    with pytest.raises(InvalidState):
        storage.submit("acme", "r", [("jobs", "j", text_edits(1)[0])])
    await storage.close()  # idempotent


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@pytest.mark.asyncio
async def test_a_storage_is_opened_once_and_written_only_while_open(
    kind: str, tmp_path: Path
) -> None:
    storage = _new(kind, tmp_path)
    assert not storage.healthy
    with pytest.raises(InvalidState):
        storage.submit("acme", "r", [("jobs", "j", text_edits(1)[0])])
    await storage.open()
    try:
        with pytest.raises(InvalidState):
            await storage.open()
        assert storage.healthy and storage.numbers().commits == 0
    finally:
        await storage.close()


def _record_updates(replica: str) -> tuple[bytes, bytes]:
    """A record's first update (a field) and the update that deletes it (its tombstone)."""
    doc: Doc = Doc()
    layout = layout_of(doc)
    clock = HybridClock(replica)
    stamp = lambda current: clock.after(current, 1000) if current else clock.tick(1000)  # noqa: E731
    with doc.transaction():
        layout.write(("status",), Kind.VALUE, "open", stamp)
    first = doc.get_update()
    before = doc.get_state()
    with doc.transaction():
        layout.delete_record(stamp)
    return first, doc.get_update(before)


@pytest.mark.asyncio
async def test_purge_removes_a_deleted_record_and_lists_it_as_removed(
    storage: RelayStorage,
) -> None:
    first, tombstone = _record_updates("tech-1")
    keep, _ = _record_updates("tech-2")
    await storage.write("acme", "r1", [("jobs", "j1", first), ("jobs", "j2", keep)])
    assert await storage.purge_tombstones(time.time() + 60) == []  # nothing deleted yet
    await storage.write("acme", "r1", [("jobs", "j1", tombstone)])
    assert await storage.purge_tombstones(time.time() - 60) == []  # deleted too recently
    head = await storage.head("acme")
    purged = await storage.purge_tombstones(time.time() + 60)
    key = tombstones_in(tombstone)[0]
    assert purged == [Purged("acme", "jobs", "j1", key, head + 1)]
    assert await storage.head("acme") == head + 1  # the purge took a change seq
    # Its rows are gone; the other record stays.
    states = await storage.get_states("acme", [("jobs", "j1"), ("jobs", "j2")])
    assert list(states) == [("jobs", "j2")]
    assert await storage.changed_since("acme", ["jobs"], None, "") == [("jobs", "j2")]
    # Catch-ups from before the purge list it as removed; later ones do not.
    assert await storage.removed_since("acme", ["jobs"], head) == [("jobs", "j1", key)]
    assert await storage.removed_since("acme", ["jobs"], head + 1) == []
    assert await storage.removed_since("acme", ["other"], 0) == []
    assert await storage.removed_since("globex", ["jobs"], 0) == []
    assert await storage.purged("acme", [("jobs", "j1"), ("jobs", "j2")]) == {("jobs", "j1"): key}
    assert await storage.purged("globex", [("jobs", "j1")]) == {}
    assert await storage.purge_tombstones(time.time() + 60) == []  # purged once


@pytest.mark.asyncio
async def test_a_write_to_a_purged_record_fails_whole_and_stores_nothing(
    storage: RelayStorage,
) -> None:
    first, tombstone = _record_updates("tech-1")
    await storage.write("acme", "r1", [("jobs", "j1", first), ("jobs", "j1", tombstone)])
    await storage.purge_tombstones(time.time() + 60)
    head = await storage.head("acme")
    other, _ = _record_updates("tech-3")
    late = storage.submit("acme", "r2", [("jobs", "j9", other), ("jobs", "j1", first)])
    fine = storage.submit("acme", "r3", [("jobs", "j9", other)])
    with pytest.raises(RecordPurged):
        await late
    assert await fine == [head + 1]  # the other write of the group commits
    assert await storage.get_states("acme", [("jobs", "j1")]) == {}
