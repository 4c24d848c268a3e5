"""codec.message_type: a frame's message type (the relay's metric label), read without
decoding it."""

from __future__ import annotations

import msgpack
import pytest

from crdt_sync import codec
from crdt_sync.codec import message_type
from crdt_sync.messages import (
    Ack,
    Changed,
    Error,
    Hello,
    Limits,
    Message,
    Ping,
    Pong,
    Push,
    PushItem,
    RecordKey,
    Reject,
    RejectItem,
    StateVectorItem,
    StateVectors,
    Subscribe,
    Synced,
    UpdateItem,
    Updates,
    Welcome,
)

MESSAGES: dict[str, Message] = {
    "hello": Hello("token", "replica"),
    "push": Push((PushItem(1, "jobs", "j", b"\x00\x00"),)),
    "sub": Subscribe(("jobs",), None),
    "sv": StateVectors((StateVectorItem("jobs", "j", b"\x00"),), done=True),
    "ping": Ping(1),
    "pong": Pong(1),
    "error": Error("bad_frame", "no", fatal=True),
    "welcome": Welcome("acme", ("jobs",), Limits(1000, 10)),
    "ack": Ack((1, 2)),
    "reject": Reject((RejectItem(1, "rejected", "no"),)),
    "changed": Changed((RecordKey("jobs", "j"),), cursor=3, done=True),
    "updates": Updates((UpdateItem("jobs", "j", b"\x00\x00"),), cursor=None),
    "synced": Synced(3),
}


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_every_encoded_message_is_labelled_with_its_type(kind: str) -> None:
    frame = codec.encode(MESSAGES[kind])
    assert message_type(frame) == kind
    # the same map with "t" last, as another encoder may write it (short, then long)
    wire = msgpack.unpackb(frame, raw=False)
    reordered = {key: wire[key] for key in sorted(wire, key=lambda k: k == "t")}
    assert message_type(msgpack.packb(reordered, use_bin_type=True)) == kind
    padded = {"pad": b"x" * 500, **reordered}
    assert message_type(msgpack.packb(padded, use_bin_type=True)) == kind


@pytest.mark.parametrize(
    "frame",
    [
        "text",
        b"",
        b"\xc1garbage",
        msgpack.packb({"t": "bogus", "items": []}),
        msgpack.packb({"items": [], "t": "bogus"}),
        msgpack.packb({"items": []}),
        msgpack.packb(["t", "push"]),
        msgpack.packb({"t": 7}),
        msgpack.packb({"x": 1, "t": "push"})[:-3],  # cut before the type
    ],
)
def test_anything_else_has_no_type(frame: bytes | str) -> None:
    assert message_type(frame) is None
