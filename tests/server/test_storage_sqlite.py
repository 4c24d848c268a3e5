"""The relay's SQLite storage (server/storage/sqlite.py) on real files.

What every storage must do is tested in test_storage_contract.py; this is what the SQLite
one adds: persistence across a reopen, compaction, checkpoints, forgotten origins, its cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import sqlite3
import time
from pathlib import Path

import pytest
from crdt_sync.server.storage import SQLiteRelayStorage
from crdt_sync.server.storage.field_index import members_query
from crdt_sync.server.storage.sqlite import (
    _merge_in_thread,
    _store_compacted_in_thread,
)
from helpers.record_updates import RecordWriter, record_update
from helpers.yjs_updates import text_edits, text_of, text_update
from pycrdt import Doc, Map

from crdt_sync.errors import InvalidState
from crdt_sync.query import Claim, Eq
from crdt_sync.query import field as query_field
from crdt_sync.store.sqlite_thread import on_thread
from crdt_sync.subscriptions import Selection, Subscription


@pytest.mark.asyncio
async def test_write_returns_seqs_after_commit_and_survives_reopen(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    updates = text_edits(3)
    seqs = await storage.write("acme", "r1", [("jobs", "j1", u) for u in updates])
    assert seqs == [1, 2, 3]
    assert await storage.head("acme") == 3
    assert await storage.head("globex") == 0
    await storage.close()

    reopened = SQLiteRelayStorage(tmp_path)
    await reopened.open()
    states = await reopened.get_states("acme", [("jobs", "j1"), ("jobs", "missing")])
    assert list(states) == [("jobs", "j1")]
    assert text_of(states[("jobs", "j1")]) == "0,1,2,"
    assert await reopened.head("acme") == 3
    assert await reopened.write("acme", "r1", [("jobs", "j2", updates[0])]) == [4]
    await reopened.close()


@pytest.mark.asyncio
async def test_compaction_keeps_every_update_including_ones_waiting_for_dependencies(
    tmp_path: Path,
) -> None:
    storage = SQLiteRelayStorage(tmp_path, compact_every=5)
    await storage.open()
    updates = text_edits(23)
    # Leave out update 0 for a while: later updates depend on it and stay pending.
    for update in updates[1:]:
        await storage.write("acme", "r1", [("jobs", "j1", update)])
    await storage.compact_pending()
    assert storage.stats.compactions >= 3
    await storage.write("acme", "r1", [("jobs", "j1", updates[0])])
    state = (await storage.get_states("acme", [("jobs", "j1")]))[("jobs", "j1")]
    assert text_of(state) == "".join(f"{i}," for i in range(23))
    await storage.close()


@pytest.mark.asyncio
async def test_forgotten_origins_fall_back_to_reporting_the_record(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    u = text_edits(1)[0]
    await storage.write("acme", "alice", [("jobs", "a1", u)])  # 1
    await storage.write("acme", "bob", [("jobs", "b1", u)])  # 2
    await storage.write("acme", "alice", [("jobs", "a3", u)])  # 3
    assert await storage.changed_since("acme", ["jobs"], 0, "alice") == [("jobs", "b1")]
    assert await storage.forget_origins("acme", before_seq=3) == 2
    # alice's own old change a1 is now reported too (conservative), a3 (kept) is not.
    assert await storage.changed_since("acme", ["jobs"], 0, "alice") == [
        ("jobs", "a1"),
        ("jobs", "b1"),
    ]
    # A cursor past the forgotten rows is unaffected.
    assert await storage.changed_since("acme", ["jobs"], 2, "alice") == []
    await storage.close()


@pytest.mark.asyncio
async def test_close_commits_queued_writes_then_refuses_new_ones(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    doc = Doc()
    fields = doc.get("fields", type=Map)
    updates = []
    for index in range(50):
        before = doc.get_state()
        fields[f"k{index}"] = index
        updates.append(doc.get_update(before))
    futures = [storage.submit("acme", "r", [("jobs", "j", u)]) for u in updates]
    await storage.close()
    assert all(f.done() and not f.exception() for f in futures)
    with pytest.raises(InvalidState):
        storage.submit("acme", "r", [("jobs", "j", updates[0])])
    reopened = SQLiteRelayStorage(tmp_path)
    await reopened.open()
    assert await reopened.head("acme") == 50
    await reopened.close()


@pytest.mark.asyncio
async def test_state_reads_look_keys_up_in_the_indexes(tmp_path: Path) -> None:
    import sqlite3

    from crdt_sync.server.storage.sqlite import states_query

    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    await storage.write("acme", "r", [("jobs", "j", text_edits(1)[0])])
    await storage.close()
    conn = sqlite3.connect(tmp_path / "relay.sqlite3")
    plan = " | ".join(
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + states_query(2), ["jobs", "a", "jobs", "b", "acme", "acme"]
        )
    )
    conn.close()
    assert "SEARCH s USING PRIMARY KEY (tenant=? AND collection=? AND record_id=?)" in plan
    assert "SEARCH l USING INDEX log_by_record (tenant=? AND collection=? AND record_id=?)" in plan


@pytest.mark.asyncio
async def test_a_failing_compaction_does_not_cost_the_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = SQLiteRelayStorage(tmp_path, compact_every=3)
    await storage.open()
    good = text_edits(4)
    # Not a Yjs update at all: stored only because this test bypasses the relay's check.
    seqs = await storage.write("acme", "r", [("jobs", "j", good[0]), ("jobs", "j", b"\xff\xff")])
    assert seqs == [1, 2]
    assert await storage.write("acme", "r", [("jobs", "j", good[1])]) == [3]  # compaction due
    assert await storage.compact_pending() == 1
    assert storage.stats.compactions == 1  # attempted and given up, the log is kept
    assert "compaction of ('acme', 'jobs', 'j') failed" in caplog.text
    assert storage.stats.compaction_failures == 1  # exported as a metric
    assert await storage.head("acme") == 3
    await storage.close()


@pytest.mark.parametrize(("durable", "level"), [(False, 1), (True, 2)])
@pytest.mark.asyncio
async def test_durable_commits_use_synchronous_full(
    tmp_path: Path, durable: bool, level: int
) -> None:
    storage = SQLiteRelayStorage(tmp_path, durable=durable)
    await storage.open()
    try:
        db = storage._writer_db
        assert db is not None
        rows = list(await db.execute_fetchall("PRAGMA synchronous"))
        assert rows[0][0] == level  # 1 = NORMAL, 2 = FULL
        rows = list(await db.execute_fetchall("PRAGMA journal_mode"))
        assert rows[0][0] == "wal"
    finally:
        await storage.close()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the relay database from a connection of the test's own."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.mark.asyncio
async def test_compaction_is_not_part_of_the_group_commit(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path, compact_every=4, background_compaction=False)
    await storage.open()
    updates = text_edits(6)
    await storage.write("acme", "r", [("jobs", "j", u) for u in updates[:4]])
    # committed (and acked) with the compaction only due: the log is whole, no snapshot yet
    assert _rows(storage.path, "SELECT COUNT(*) FROM log") == [(4,)]
    assert _rows(storage.path, "SELECT COUNT(*) FROM snapshots") == [(0,)]
    assert storage.stats.compactions == 0
    assert await storage.compact_pending() == 1
    assert _rows(storage.path, "SELECT COUNT(*) FROM log") == [(0,)]
    assert _rows(storage.path, "SELECT upto FROM snapshots") == [(4,)]
    await storage.write("acme", "r", [("jobs", "j", u) for u in updates[4:]])
    state = (await storage.get_states("acme", [("jobs", "j")]))[("jobs", "j")]
    assert text_of(state) == "0,1,2,3,4,5,"
    await storage.close()


@pytest.mark.asyncio
async def test_writes_between_a_compactions_merge_and_its_store_are_kept(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path, compact_every=3, background_compaction=False)
    await storage.open()
    updates = text_edits(5)
    await storage.write("acme", "r", [("jobs", "j", u) for u in updates[:3]])
    reader = storage._background_db
    writer = storage._writer_db
    assert reader is not None and writer is not None
    key = ("acme", "jobs", "j")
    merged = await on_thread(reader, _merge_in_thread, [key])
    assert [(m[0], m[1], m[3]) for m in merged] == [(key, -1, 3)]
    # two more writes commit after the merge read the log, before the merge is stored
    await storage.write("acme", "r", [("jobs", "j", u) for u in updates[3:]])
    await on_thread(writer, _store_compacted_in_thread, merged)
    assert _rows(storage.path, "SELECT seq FROM log ORDER BY seq") == [(4,), (5,)]
    state = (await storage.get_states("acme", [("jobs", "j")]))[("jobs", "j")]
    assert text_of(state) == "0,1,2,3,4,"
    await storage.close()


@pytest.mark.asyncio
async def test_background_compaction_runs_by_itself_and_after_a_restart(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path, compact_every=5, background_compaction=False)
    await storage.open()
    updates = text_edits(12)
    await storage.write("acme", "r", [("jobs", "j", u) for u in updates[:6]])
    await storage.close()  # closed with a compaction due and not done (as after a crash)
    assert _rows(storage.path, "SELECT COUNT(*) FROM log") == [(6,)]
    reopened = SQLiteRelayStorage(tmp_path, compact_every=5)
    await reopened.open()
    # the background task picks the long log up by itself
    await asyncio.wait_for(reopened.wait_compactions(1), 10)
    assert _rows(storage.path, "SELECT COUNT(*) FROM log") == [(0,)]
    for update in updates[6:]:  # 6 more single writes: due again, compacted in the background
        await reopened.write("acme", "r", [("jobs", "j", update)])
    await asyncio.wait_for(reopened.wait_compactions(2), 10)
    state = (await reopened.get_states("acme", [("jobs", "j")]))[("jobs", "j")]
    assert text_of(state) == "".join(f"{i}," for i in range(12))
    await reopened.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.asyncio
async def test_cached_states_hold_every_update_committed_before_the_read(
    tmp_path: Path, seed: int
) -> None:
    # Reads race commits (and background compactions): every answer must hold every update
    # committed before the read began, whether it came from the cache or the database.
    rng = random.Random(seed)
    storage = SQLiteRelayStorage(tmp_path, compact_every=4, state_cache_bytes=4096)
    await storage.open()
    records = [f"r{i}" for i in range(6)]
    written: dict[str, list[str]] = {r: [] for r in records}
    counter = itertools.count()

    async def writer() -> None:
        for _ in range(60):
            record_id = rng.choice(records)
            number = next(counter)
            word = f"w{number}."
            update = text_update(word, 1000 + number)  # one Yjs client per update
            await storage.write("acme", "o", [("jobs", record_id, update)])
            written[record_id].append(word)

    async def reader() -> None:
        for _ in range(40):
            wanted = rng.sample(records, 3)
            before = {r: list(written[r]) for r in wanted}
            states = await storage.get_states("acme", [("jobs", r) for r in wanted])
            for record_id, words in before.items():
                text = text_of(states[("jobs", record_id)]) if words else ""
                assert all(word in text for word in words), (record_id, words, text)

    await asyncio.gather(writer(), reader(), reader())
    assert storage.states.hits > 0 and storage.states.misses > 0
    final = await storage.get_states("acme", [("jobs", r) for r in records])
    for record_id, words in written.items():
        if words:
            assert sorted(text_of(final[("jobs", record_id)]).split(".")[:-1]) == sorted(
                w[:-1] for w in words
            )
    await storage.close()


@pytest.mark.asyncio
async def test_new_records_are_cached_from_their_updates_and_old_ones_never_partially(
    tmp_path: Path,
) -> None:
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    first, second, third = text_edits(3)
    await storage.write("acme", "r", [("jobs", "old", first)])
    await storage.close()
    reopened = SQLiteRelayStorage(tmp_path)  # empty cache; "old" exists in the database
    await reopened.open()
    await reopened.write(
        "acme", "r", [("jobs", "old", second), ("jobs", "new", text_update("n", 5))]
    )
    # "new" did not exist: cached whole from its update; "old" did: not cached from "second"
    assert ("acme", "jobs", "new") in reopened.states
    assert ("acme", "jobs", "old") not in reopened.states
    states = await reopened.get_states("acme", [("jobs", "old"), ("jobs", "new")])
    assert text_of(states[("jobs", "old")]) == "0,1,"  # read from the database, both updates
    assert reopened.states.hits == 1 and reopened.states.misses == 1
    await reopened.write("acme", "r", [("jobs", "old", third)])  # appended to the entry now
    states = await reopened.get_states("acme", [("jobs", "old")])
    assert text_of(states[("jobs", "old")]) == "0,1,2," and reopened.states.hits == 2
    await reopened.close()


@pytest.mark.asyncio
async def test_states_changed_by_commits_are_merged_soon_after(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    await storage.write(
        "acme", "r", [("jobs", f"j{i}", text_update(f"{i}", i + 1)) for i in range(40)]
    )
    await storage.write(
        "acme", "r", [("jobs", f"j{i}", text_update("+", 100 + i)) for i in range(40)]
    )
    # merged 16 per loop iteration, between other work (a slice may have run already)
    assert 0 < storage.states.unmerged <= 40
    for _ in range(10):
        if not storage.states.unmerged:
            break
        await asyncio.sleep(0)  # one loop iteration, not a wait for time
    assert storage.states.unmerged == 0
    states = await storage.get_states("acme", [("jobs", f"j{i}") for i in range(40)])
    assert all(sorted(text_of(states[("jobs", f"j{i}")])) == sorted(f"{i}+") for i in range(40))
    await storage.close()


@pytest.mark.asyncio
async def test_checkpoints_and_compaction_rounds_share_their_connection_without_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A checkpoint's result row once stayed unread on the connection the compaction reads
    # with: the next round's COMMIT failed, its read snapshot stayed open, and from then on
    # every round and every checkpoint failed (the WAL grew without bound).
    storage = SQLiteRelayStorage(tmp_path, compact_every=8, background_compaction=False)
    await storage.open()
    updates = text_edits(48)
    try:
        for start in range(0, 48, 8):
            for update in updates[start : start + 8]:
                await storage.write("acme", "r1", [("jobs", "j1", update)])
            await storage.checkpoint()
            assert await storage.compact_pending() == 1
        assert storage.stats.compactions == 6
        numbers = storage.numbers()
        assert (numbers.compaction_failures, numbers.checkpoint_failures) == (0, 0)
        with sqlite3.connect(storage.path) as db:
            assert db.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 0
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0  # no reader left holding an old snapshot
        states = await storage.get_states("acme", [("jobs", "j1")])
        assert text_of(states[("jobs", "j1")]) == "".join(f"{i}," for i in range(48))
    finally:
        await storage.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.asyncio
async def test_a_long_log_is_read_and_compacted_whole(tmp_path: Path) -> None:
    # A log far past compact_every (compaction lagging behind a burst on one record): reading
    # and compacting merge it in bounded groups (crdt_sync.yjs.merge), and nothing is lost.
    storage = SQLiteRelayStorage(
        tmp_path, compact_every=1000, background_compaction=False, state_cache_bytes=0
    )
    await storage.open()
    try:
        updates = text_edits(1500)
        for start in range(0, 1500, 100):
            await storage.write(
                "acme", "r", [("jobs", "j", u) for u in updates[start : start + 100]]
            )
        expected = "".join(f"{i}," for i in range(1500))
        states = await storage.get_states("acme", [("jobs", "j")])
        assert text_of(states[("jobs", "j")]) == expected
        assert await storage.compact_pending() == 1
        with sqlite3.connect(storage.path) as db:
            assert db.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 0
        states = await storage.get_states("acme", [("jobs", "j")])
        assert text_of(states[("jobs", "j")]) == expected
    finally:
        await storage.close()


@pytest.mark.asyncio
async def test_old_origins_are_forgotten_in_the_background_and_nothing_is_missed(
    tmp_path: Path,
) -> None:
    storage = SQLiteRelayStorage(tmp_path, forget_origins_after=20)
    await storage.open()
    try:
        u = text_edits(1)[0]
        for i in range(10):
            await storage.write("acme", "alice", [("jobs", f"a{i}", u)])  # seqs 1-10
        for i in range(10):
            await storage.write("acme", "bob", [("jobs", f"b{i}", u)])  # seqs 11-20
        for i in range(30):
            await storage.write("acme", "carol", [("jobs", f"c{i % 5}", u)])  # seqs 21-50
        # Rows more than 20 changes old lose their origin, by themselves (background task).
        for _ in range(200):
            with sqlite3.connect(storage.path) as db:
                named = db.execute(
                    "SELECT COUNT(*) FROM changes WHERE origin != '' AND seq < 30"
                ).fetchone()[0]
            if named == 0:
                break
            await asyncio.sleep(0.02)
        assert named == 0
        with sqlite3.connect(storage.path) as db:
            rows = dict(db.execute("SELECT origin, COUNT(*) FROM changes GROUP BY origin"))
        assert rows == {"": 20, "carol": 5}  # a0-a9 and b0-b9 collapsed; carol's are recent
        # A cursor from before the horizon gets alice's own old records too (a5-a9: a few
        # extra diffs); a recent cursor is answered exactly as before.
        old = await storage.changed_since("acme", ["jobs"], 5, "alice")
        assert len(old) == 20 and ("jobs", "a7") in old and ("jobs", "a2") not in old
        assert await storage.changed_since("acme", ["jobs"], 48, "alice") == [
            ("jobs", "c3"),
            ("jobs", "c4"),
        ]
        assert await storage.changed_since("acme", ["jobs"], 48, "carol") == []
    finally:
        await storage.close()


@pytest.mark.asyncio
async def test_forgetting_origins_runs_in_short_transactions_and_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crdt_sync.server.storage.sqlite as storage_module

    monkeypatch.setattr(storage_module, "_FORGET_SEQS", 4)
    storage = SQLiteRelayStorage(tmp_path, forget_origins_after=0, background_compaction=False)
    await storage.open()
    try:
        u = text_edits(1)[0]
        for i in range(30):
            await storage.write("acme", f"replica-{i}", [("jobs", f"r{i % 3}", u)])
        assert await storage.forget_due_origins() == 0  # 0: never by itself
        assert await storage.forget_origins("acme", before_seq=25) == 24  # seqs 1..24
        assert await storage.forget_origins("acme", before_seq=25) == 0  # done already
        with sqlite3.connect(storage.path) as db:
            origins = db.execute(
                "SELECT origin, COUNT(*) FROM changes GROUP BY origin = ''"
            ).fetchall()
        assert sorted(count for _, count in origins) == [3, 6]  # r0..r2 forgotten; 6 recent
    finally:
        await storage.close()


# -- the field index ---------------------------------------------------------------------


def subscription_plan(path: Path, tenant: str, selection: Selection) -> list[str]:
    sql, params = members_query(tenant, selection)
    with sqlite3.connect(path) as db:
        return [str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


@pytest.mark.asyncio
async def test_evaluating_a_subscription_is_an_indexed_query(tmp_path: Path) -> None:
    """The plan of a rolling window AND a status, plus pinned ids, within an owner grant:
    every table access is a SEARCH on an index, never a SCAN, and no document is read."""
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    try:
        rows = [
            ("jobs", f"j{i}", record_update(owner=f"u{i % 7}", date=f"2026-12-{1 + i % 28:02}"))
            for i in range(300)
        ]
        await storage.write("acme", "r1", rows)
        subs = [
            Subscription(
                "jobs",
                where=query_field("date").window(0, 3) & query_field("owner").is_in(["u1", "u2"]),
            ),
            Subscription("jobs", ids=["j1", "j2"]),
        ]
        selection = Selection.of("jobs", subs, Eq("owner", Claim("sub"))).resolve(
            dt.datetime(2026, 12, 2, tzinfo=dt.UTC), {"sub": "u1"}
        )
        assert await storage.members("acme", selection) == {
            r
            for c, r, _ in rows
            if r in ("j1",) or (int(r[1:]) % 7 == 1 and 2 <= 1 + int(r[1:]) % 28 <= 5)
        }
    finally:
        await storage.close()
    plan = subscription_plan(storage.path, "acme", selection)
    accesses = [line for line in plan if line.startswith(("SCAN", "SEARCH"))]
    assert accesses, plan
    for line in accesses:
        # A SCAN is only of a subquery's rows or of the ids' json_each, never of a table.
        assert line.startswith("SEARCH") or "(subquery" in line or "json_each" in line, plan
        assert "snapshots" not in line and " log" not in line, plan
    assert any("record_fields_by_value" in line for line in accesses), plan
    print("\n".join(plan))


@pytest.mark.asyncio
async def test_a_schema_1_storage_is_indexed_when_opened(tmp_path: Path) -> None:
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    await storage.write("acme", "r1", [("jobs", "j1", record_update(status="open"))])
    await storage.close()
    with sqlite3.connect(storage.path) as db:  # as a relay of schema 1 left it
        db.execute("DROP TABLE record_fields")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    try:
        assert await storage.fields("acme", [("jobs", "j1")]) == {
            ("jobs", "j1"): {"status": "open"}
        }
    finally:
        await storage.close()


async def _old_storage(tmp_path: Path, schema: int) -> SQLiteRelayStorage:
    """A storage as a relay of ``schema`` (1: no field index, 2: no tombstones) left it,
    holding a live record j2 and a record j1 deleted by a replica (the tombstone pushed to
    the old relay)."""
    storage = SQLiteRelayStorage(tmp_path)
    await storage.open()
    writer = RecordWriter()
    await storage.write("acme", "r1", [("jobs", "j1", writer.write(status="open"))])
    await storage.write("acme", "r1", [("jobs", "j2", record_update(status="open"))])
    await storage.write("acme", "r1", [("jobs", "j1", writer.delete())])
    await storage.close()
    with sqlite3.connect(storage.path) as db:
        db.execute("DROP TABLE tombstones")
        db.execute("DROP TABLE purged")
        if schema == 1:
            db.execute("DROP TABLE record_fields")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(schema),))
    return SQLiteRelayStorage(tmp_path)


@pytest.mark.asyncio
@pytest.mark.parametrize("schema", [1, 2])
async def test_an_older_storage_gets_its_tombstones_when_opened(
    tmp_path: Path, schema: int
) -> None:
    storage = await _old_storage(tmp_path, schema)
    await storage.open()
    try:
        with sqlite3.connect(storage.path) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
        assert await storage.purge_tombstones(time.time() - 60) == []  # TTL from the upgrade
        [purged] = await storage.purge_tombstones(time.time() + 60)
        assert (purged.collection, purged.record_id) == ("jobs", "j1")
        assert await storage.purged("acme", [("jobs", "j1")]) == {("jobs", "j1"): purged.tombstone}
        now = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)
        selection = Selection.of("jobs", [Subscription("jobs", where={"status": "open"})], None)
        assert await storage.members("acme", selection.resolve(now, {})) == {"j2"}
        with sqlite3.connect(storage.path) as db:
            for table in ("snapshots", "log", "changes", "tombstones", "record_fields"):
                assert db.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE record_id = 'j1'"
                ).fetchone() == (0,), table
    finally:
        await storage.close()
