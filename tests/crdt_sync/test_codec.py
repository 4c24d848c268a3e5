"""The codec: every message round-trips; the decoder refuses every malformed frame by type."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from crdt_sync import codec
from crdt_sync.errors import InvalidMessage, MessageTooBig
from crdt_sync.messages import (
    Ack,
    Changed,
    Dropped,
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
    Removed,
    RemovedItem,
    StateVectorItem,
    StateVectors,
    Subscribe,
    Synced,
    UpdateItem,
    Updates,
    Welcome,
)
from crdt_sync.query import field
from crdt_sync.subscriptions import Subscription

ALL_MESSAGES: list[Message] = [
    Hello("tok.en", "replica-1"),
    Push((PushItem(1, "jobs", "job-42", b"\x01\x02"), PushItem(2, "jobs", "j\u00e9b-43", b""))),
    Subscribe(("jobs", "contacts"), 17),
    Subscribe((), None),
    StateVectors((StateVectorItem("jobs", "job-42", b"\x01\x05\x03"),), done=True),
    StateVectors((), done=False),
    Ping(0),
    Pong(2**63 - 1),
    Error("bad_token", "signature mismatch", fatal=True),
    Error("forbidden", "", fatal=False),
    Welcome("acme", ("jobs",), Limits(1 << 20, 500)),
    Ack((1, 2, 3)),
    Reject((RejectItem(4, "rejected", "job already closed by the office"),)),
    Changed((RecordKey("jobs", "job-1"), RecordKey("contacts", "c-9")), cursor=99, done=False),
    Updates((UpdateItem("jobs", "job-1", b"\x00\x00"),), cursor=None),
    Updates((), cursor=12),
    Synced(99),
    Removed((RemovedItem("jobs", "job-1", "0000000003e8.000001.tech-17"),), cursor=None),
    Removed((), cursor=7),
    Synced(99, at=1_796_203_200_000),
    Dropped((RecordKey("appointments", "a-1"),)),
    Subscribe(
        ("jobs", "appointments"),
        17,
        (
            Subscription("jobs", ids=["job-1"]),
            Subscription("appointments", where=field("date").window(0, 3, tz="Europe/Paris")),
        ),
        since=1_796_203_200_000,
    ),
    Welcome(
        "acme",
        ("jobs",),
        Limits(1 << 20, 500),
        scopes=(("jobs", ["eq", "owner", {"claim": "sub"}]),),
    ),
]


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def assert_invalid(obj: Any, match: str | None = None) -> None:
    with pytest.raises(InvalidMessage, match=match):
        codec.decode(pack(obj))


class TestRoundTrip:
    @pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda msg: type(msg).__name__)
    def test_decode_of_encode_is_identity(self, msg: Message) -> None:
        data = codec.encode(msg)
        assert isinstance(data, bytes)
        assert codec.decode(data) == msg

    def test_wire_shape_is_the_spec_map(self) -> None:
        # docs/protocol.md, "Messages": the map keys are part of the protocol.
        hello = msgpack.unpackb(codec.encode(Hello("t", "r")))
        assert hello == {"t": "hello", "v": 1, "token": "t", "replica": "r"}
        push = msgpack.unpackb(codec.encode(Push((PushItem(3, "c", "r", b"u"),))))
        assert push == {"t": "push", "items": [[3, "c", "r", b"u"]]}
        welcome = msgpack.unpackb(codec.encode(Welcome("a", ("c",), Limits(10, 2))))
        assert welcome == {
            "t": "welcome",
            "v": 1,
            "tenant": "a",
            "collections": ["c"],
            "limits": {"max_frame": 10, "max_items": 2},
        }
        sv = msgpack.unpackb(codec.encode(StateVectors((), done=True)))
        assert sv == {"t": "sv", "items": [], "done": True}

    def test_payloads_are_msgpack_bin(self) -> None:
        raw = msgpack.unpackb(codec.encode(Updates((UpdateItem("c", "r", b"x"),), 1)), raw=True)
        assert raw[b"items"][0][2] == b"x"  # bin stays bytes even with raw=True
        assert raw[b"items"][0][0] == b"c"  # str is raw bytes only because raw=True

    def test_unknown_keys_are_ignored(self) -> None:
        frame = {"t": "ping", "id": 5, "future_field": [1, 2, 3]}
        assert codec.decode(pack(frame)) == Ping(5)

    def test_sv_without_done_is_not_done(self) -> None:
        assert codec.decode(pack({"t": "sv", "items": []})) == StateVectors((), done=False)

    def test_empty_state_vector_reads_as_the_empty_yjs_state_vector(self) -> None:
        msg = codec.decode(pack({"t": "sv", "items": [["c", "r", b""]], "done": False}))
        assert isinstance(msg, StateVectors)
        assert msg.items[0].state_vector == codec.EMPTY_STATE_VECTOR == b"\x00"


class TestFrameLevel:
    def test_frame_over_max_size_is_too_big(self) -> None:
        data = codec.encode(Push((PushItem(1, "c", "r", b"x" * 100),)))
        codec.decode(data, max_size=len(data))
        with pytest.raises(MessageTooBig):
            codec.decode(data, max_size=len(data) - 1)

    @pytest.mark.parametrize(
        "data",
        [b"", b"\xc1", b"\x81", b"\x92\x01", b"\xdd\xff\xff\xff\xff", b"\xc4\x05ab"],
        ids=[
            "empty",
            "never-used-byte",
            "truncated-map",
            "truncated-array",
            "huge-array",
            "short-bin",
        ],
    )
    def test_not_msgpack_is_invalid(self, data: bytes) -> None:
        with pytest.raises(InvalidMessage):
            codec.decode(data)

    def test_trailing_data_is_invalid(self) -> None:
        with pytest.raises(InvalidMessage):
            codec.decode(codec.encode(Ping(1)) + b"\x00")

    def test_forged_length_header_does_not_allocate(self) -> None:
        # A bin header claiming 4 GiB in a 10-byte frame: msgpack's limit refuses it upfront.
        with pytest.raises(InvalidMessage):
            codec.decode(b"\x81\xa1t\xc6\xff\xff\xff\xff" + b"ab")

    def test_top_level_must_be_a_map(self) -> None:
        assert_invalid([1, 2], match="map")
        assert_invalid("ping", match="map")

    def test_map_keys_must_be_strings(self) -> None:
        assert_invalid({1: "ping"})

    def test_extension_types_are_refused(self) -> None:
        assert_invalid({"t": "ping", "id": msgpack.ExtType(5, b"abcd")})

    def test_invalid_utf8_is_invalid(self) -> None:
        with pytest.raises(InvalidMessage):
            codec.decode(b"\x81\xa1t\xa2\xff\xfe")

    def test_deep_nesting_is_invalid_not_a_crash(self) -> None:
        data = b"\x81\xa1t" + b"\x91" * 100_000 + b"\x00"
        with pytest.raises(InvalidMessage):
            codec.decode(data)

    @pytest.mark.parametrize("kind", [None, 1, "", "nope", b"ping"])
    def test_unknown_type_is_invalid(self, kind: Any) -> None:
        assert_invalid({"t": kind, "id": 1}, match="unknown message type")

    def test_missing_type_is_invalid(self) -> None:
        assert_invalid({"id": 1}, match="unknown message type")


class TestFieldValidation:
    @pytest.mark.parametrize(
        "frame",
        [
            {"t": "ping"},
            {"t": "hello", "v": 1, "token": "x"},
            {"t": "welcome", "v": 1, "tenant": "a", "collections": []},
            {"t": "welcome", "v": 1, "tenant": "a", "collections": [], "limits": {"max_frame": 1}},
            {"t": "changed", "items": [], "cursor": 1},
            {"t": "error", "code": "x", "reason": "y"},
        ],
    )
    def test_missing_field_is_invalid(self, frame: dict[str, Any]) -> None:
        assert_invalid(frame, match="without field")

    @pytest.mark.parametrize("value", [True, -1, 2**63, 1.0, "1", None, b"1"])
    def test_integers_are_non_negative_int64_and_not_bool(self, value: Any) -> None:
        assert_invalid({"t": "ping", "id": value}, match="integer")

    def test_cursor_may_be_nil_only_where_the_spec_says(self) -> None:
        assert codec.decode(pack({"t": "sub", "collections": [], "cursor": None}))
        assert codec.decode(pack({"t": "updates", "items": [], "cursor": None}))
        assert_invalid({"t": "synced", "cursor": None})
        assert_invalid({"t": "changed", "items": [], "cursor": None, "done": True})

    @pytest.mark.parametrize("value", [0, 1, None, "true"])
    def test_booleans_must_be_booleans(self, value: Any) -> None:
        assert_invalid({"t": "error", "code": "x", "reason": "", "fatal": value}, match="boolean")
        assert_invalid({"t": "sv", "items": [], "done": value}, match="boolean")

    def test_payloads_must_be_bin_not_str(self) -> None:
        assert_invalid({"t": "push", "items": [[1, "c", "r", "text"]]}, match="binary")
        assert_invalid({"t": "updates", "items": [["c", "r", "u"]], "cursor": None})
        assert_invalid({"t": "sv", "items": [["c", "r", 0]]})

    def test_names_must_be_non_empty_bounded_strings(self) -> None:
        assert_invalid({"t": "push", "items": [[1, "", "r", b""]]}, match="empty")
        assert_invalid({"t": "push", "items": [[1, b"c", "r", b""]]}, match="string")
        too_long = "x" * (codec.MAX_NAME_LENGTH + 1)
        assert_invalid({"t": "changed", "items": [["c", too_long]], "cursor": 1, "done": True})
        assert_invalid({"t": "sub", "collections": ["ok", 3], "cursor": None})
        assert_invalid({"t": "hello", "v": 1, "token": "t", "replica": ""})

    def test_codes_are_bounded(self) -> None:
        long_code = "c" * (codec.MAX_CODE_LENGTH + 1)
        assert_invalid({"t": "error", "code": long_code, "reason": "", "fatal": True})
        assert_invalid({"t": "error", "code": "", "reason": "", "fatal": True})

    @pytest.mark.parametrize(
        "items",
        [
            "not-a-list",
            {"a": 1},
            [[1, "c", "r"]],
            [[1, "c", "r", b"u", b"extra"]],
            [(1, "c")],
            [None],
        ],
    )
    def test_items_must_be_rows_of_the_right_width(self, items: Any) -> None:
        assert_invalid({"t": "push", "items": items})

    def test_every_row_is_checked_not_only_the_first(self) -> None:
        rows = [[i, "c", "r", b"u"] for i in range(1, 50)] + [[50, "c", "r", "oops"]]
        assert_invalid({"t": "push", "items": rows})

    def test_limits_must_be_a_map_of_ints(self) -> None:
        base = {"t": "welcome", "v": 1, "tenant": "a", "collections": ["c"]}
        assert_invalid({**base, "limits": [1, 2]}, match="limits")
        assert_invalid({**base, "limits": {"max_frame": "big", "max_items": 1}})


def test_removed_wire_shape_and_bad_items() -> None:
    # docs/protocol.md, "Messages": [collection, record_id, tombstone] per item.
    removed = Removed((RemovedItem("jobs", "j1", "ts"),), None)
    assert msgpack.unpackb(codec.encode(removed)) == {
        "t": "removed",
        "items": [["jobs", "j1", "ts"]],
        "cursor": None,
    }
    assert_invalid({"t": "removed", "items": [["jobs", "j1"]], "cursor": None})
    assert_invalid({"t": "removed", "items": [["jobs", "", "ts"]], "cursor": None})
    assert_invalid({"t": "removed", "items": [["jobs", "j1", 3]], "cursor": None})


class TestSubscriptionFields:
    def test_old_frames_are_unchanged(self) -> None:
        assert codec.encode(Synced(5)) == pack({"t": "synced", "cursor": 5})
        assert codec.encode(Subscribe(("jobs",), None)) == pack(
            {"t": "sub", "collections": ["jobs"], "cursor": None}
        )

    def test_malformed_subscriptions_are_bad_frames(self) -> None:
        frame = {"t": "sub", "collections": ["jobs"], "cursor": None}
        assert_invalid(
            {**frame, "subs": [["jobs", ["window", "d", 0, 1, "Mars/Base", "date"], None]]},
            "time zone",
        )
        assert_invalid({**frame, "subs": "jobs"}, "subs")
        assert_invalid({**frame, "since": True})
        assert_invalid({"t": "drop", "items": [["jobs"]]})
        assert_invalid({"t": "synced", "cursor": 1, "at": "now"})
        welcome = codec.encode(Welcome("acme", ("jobs",), Limits(1 << 20, 500)))
        obj = msgpack.unpackb(welcome)
        assert_invalid({**obj, "scopes": {"jobs": ["nope"]}}, "scope")
