"""Yjs rooms (records open on Yjs connections) and the endpoints' path parsing."""

from __future__ import annotations

import json

from crdt_sync.server.hocuspocus_endpoint import is_hocuspocus_path, parse_document_name
from crdt_sync.server.yjs_endpoint import is_yjs_path, parse_record_path
from crdt_sync.server.yjs_link import answer_state_vector
from crdt_sync.server.yjs_rooms import YjsRooms
from pycrdt import Doc, Map

from crdt_sync.yjs.awareness import AwarenessEntry, decode_awareness_update, encode_awareness_update

KEY = ("acme", "jobs", "job-1")


class Member:
    def __init__(self) -> None:
        self.updates: list[bytes] = []
        self.awareness: list[bytes] = []

    def deliver_update(self, update: bytes) -> None:
        self.updates.append(update)

    def deliver_awareness(self, update: bytes) -> None:
        self.awareness.append(update)

    def deliver_removed(self, reason: str) -> None:
        self.awareness.append(reason.encode())


def _presence(client: int, clock: int, state: object) -> bytes:
    return encode_awareness_update([AwarenessEntry(client, clock, json.dumps(state))])


def test_updates_reach_every_member_including_the_sender() -> None:
    rooms = YjsRooms()
    a, b, other = Member(), Member(), Member()
    rooms.join(KEY, a)
    rooms.join(KEY, b)
    rooms.join(("acme", "jobs", "job-2"), other)
    assert rooms.has_tenant("acme") and not rooms.has_tenant("globex")
    rooms.deliver_update(KEY, b"u1")
    assert a.updates == [b"u1"] and b.updates == [b"u1"] and other.updates == []


def test_awareness_is_broadcast_and_removed_when_a_member_leaves() -> None:
    rooms = YjsRooms()
    a, b = Member(), Member()
    rooms.join(KEY, a)
    rooms.join(KEY, b)
    rooms.apply_awareness(KEY, a, _presence(7, 1, {"user": "ana"}), now=0)
    assert a.awareness == b.awareness == [_presence(7, 1, {"user": "ana"})]
    assert rooms.full_awareness(KEY) == _presence(7, 1, {"user": "ana"})
    rooms.leave(KEY, a)
    assert decode_awareness_update(b.awareness[-1]) == [AwarenessEntry(7, 2, None)]
    assert rooms.full_awareness(KEY) is None
    rooms.leave(KEY, b)
    assert not rooms.has_tenant("acme")
    assert rooms.members(KEY) == frozenset()


def test_stale_awareness_expires() -> None:
    rooms = YjsRooms()
    a, b = Member(), Member()
    rooms.join(KEY, a)
    rooms.join(KEY, b)
    rooms.apply_awareness(KEY, a, _presence(7, 1, {}), now=0)
    rooms.expire_awareness(now=10)
    assert len(b.awareness) == 1
    rooms.expire_awareness(now=31)
    assert decode_awareness_update(b.awareness[-1]) == [AwarenessEntry(7, 2, None)]


def test_paths() -> None:
    assert is_yjs_path("/yjs/jobs/j1") and not is_yjs_path("/hocuspocus")
    assert parse_record_path("/yjs/jobs/job-42?token=x") == ("jobs", "job-42")
    assert parse_record_path("/yjs/jobs/a/b%20c") == ("jobs", "a/b c")
    assert parse_record_path("/yjs/jobs") is None
    assert parse_record_path("/yjs//j1") is None
    assert is_hocuspocus_path("/hocuspocus") and not is_hocuspocus_path("/hocuspocusx")
    assert parse_document_name("jobs/job-42\0session") == ("jobs", "job-42")
    assert parse_document_name("job-42") is None


def test_answer_state_vector_from_the_committed_state() -> None:
    assert answer_state_vector(None, b"\x00") == (b"\x00\x00", b"\x00")
    doc: Doc = Doc()
    doc.get("fields", type=Map)["a"] = 1
    state = doc.get_update()
    missing, vector = answer_state_vector(state, b"\x00")
    fresh: Doc = Doc()
    fresh.apply_update(missing)
    assert fresh.get("fields", type=Map)["a"] == 1
    assert vector == doc.get_state()
    assert answer_state_vector(state, b"\xff")[0] == state  # unreadable vector: everything
