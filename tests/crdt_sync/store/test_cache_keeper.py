"""Retention, quota, expiry and clearing of the local cache, on real SQLite files.

The promise under test throughout: a record with unsynced changes (an outbox entry of any
status) is never evicted, expired or cleared.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from crdt_sync.cache_policy import DAY, HOUR, CacheEvent, CacheEventKind, CachePolicy
from crdt_sync.errors import InvalidState, RecordNotFound, UnsyncedChangesError
from crdt_sync.store.cache_keeper import LAST_SYNCED_SETTING, MAX_AGE_SETTING, ROW_OVERHEAD
from crdt_sync.store.removal import KEPT_TABLES, PER_RECORD_TABLES, remove_records
from crdt_sync.store.sqlite import LocalStore

pytestmark = pytest.mark.asyncio

T0 = 1_700_000_000.0


class Clock:
    """A settable wall clock (seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _open(path: Path, clock: Clock, policy: CachePolicy | None = None) -> LocalStore:
    # A long check interval: the tests drive the checks themselves.
    return await LocalStore.open(
        path, time_source=clock, cache=policy or CachePolicy(check_interval=1e6)
    )


async def _confirmed(store: LocalStore, record_id: str, text: str = "x" * 100) -> None:
    """A record the relay has (its update applied as remote: no outbox entry)."""
    source = await LocalStore.open(store.path.with_name(f"src-{record_id}.db"))
    try:
        async with source.edit("jobs", record_id) as job:
            job["notes"] = text
        update = await source.encode_state("jobs", record_id)
    finally:
        await source.close()
    await store.apply_remote([("jobs", record_id, update)])


def _rows(path: Path, table: str, record_id: str) -> int:
    db = sqlite3.connect(path)
    try:
        (count,) = db.execute(f"SELECT COUNT(*) FROM {table} WHERE id = ?", (record_id,)).fetchone()
        return int(count)
    finally:
        db.close()


async def test_size_counts_snapshot_state_vector_and_log(tmp_path: Path) -> None:
    clock = Clock(T0)
    async with await _open(tmp_path / "s.db", clock) as store:
        await _confirmed(store, "a")
        async with store.edit("jobs", "a") as job:
            job["status"] = "open"
        await store.state_vectors([("jobs", "a")])
        [measured] = await store.cache.measure()
        db = sqlite3.connect(store.path)
        confirmed, vector = db.execute(
            "SELECT length(confirmed), length(state_vector) FROM records"
        ).fetchone()
        logs = [n for (n,) in db.execute("SELECT length(data) FROM updates")]
        db.close()
        assert measured.size == confirmed + (vector or 0) + ROW_OVERHEAD + sum(
            logs
        ) + ROW_OVERHEAD * len(logs)
        assert measured.pending and measured.key == ("jobs", "a")


async def test_quota_evicts_lru_and_skips_a_record_with_pending_changes(tmp_path: Path) -> None:
    clock = Clock(T0)
    events: list[CacheEvent] = []
    async with await _open(tmp_path / "q.db", clock) as store:
        store.cache.on_event(events.append)
        for i, name in enumerate(["old-pending", "old", "mid", "new"]):
            clock.now = T0 + i
            await _confirmed(store, name)
        clock.now = T0 + 10
        async with store.edit("jobs", "old-pending") as job:  # unsynced change
            job["status"] = "done"
        clock.now = T0 + 11
        await store.get("jobs", "new")  # accessed: most recently used
        sizes = {r.key[1]: r.size for r in await store.cache.measure()}
        # Room for the pending record and one more: "old", then "mid" must go.
        store.cache.policy = CachePolicy(
            quota=sizes["old-pending"] + sizes["new"], check_interval=1e6
        )
        report = await store.cache.apply_policy()
        assert report.evicted == 2 and not report.blocked
        assert sorted(await store.ids("jobs")) == ["new", "old-pending"]
        assert (await store.get("jobs", "old-pending"))["status"] == "done"
        assert await store.outbox.count() == 1
        for table in ("records", "updates", "conflict_scan"):
            assert _rows(store.path, table, "old") == 0
        evicted = [e for e in events if e.kind is CacheEventKind.EVICTED]
        assert [(e.reason, e.records) for e in evicted] == [("quota", 2)]
        assert evicted[0].bytes == sizes["old"] + sizes["mid"]


async def test_quota_blocked_by_unsynced_records_warns(tmp_path: Path) -> None:
    clock = Clock(T0)
    events: list[CacheEvent] = []
    async with await _open(
        tmp_path / "b.db", clock, CachePolicy(quota=10, check_interval=1e6)
    ) as store:
        store.cache.on_event(events.append)
        await _confirmed(store, "synced")
        async with store.edit("jobs", "local") as job:
            job["notes"] = "written offline"
        report = await store.cache.apply_policy()
        assert report.blocked and report.evicted == 1
        assert await store.ids("jobs") == ["local"]
        [blocked] = [e for e in events if e.kind is CacheEventKind.EVICTION_BLOCKED]
        assert blocked.unsynced_records == 1 and blocked.unsynced_entries == 1
        assert blocked.bytes == report.total - 10


async def test_retention_evicts_records_unused_for_n_days(tmp_path: Path) -> None:
    clock = Clock(T0)
    policy = CachePolicy(retention=30 * DAY, check_interval=1e6)
    async with await _open(tmp_path / "r.db", clock, policy) as store:
        for name in ("read", "changed", "idle", "idle-pending"):
            await _confirmed(store, name)
        async with store.edit("jobs", "idle-pending") as job:
            job["x"] = 1
        clock.now = T0 + 20 * DAY
        await store.get("jobs", "read")  # an access keeps it (written lazily: counted)
        await _confirmed(store, "changed", "changed later")  # a remote change keeps it
        clock.now = T0 + 31 * DAY
        report = await store.cache.apply_policy()
        assert report.evicted == 1
        assert await store.ids("jobs") == ["changed", "idle-pending", "read"]


async def test_clear_cache_keeps_every_unsynced_record_whatever_its_status(tmp_path: Path) -> None:
    clock = Clock(T0)
    async with await _open(tmp_path / "c.db", clock) as store:
        for name in ("queued", "error", "uploading", "synced"):
            await _confirmed(store, name)
        for name in ("queued", "error", "uploading"):
            async with store.edit("jobs", name) as job:
                job["status"] = name
        entries = {e.record_id: e.seq for e in await store.outbox.entries()}
        await store.outbox.mark_error(entries["error"], "rejected", "closed by the office")
        await store.outbox.mark_uploading([entries["uploading"]])
        await store.conn.execute(
            "INSERT INTO conflict_log (collection, id, conflict_key, path, lost_kind, won_kind,"
            " detected_at) VALUES ('jobs', 'synced', 'k', '[\"f\"]', 'value', 'value', 0)"
        )
        report = await store.clear_cache()
        assert report.evicted == 1 and report.unsynced_records == 3
        assert await store.ids("jobs") == ["error", "queued", "uploading"]
        for name in ("queued", "error", "uploading"):
            assert (await store.get("jobs", name))["status"] == name
        assert _rows(store.path, "conflict_log", "synced") == 1  # the app still shows it
        with pytest.raises(RecordNotFound):
            await store.get("jobs", "synced")


async def test_an_evicted_record_downloads_again_cleanly(tmp_path: Path) -> None:
    clock = Clock(T0)
    async with await _open(tmp_path / "d.db", clock) as store:
        await _confirmed(store, "a", "first")
        assert (await store.get("jobs", "a"))["notes"] == "first"  # in memory now
        await store.clear_cache()
        assert await store.state_vectors([("jobs", "a")]) == [b""]  # re-downloads it all
        assert not await store.exists("jobs", "a")
        await _confirmed(store, "a", "again")
        assert (await store.get("jobs", "a"))["notes"] == "again"


async def test_remove_records_refuses_a_pending_record(tmp_path: Path) -> None:
    async with await _open(tmp_path / "p.db", Clock(T0)) as store:
        async with store.edit("jobs", "a") as job:
            job["x"] = 1
        await _confirmed(store, "b")

        def remove(db: sqlite3.Connection) -> tuple[dict[tuple[str, str], str | None], None]:
            remove_records(db, [("jobs", "b"), ("jobs", "a")])
            return {}, None

        with pytest.raises(InvalidState, match="jobs/a has unsynced changes"):
            await store._removing(remove)
        assert sorted(await store.ids("jobs")) == ["a", "b"]  # nothing removed


async def test_every_per_record_table_is_covered(tmp_path: Path) -> None:
    """A table with rows per record must be removed with it, or kept on purpose."""
    async with await _open(tmp_path / "t.db", Clock(T0)) as store:
        tables = [
            name
            for (name,) in await store.conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        per_record = set()
        for table in tables:
            columns = {
                row[1] for row in await store.conn.execute_fetchall(f"PRAGMA table_info({table})")
            }
            if {"collection", "id"} <= columns:
                per_record.add(table)
        assert per_record == set(PER_RECORD_TABLES) | set(KEPT_TABLES)


async def test_eviction_racing_edits_never_loses_an_edit(tmp_path: Path) -> None:
    clock = Clock(T0)
    async with await _open(
        tmp_path / "race.db", clock, CachePolicy(quota=0, check_interval=1e6)
    ) as store:
        for i in range(30):
            await _confirmed(store, f"r{i}")

        async def edit(i: int) -> None:
            async with store.edit("jobs", f"r{i}") as job:
                job["edited"] = i

        tasks = [asyncio.ensure_future(edit(i)) for i in range(0, 30, 2)]
        evictions = [asyncio.ensure_future(store.cache.apply_policy()) for _ in range(3)]
        await asyncio.gather(*tasks, *evictions)
        await store.cache.apply_policy()
        assert sorted(await store.ids("jobs")) == sorted(f"r{i}" for i in range(0, 30, 2))
        for i in range(0, 30, 2):
            record = await store.get("jobs", f"r{i}")
            assert record["edited"] == i and record.pending
            if record.fields.get("notes") is not None:  # the edit came before the eviction
                assert record["notes"] == "x" * 100


async def test_unsynced_old_warns_once_per_oldest_change(tmp_path: Path) -> None:
    clock = Clock(T0)
    events: list[CacheEvent] = []
    policy = CachePolicy(unsynced_warning_after=HOUR, check_interval=1e6)
    async with await _open(tmp_path / "u.db", clock, policy) as store:
        store.cache.on_event(events.append)
        async with store.edit("jobs", "a") as job:
            job["x"] = 1
        await store.cache.check()
        clock.now = T0 + 2 * HOUR
        await store.cache.check()
        await store.cache.check()
        old = [e for e in events if e.kind is CacheEventKind.UNSYNCED_OLD]
        assert len(old) == 1 and old[0].unsynced_entries == 1 and old[0].oldest_unsynced_at == T0


async def test_expiry_warns_then_clears_all_but_unsynced(tmp_path: Path) -> None:
    clock = Clock(T0)
    events: list[CacheEvent] = []
    async with await _open(tmp_path / "e.db", clock) as store:
        store.cache.on_event(events.append)
        await _confirmed(store, "synced")
        async with store.edit("jobs", "local") as job:
            job["x"] = 1
        store.cache.set_max_age(2 * DAY)
        store.cache.synced(T0)
        assert store.cache.expires_at == T0 + 2 * DAY
        clock.now = T0 + DAY + 1
        await store.cache.check()
        clock.now = T0 + 2 * DAY - 60
        await store.cache.check()
        clock.now = T0 + 2 * DAY
        await store.cache.check()
        kinds = [
            e.kind for e in events if e.is_warning and e.kind is not CacheEventKind.UNSYNCED_OLD
        ]
        assert kinds == [
            CacheEventKind.EXPIRY_SOON,
            CacheEventKind.EXPIRY_SOON,
            CacheEventKind.EXPIRED,
        ]
        expired = events[-1]
        assert expired.kind is CacheEventKind.EXPIRED and expired.records == 1
        assert expired.unsynced_records == 1
        assert await store.ids("jobs") == ["local"]


async def test_expiry_settings_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock(T0)
    async with await _open(tmp_path / "x.db", clock) as store:
        store.cache.set_max_age(3 * HOUR)
        store.cache.synced(T0 + 5)
    async with await _open(tmp_path / "x.db", clock) as store:
        assert store.cache.max_age == 3 * HOUR
        assert store.cache.expires_at == T0 + 5 + 3 * HOUR
        assert await store.get_setting(MAX_AGE_SETTING) == repr(3 * HOUR)
        assert await store.get_setting(LAST_SYNCED_SETTING) == repr(T0 + 5)
        store.cache.set_max_age(None)  # a relay that sets none: no expiry
    async with await _open(tmp_path / "x.db", clock) as store:
        assert store.cache.max_age is None and store.cache.expires_at is None


async def test_online_the_cache_does_not_age(tmp_path: Path) -> None:
    clock = Clock(T0)
    async with await _open(tmp_path / "o.db", clock) as store:
        store.cache.set_max_age(HOUR)
        store.cache.synced(T0)
        store.cache.set_live(True)
        assert store.cache.expires_at is None
        clock.now = T0 + 5 * HOUR
        await store.cache.check()  # online: refreshes the sync time instead of expiring
        store.cache.set_live(False)
        assert store.cache.expires_at == T0 + 5 * HOUR + HOUR


async def test_background_timer_warns_and_expires_in_real_time(tmp_path: Path) -> None:
    policy = CachePolicy(expiry_warnings=(0.6, 0.3), check_interval=1e6)
    events: list[CacheEvent] = []
    async with await LocalStore.open(tmp_path / "bg.db", cache=policy) as store:
        await _confirmed(store, "synced")
        async with store.edit("jobs", "local") as job:
            job["x"] = 1
        store.cache.on_event(events.append)
        expired = asyncio.Event()
        store.cache.on_event(lambda e: e.kind is CacheEventKind.EXPIRED and expired.set())
        store.cache.set_max_age(0.9)
        store.cache.synced()
        async with asyncio.timeout(10):
            await expired.wait()
        kinds = [e.kind for e in events if e.kind is not CacheEventKind.EVICTED]
        assert kinds == [
            CacheEventKind.EXPIRY_SOON,
            CacheEventKind.EXPIRY_SOON,
            CacheEventKind.EXPIRED,
        ]
        assert await store.ids("jobs") == ["local"]


async def test_wipe_refuses_with_counts_then_forced(tmp_path: Path) -> None:
    store = await _open(tmp_path / "w.db", Clock(T0))
    for name in ("a", "b"):
        for _ in range(2):
            async with store.edit("jobs", name) as job:
                job["n"] = 1
    with pytest.raises(UnsyncedChangesError) as refused:
        await store.wipe()
    assert (refused.value.entries, refused.value.records) == (4, 2)
    assert "4 unsynced change(s) in 2 record(s)" in str(refused.value)
    assert await store.ids("jobs") == ["a", "b"]  # still open, nothing lost
    await store.wipe(force=True)
    assert not (tmp_path / "w.db").exists()


async def test_wipe_of_a_synced_store(tmp_path: Path) -> None:
    store = await _open(tmp_path / "ok.db", Clock(T0))
    await _confirmed(store, "a")
    await store.wipe()
    assert not (tmp_path / "ok.db").exists()


async def test_absent_lists_removed_records_only_once_records_were_removed(tmp_path: Path) -> None:
    path = tmp_path / "ab.db"
    async with await _open(path, Clock(T0)) as store:
        await _confirmed(store, "a")
        await _confirmed(store, "b")
        # Nothing ever removed: no query, nothing absent (a new record's update is whole).
        assert await store.absent([("jobs", "a"), ("jobs", "new")]) == []
        await store.cache.apply_policy()  # nothing to evict: still nothing removed
        assert await store.absent([("jobs", "new")]) == []
        store.cache.policy = CachePolicy(quota=0, check_interval=1e6)
        await store.cache.apply_policy()
        assert await store.absent([("jobs", "a"), ("jobs", "a"), ("jobs", "zz")]) == [
            ("jobs", "a"),
            ("jobs", "zz"),
        ]
        await _confirmed(store, "a")
        assert await store.absent([("jobs", "a"), ("jobs", "b")]) == [("jobs", "b")]
    async with await _open(path, Clock(T0)) as store:  # remembered across a restart
        assert await store.absent([("jobs", "b")]) == [("jobs", "b")]


async def test_a_record_edited_or_read_after_it_was_measured_is_not_removed(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    async with await _open(tmp_path / "m.db", clock) as store:
        for name in ("edited", "read", "idle"):
            await _confirmed(store, name)
        measured = await store.cache.measure()
        clock.now = T0 + 5
        async with store.edit("jobs", "edited") as job:  # unsynced since the measure
            job["status"] = "done"
        await store.get("jobs", "read")  # used since the measure (its time written lazily)
        removed = await store.cache._remove_unchanged(measured, check_use=True)
        assert [r.key for r in removed] == [("jobs", "idle")]
        assert sorted(await store.ids("jobs")) == ["edited", "read"]
        # Clearing ignores use, never unsynced changes.
        removed = await store.cache._remove_unchanged(measured, check_use=False)
        assert [r.key for r in removed] == [("jobs", "read")]
        assert await store.ids("jobs") == ["edited"]


async def test_no_expiry_while_a_sync_is_under_way(tmp_path: Path) -> None:
    clock = Clock(T0)
    events: list[CacheEvent] = []
    async with await _open(tmp_path / "sy.db", clock) as store:
        store.cache.on_event(events.append)
        await _confirmed(store, "a")
        store.cache.set_max_age(HOUR)
        store.cache.synced(T0)
        store.cache.set_syncing(True)
        clock.now = T0 + 2 * HOUR
        await store.cache.check()
        assert await store.ids("jobs") == ["a"] and not events  # waits for the sync's outcome
        store.cache.set_syncing(False)  # it failed: what fell due runs now
        await store.cache.check()
        assert await store.ids("jobs") == [] and events[-1].kind is CacheEventKind.EXPIRED


async def test_measure_counts_reads_whose_time_is_not_written_yet(tmp_path: Path) -> None:
    clock = Clock(T0)
    async with await _open(tmp_path / "lazy.db", clock) as store:
        await _confirmed(store, "a")
        clock.now = T0 + 100
        await store.get("jobs", "a")  # its time rides with the next write
        [measured] = await store.cache.measure()
        assert measured.last_used == T0 + 100


async def test_eviction_removes_projection_and_text_rows_and_live_queries_hear_it(
    tmp_path: Path,
) -> None:
    store = await LocalStore.open(
        tmp_path / "pj.db",
        time_source=Clock(T0),
        text_fields={"jobs": ["notes"]},
        cache=CachePolicy(check_interval=1e6),
    )
    async with store:
        for name in ("kept", "gone"):
            async with store.edit("jobs", name) as job:
                job["status"] = "open"
                job["notes"] = f"boiler {name}"
        await store.outbox.acknowledge(
            [e.seq for e in await store.outbox.entries() if e.record_id == "gone"]
        )
        assert {h.record.id for h in await store.search_text("jobs", "boiler")} == {"kept", "gone"}
        async with store.watch("jobs", {"status": "open"}) as live:
            assert {r.id for r in (await live.next()).records} == {"kept", "gone"}
            await store.clear_cache()
            async with asyncio.timeout(5):
                result = await live.next()
        assert [r.id for r in result.records] == ["kept"]
        [change] = result.changes
        assert (change.record_id, change.origin, change.after) == ("gone", "local", None)
        assert change.before == {"status": "open", "notes": "boiler gone"}
        assert [h.record.id for h in await store.search_text("jobs", "boiler")] == ["kept"]
        for table in ("projection", "record_text"):
            assert _rows(store.path, table, "gone") == 0
