"""StateCache (server/storage/state_cache.py): merged record states kept exact and bounded."""

from __future__ import annotations

from crdt_sync.server.storage import StateCache
from helpers.yjs_updates import text_of, text_update


def test_state_cache_never_keeps_a_read_older_than_a_commit_made_meanwhile() -> None:
    cache = StateCache(1 << 20)
    key = ("acme", "jobs", "j")
    first, second = text_update("a", 1), text_update("b", 2)
    read = cache.read_started()
    other = cache.read_started()
    cache.committed(key, second)  # committed while both reads were in flight
    cache.read_done(read, {key: first})  # the read may predate it: not cached
    assert cache.get(key) is None
    later = cache.read_started()
    cache.read_done(other, {key: first})  # same for the other read
    assert cache.get(key) is None
    cache.read_done(later, {key: first})  # no commit during this one: cached
    cache.committed(key, second)  # later commits are appended to the entry
    state = cache.get(key)
    assert state is not None and sorted(text_of(state)) == ["a", "b"]


def test_state_cache_stays_within_its_budget_least_recently_used_out() -> None:
    cache = StateCache(300)
    updates = {f"r{i}": text_update("x" * 50, i + 1) for i in range(6)}
    for record_id, update in updates.items():
        cache.read_done(cache.read_started(), {("acme", "jobs", record_id): update})
        assert cache.size <= 300
    assert cache.get(("acme", "jobs", "r0")) is None  # the oldest went first
    assert cache.get(("acme", "jobs", "r5")) == updates["r5"]
    disabled = StateCache(0)
    disabled.read_done(disabled.read_started(), {("acme", "jobs", "r0"): updates["r0"]})
    assert len(disabled) == 0


def test_state_cache_merges_changed_entries_in_slices_and_leaves_big_ones_to_reads() -> None:
    cache = StateCache(1 << 20)
    small, big = ("acme", "jobs", "small"), ("acme", "jobs", "big")
    for key, text in ((small, "s"), (big, "b" * 5000)):
        cache.read_done(cache.read_started(), {key: text_update(text, 1)})
        cache.committed(key, text_update("!", 2))
    assert cache.unmerged == 2
    assert cache.merge_some(1, 1000) == 1  # one merged (small), one waits
    assert cache.merge_some(5, 1000) == 0  # big is over the limit: left for its read
    assert sorted(text_of(cache.get(small) or b"")) == ["!", "s"]
    assert cache.hits == 1
    state = cache.get(big)  # merged on read
    assert state is not None and sorted(set(text_of(state))) == ["!", "b"]
    size = cache.size
    assert size == len(cache.get(small) or b"") + len(state)
