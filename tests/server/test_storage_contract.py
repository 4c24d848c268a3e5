"""The RelayStorage contract (server/storage/base.py), run against every implementation.

Each test gets an open storage of each kind: SQLite on a real file (compacting often, so that
compaction is exercised under every answer) and the in-memory one. PostgreSQL joins here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from crdt_sync.server.storage import (
    Committed,
    MemoryRelayStorage,
    Purged,
    RecordPurged,
    RelayStorage,
    SQLiteRelayStorage,
)
from helpers.record_updates import RecordWriter, record_update
from helpers.yjs_updates import text_edits, text_of
from pycrdt import Doc, Text, get_state, get_update

from crdt_sync.errors import InvalidState
from crdt_sync.query import Claim, Eq
from crdt_sync.query import field as query_field
from crdt_sync.records.clock import HybridClock
from crdt_sync.records.layout import layout_of, tombstones_in
from crdt_sync.records.lww import Kind
from crdt_sync.subscriptions import Selection, Subscription


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


# -- the field index (subscriptions, record-level grants) ---------------------------------


@pytest.mark.asyncio
async def test_commits_index_top_level_fields_and_report_before_and_after(
    storage: RelayStorage,
) -> None:
    job = RecordWriter("jobs")
    first = await storage.write("acme", "r1", [("jobs", "j1", job.write(status="open", n=3))])
    assert isinstance(first, Committed) and list(first) == [1]
    assert first.fields == {("jobs", "j1"): (None, {"status": "open", "n": 3})}
    second = await storage.write(
        "acme", "r1", [("jobs", "j1", job.write(status="done", tags=["a"], flag=True))]
    )
    assert second.fields[("jobs", "j1")] == (
        {"status": "open", "n": 3},
        {"status": "done", "n": 3, "flag": 1},
    )
    # Not a record (a Yjs app's own document): indexed as having no fields.
    await storage.write("acme", "r1", [("notes", "n1", text_edits(1)[0])])
    assert await storage.fields("acme", [("jobs", "j1"), ("notes", "n1"), ("jobs", "x")]) == {
        ("jobs", "j1"): {"status": "done", "n": 3, "flag": 1},
        ("notes", "n1"): {},
    }
    assert await storage.fields("globex", [("jobs", "j1")]) == {}


@pytest.mark.asyncio
async def test_members_of_a_selection(storage: RelayStorage) -> None:
    rows = [
        ("jobs", "j1", record_update(owner="amy", date="2026-12-02", status="open")),
        ("jobs", "j2", record_update(owner="bob", date="2026-12-03", status="open")),
        ("jobs", "j3", record_update(owner="amy", date="2026-12-09", status="done")),
        ("jobs", "j4", text_edits(1)[0]),
        ("contacts", "c1", record_update(owner="amy")),
    ]
    await storage.write("acme", "r1", rows)
    await storage.write("globex", "r1", rows)
    now = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)

    async def members(subs: list[Subscription], scope: Any = None) -> set[str]:
        selection = Selection.of("jobs", subs, scope).resolve(now, {"sub": "amy"})
        return await storage.members("acme", selection)

    assert await members([Subscription("jobs")]) == {"j1", "j2", "j3", "j4"}
    assert await members([Subscription("jobs", where=query_field("date").window(0, 2))]) == {
        "j1",
        "j2",
    }
    assert await members([Subscription("jobs", ids=["j3", "j4", "nope"])]) == {"j3", "j4"}
    assert await members(
        [Subscription("jobs", ids=["j2"]), Subscription("jobs", where={"status": "done"})]
    ) == {"j2", "j3"}
    owner = Eq("owner", Claim("sub"))
    assert await members([Subscription("jobs")], owner) == {"j1", "j3"}
    assert await members([Subscription("jobs", ids=["j2", "j3"])], owner) == {"j3"}
    assert await members([]) == set()


@pytest.mark.asyncio
async def test_changed_since_by_anyone(storage: RelayStorage) -> None:
    u = text_edits(1)[0]
    await storage.write("acme", "alice", [("jobs", "a1", u)])
    await storage.write("acme", "bob", [("jobs", "b1", u)])
    assert await storage.changed_since("acme", ["jobs"], 0, "alice") == [("jobs", "b1")]
    assert await storage.changed_since("acme", ["jobs"], 0, None) == [
        ("jobs", "a1"),
        ("jobs", "b1"),
    ]


@pytest.mark.asyncio
async def test_a_deleted_record_keeps_its_fields_until_purged_then_nothing(
    storage: RelayStorage,
) -> None:
    # docs/relay.md, "Deletion and purge": a tombstoned record keeps the indexed fields it had,
    # so the replicas holding it through a query keep getting it (the tombstone, then writes
    # that lose to it, which they log), and a losing write never moves it; the purge removes
    # its field rows with everything else.
    writer = RecordWriter()
    await storage.write("acme", "r1", [("jobs", "j1", writer.write(status="open"))])
    await storage.write("acme", "r1", [("jobs", "j2", record_update(status="open"))])
    now = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)

    async def members(sub: Subscription) -> set[str]:
        return await storage.members("acme", Selection.of("jobs", [sub], None).resolve(now, {}))

    open_jobs = Subscription("jobs", where={"status": "open"})
    done_jobs = Subscription("jobs", where={"status": "done"})
    assert await members(open_jobs) == {"j1", "j2"}
    late = RecordWriter(replica="late")  # has the record, will not see its deletion
    late.doc.apply_update(writer.doc.get_update())
    done = await storage.write("acme", "r1", [("jobs", "j1", writer.delete())])
    assert isinstance(done, Committed)
    assert done.fields[("jobs", "j1")] == ({"status": "open"}, {"status": "open"})
    assert await storage.fields("acme", [("jobs", "j1")]) == {("jobs", "j1"): {"status": "open"}}
    assert await members(open_jobs) == {"j1", "j2"}
    # A write made without seeing the deletion shows in the document, not in the index.
    lost = await storage.write("acme", "r2", [("jobs", "j1", late.write(status="done"))])
    assert isinstance(lost, Committed)
    assert lost.fields[("jobs", "j1")] == ({"status": "open"}, {"status": "open"})
    assert await members(open_jobs) == {"j1", "j2"} and await members(done_jobs) == set()
    [purged] = await storage.purge_tombstones(time.time() + 60)
    assert (purged.collection, purged.record_id) == ("jobs", "j1")
    assert await storage.fields("acme", [("jobs", "j1")]) == {}
    assert await members(open_jobs) == {"j2"}
    assert await members(Subscription("jobs")) == {"j2"}
    assert await members(Subscription("jobs", ids=["j1"])) == set()
