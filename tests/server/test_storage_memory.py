"""MemoryRelayStorage (server/storage/memory.py): what it adds to the contract, held commits."""

from __future__ import annotations

import asyncio

import pytest
from crdt_sync.server.storage import MemoryRelayStorage
from helpers.yjs_updates import text_edits, text_of

from crdt_sync.errors import StoreError


@pytest.mark.asyncio
async def test_held_writes_commit_together_on_release() -> None:
    storage = MemoryRelayStorage()
    await storage.open()
    storage.hold()
    first, second = text_edits(2)
    a = storage.submit("acme", "r", [("jobs", "j", first)])
    await asyncio.sleep(0)  # one loop iteration: an unheld write would commit in it
    b = storage.submit("acme", "r", [("jobs", "j", second)])
    await asyncio.sleep(0)
    assert (a.done(), b.done(), storage.waiting) == (False, False, 2)
    assert await storage.head("acme") == 0
    assert await storage.get_states("acme", [("jobs", "j")]) == {}
    storage.release()
    assert (a.result(), b.result(), storage.numbers().commits) == ([1], [2], 1)
    assert text_of((await storage.get_states("acme", [("jobs", "j")]))[("jobs", "j")]) == "0,1,"
    assert await storage.write("acme", "r", [("jobs", "k", first)]) == [3]  # not held anymore
    await storage.close()


@pytest.mark.asyncio
async def test_a_release_with_an_error_fails_the_held_writes_and_stores_nothing() -> None:
    storage = MemoryRelayStorage()
    await storage.open()
    storage.hold()
    first = text_edits(1)[0]
    held = storage.submit("acme", "r", [("jobs", "j", first)])
    storage.release("disk full")
    with pytest.raises(StoreError, match="disk full"):
        held.result()
    assert await storage.head("acme") == 0
    assert await storage.changed_since("acme", ["jobs"], None, "x") == []
    assert await storage.write("acme", "r", [("jobs", "j", first)]) == [1]
    await storage.close()


@pytest.mark.asyncio
async def test_close_commits_held_writes() -> None:
    storage = MemoryRelayStorage()
    await storage.open()
    storage.hold()
    held = storage.submit("acme", "r", [("jobs", "j", text_edits(1)[0])])
    await storage.close()
    assert held.result() == [1]
