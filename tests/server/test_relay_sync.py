"""Upload, fan-out, catch-up and validation against a running relay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.relay import RelayClient, RelayProcess
from pycrdt import Doc, Map, Text

from crdt_sync.protocol import UpdatesReceived


def _note(text: str, client_id: int = 1) -> bytes:
    doc = Doc(client_id=client_id)
    doc.get("notes", type=Text).insert(0, text)
    return doc.get_update()


def _read(updates: list[bytes]) -> str:
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("notes", type=Text))


@pytest.mark.asyncio
async def test_push_is_acked_and_fanned_out_to_other_subscribers_only(
    relay: RelayProcess,
) -> None:
    token = relay.token("fanout", ["jobs", "contacts"])
    async with (
        RelayClient.open(relay.url, token, "alice") as alice,
        RelayClient.open(relay.url, token, "bob") as bob,
        RelayClient.open(relay.url, token, "carol") as carol,
    ):
        await alice.catch_up(["jobs"], None)
        await bob.catch_up(["jobs"], None)
        await carol.catch_up(["contacts"], None)
        acked, rejected = await alice.push_and_settle(
            [(1, "jobs", "j1", _note("hello")), (2, "contacts", "c1", _note("x"))]
        )
        assert (acked, rejected) == ({1, 2}, {})
        # the copy goes out after the commit, with its cursor (--early-fanout: see
        # test_relay_early_fanout.py)
        live = await bob.next_event(UpdatesReceived)
        assert [(i.collection, i.record_id) for i in live.items] == [("jobs", "j1")]
        assert live.cursor is not None and live.cursor >= 1
        assert _read([live.items[0].update]) == "hello"
        cursor_frame = live
        live_contact = await carol.next_event(UpdatesReceived)
        assert [(i.collection, i.record_id) for i in live_contact.items] == [("contacts", "c1")]
        # bob pushes: alice (subscribed to jobs) gets it, bob does not get his own back
        acked, _ = await bob.push_and_settle([(1, "jobs", "j2", _note("from bob", 2))])
        assert acked == {1}
        back = await alice.next_event(UpdatesReceived)
        assert [i.record_id for i in back.items] == ["j2"]
        # bob saw no echo of his own push: the next thing he gets is alice's next update
        await alice.push_and_settle([(3, "jobs", "j3", _note("third"))])
        following = await bob.next_event(UpdatesReceived)
        assert [i.record_id for i in following.items] == ["j3"]
        assert following.cursor is not None and following.cursor > cursor_frame.cursor


@pytest.mark.asyncio
async def test_catch_up_lists_only_what_others_changed_since_the_cursor(
    relay: RelayProcess,
) -> None:
    token = relay.token("catchup", ["jobs"])
    async with RelayClient.open(relay.url, token, "office") as office:
        await office.push_and_settle(
            [(i, "jobs", f"job-{i}", _note(f"job {i}")) for i in range(1, 51)]
        )
    async with RelayClient.open(relay.url, token, "tech") as tech:
        changed, updates, cursor = await tech.catch_up(["jobs"], None)
        assert len(changed) == 50 and len(updates) == 50
        assert _read(updates[("jobs", "job-7")]) == "job 7"
        # the tech edits two records himself while "online"
        await tech.push_and_settle(
            [(1, "jobs", "job-1", _note("!", 9)), (2, "jobs", "t", _note("t"))]
        )
    async with RelayClient.open(relay.url, token, "office") as office:
        await office.push_and_settle(
            [(51, "jobs", "job-3", _note("more", 3)), (52, "jobs", "job-99", _note("new"))]
        )
    async with RelayClient.open(relay.url, token, "tech") as tech:
        changed, updates, new_cursor = await tech.catch_up(["jobs"], cursor)
        # only the office's two changes: not the 50 cached records, not the tech's own edits
        assert sorted(changed) == [("jobs", "job-3"), ("jobs", "job-99")]
        assert new_cursor > cursor
        changed, updates, same = await tech.catch_up(["jobs"], new_cursor)
        assert changed == [] and updates == {} and same == new_cursor


@pytest.mark.asyncio
async def test_diffs_answer_state_vectors_with_only_what_is_missing(relay: RelayProcess) -> None:
    token = relay.token("diffs", ["jobs"])
    doc = Doc(client_id=5)
    text = doc.get("notes", type=Text)
    text.insert(0, "x" * 5000)
    first = doc.get_update()
    before = doc.get_state()
    text.insert(0, "tail")
    second = doc.get_update(before)
    async with RelayClient.open(relay.url, token, "w") as writer:
        await writer.push_and_settle([(1, "jobs", "big", first), (2, "jobs", "big", second)])
    replica = Doc()
    replica.apply_update(first)
    async with RelayClient.open(relay.url, token, "r") as reader:
        changed, updates, _ = await reader.catch_up(
            ["jobs"], None, {("jobs", "big"): replica.get_state()}
        )
    assert changed == [("jobs", "big")]
    (diff,) = updates[("jobs", "big")]
    assert len(diff) < 200  # the missing "tail", not the 5000 characters
    replica.apply_update(diff)
    assert str(replica.get("notes", type=Text)) == "tail" + "x" * 5000


@pytest.mark.asyncio
async def test_invalid_update_is_rejected_and_the_rest_is_stored(relay: RelayProcess) -> None:
    token = relay.token("invalid", ["jobs"])
    async with RelayClient.open(relay.url, token, "w") as writer:
        acked, rejected = await writer.push_and_settle(
            [
                (1, "jobs", "a", _note("ok")),
                (2, "jobs", "b", b"\xff\xfenot yjs"),
                (3, "jobs", "c", _note("ok too")),
            ]
        )
        assert acked == {1, 3}
        assert rejected[2][0] == "invalid_update"
        fetched = await writer.fetch([("jobs", "a"), ("jobs", "b"), ("jobs", "c")])
    assert sorted(fetched) == [("jobs", "a"), ("jobs", "c")]


VALIDATOR = """
from pycrdt import Doc, Map
from crdt_sync.server import UpdateRejected

def closed_jobs_are_read_only(collection, record_id, update, current_state, grant):
    if current_state is None:
        return
    doc = Doc()
    doc.apply_update(current_state)
    if doc.get("fields", type=Map).get("status") == "closed":
        raise UpdateRejected("job already closed by the office")
"""


@pytest.mark.asyncio
async def test_validator_hook_rejects_with_its_reason(
    tmp_path: Path, relay_factory: Callable[..., RelayProcess]
) -> None:
    (tmp_path / "job_rules.py").write_text(VALIDATOR)
    relay = relay_factory(args=["--validator", "job_rules:closed_jobs_are_read_only"])
    token = relay.token("acme", ["jobs"])
    office_doc = Doc(client_id=1)
    office_doc.get("fields", type=Map)["status"] = "closed"
    tech_doc = Doc(client_id=2)
    tech_doc.get("fields", type=Map)["status"] = "in_progress"
    async with RelayClient.open(relay.url, token, "office") as office:
        acked, _ = await office.push_and_settle([(1, "jobs", "job-42", office_doc.get_update())])
        assert acked == {1}
    async with RelayClient.open(relay.url, token, "tech") as tech:
        acked, rejected = await tech.push_and_settle(
            [(1, "jobs", "job-42", tech_doc.get_update()), (2, "jobs", "job-43", _note("fine"))]
        )
        assert acked == {2}
        assert rejected == {1: ("rejected", "job already closed by the office")}
        fetched = await tech.fetch([("jobs", "job-42")])
    doc = Doc()
    doc.apply_update(fetched[("jobs", "job-42")])
    assert doc.get("fields", type=Map)["status"] == "closed"


@pytest.mark.asyncio
async def test_many_connections_push_concurrently_and_all_converge(relay: RelayProcess) -> None:
    token = relay.token("concurrent", ["jobs"])
    writers = 8

    async def write(index: int) -> set[int]:
        async with RelayClient.open(relay.url, token, f"w{index}") as client:
            doc = Doc(client_id=100 + index)
            text = doc.get("notes", type=Text)
            items = []
            for seq in range(1, 41):
                before = doc.get_state()
                text.insert(0, f"{index}.")
                items.append((seq, "jobs", "shared", doc.get_update(before)))
            acked, _ = await client.push_and_settle(items)
            return acked

    results = await asyncio.gather(*(write(i) for i in range(writers)))
    assert all(acked == set(range(1, 41)) for acked in results)
    async with RelayClient.open(relay.url, token, "reader") as reader:
        fetched = await reader.fetch([("jobs", "shared")])
    text = _read([fetched[("jobs", "shared")]])
    assert sorted(text.split(".")[:-1]) == sorted(str(i) for i in range(writers) for _ in range(40))
