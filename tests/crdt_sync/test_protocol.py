"""ClientProtocol and ServerProtocol, driven against each other in memory (no sockets).

One class per feature; names say which side sends or receives what. ``ProtocolPair`` moves
frames between the two cores; assertions look at the decoded frames and at the events.
"""

from __future__ import annotations

import logging

import msgpack
import pytest
from helpers.protocol_pair import EOF, ProtocolPair, decoded
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync import codec
from crdt_sync.errors import InvalidMessage, InvalidState, MessageTooBig
from crdt_sync.messages import (
    Ack,
    Changed,
    Dropped,
    Error,
    Hello,
    Limits,
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
from crdt_sync.protocol import (
    Acked,
    ChangedReceived,
    ClientProtocol,
    DroppedReceived,
    ErrorReceived,
    HelloReceived,
    PongReceived,
    PushReceived,
    Rejected,
    RemovedReceived,
    ServerProtocol,
    State,
    StateVectorsReceived,
    Subscribed,
    SyncedReceived,
    UpdatesReceived,
    Welcomed,
)
from crdt_sync.query import field as query_field
from crdt_sync.subscriptions import Subscription


def assert_failed(proto: ClientProtocol | ServerProtocol, code: str) -> None:
    """The core failed the connection with ``code``: fatal error frame, then EOF, CLOSING."""
    frames = decoded(proto.data_to_send())
    assert frames[-1] == EOF
    error = frames[-2]
    assert isinstance(error, Error) and error.fatal and error.code == code, frames
    assert proto.state is State.CLOSING
    assert proto.close_exc.code == code


def frame(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


class TestHandshake:
    def test_client_sends_hello_on_construction(self) -> None:
        client = ClientProtocol("r1", "tok", now=0.0)
        assert decoded(client.data_to_send()) == [Hello("tok", "r1", 1)]
        assert client.state is State.CONNECTING

    def test_client_sends_hello_explicitly_when_given_no_token(self) -> None:
        client = ClientProtocol("r1")
        assert client.data_to_send() == []
        client.hello("later-token")
        assert decoded(client.data_to_send()) == [Hello("later-token", "r1", 1)]
        with pytest.raises(InvalidState):
            client.hello("again")

    def test_server_receives_hello_and_waits_for_the_driver(self) -> None:
        pair = ProtocolPair.make(replica="tech-17", token="secret")
        pair.client_to_server()
        assert pair.server_events() == [HelloReceived("secret", "tech-17", 1)]
        assert pair.server.state is State.CONNECTING
        assert pair.server.replica == "tech-17"
        assert pair.server.data_to_send() == []

    def test_server_sends_welcome_on_accept_with_its_limits(self) -> None:
        pair = ProtocolPair.make(max_frame=5000, max_items=7)
        pair.client_to_server()
        pair.server.accept("acme", ["jobs", "contacts", "jobs"])
        assert pair.server_to_client() == [
            Welcome("acme", ("jobs", "contacts"), Limits(5000, 7), 1)
        ]
        assert pair.client_events() == [Welcomed("acme", ("jobs", "contacts"), Limits(5000, 7))]
        assert pair.client.state is State.OPEN and pair.server.state is State.OPEN
        assert pair.client.limits == Limits(5000, 7)
        assert pair.client.tenant == pair.server.tenant == "acme"
        assert pair.client.collections == ("jobs", "contacts")
        assert pair.server.collections == {"jobs", "contacts"}

    def test_client_and_server_log_their_state_transitions(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.DEBUG, logger="crdt_sync.protocol"):
            pair = ProtocolPair.open()
            pair.client.close()
        assert caplog.messages == [
            "ServerProtocol: CONNECTING -> OPEN",
            "ClientProtocol: CONNECTING -> OPEN",
            "ClientProtocol: OPEN -> CLOSING",
        ]

    def test_server_sends_fatal_error_on_refuse(self) -> None:
        pair = ProtocolPair.make()
        pair.client_to_server()
        pair.server.refuse("token_expired", "token expired 3 minutes ago")
        assert pair.server_to_client() == [
            Error("token_expired", "token expired 3 minutes ago", True),
            EOF,
        ]
        assert pair.client_events() == [
            ErrorReceived("token_expired", "token expired 3 minutes ago", True)
        ]
        assert pair.client.state is State.CLOSED
        assert pair.client.close_exc.code == "token_expired"

    def test_client_receives_fatal_error_then_closes_its_side(self) -> None:
        client = ClientProtocol("r1", "tok")
        client.data_to_send()
        client.receive_data(codec.encode(Error("bad_token", "no", True)))
        assert client.data_to_send() == [b""]
        assert client.state is State.CLOSING
        client.receive_eof()
        assert client.state is State.CLOSED
        assert client.close_exc.code == "bad_token"

    def test_server_receives_hello_of_another_version(self) -> None:
        server = ServerProtocol()
        server.receive_data(codec.encode(Hello("tok", "r1", version=2)))
        assert server.events_received() == []
        assert_failed(server, "unsupported_version")

    def test_client_receives_welcome_of_another_version(self) -> None:
        client = ClientProtocol("r1", "tok")
        client.data_to_send()
        client.receive_data(codec.encode(Welcome("a", ("c",), Limits(10, 10), version=9)))
        assert client.events_received() == []
        assert_failed(client, "unsupported_version")

    @pytest.mark.parametrize(
        "msg",
        [
            Push((PushItem(1, "jobs", "j", b"u"),)),
            Subscribe(("jobs",), None),
            StateVectors((), True),
            Ping(1),
        ],
        ids=lambda msg: type(msg).__name__,
    )
    def test_server_receives_message_before_hello(self, msg: object) -> None:
        server = ServerProtocol()
        server.receive_data(codec.encode(msg))  # type: ignore[arg-type]
        assert server.events_received() == []
        assert_failed(server, "not_ready")

    def test_server_receives_push_after_hello_before_accept(self) -> None:
        pair = ProtocolPair.make()
        pair.client_to_server()
        pair.server_events()
        pair.server.receive_data(codec.encode(Push((PushItem(1, "jobs", "j", b"u"),))))
        assert pair.server_events() == []
        assert_failed(pair.server, "not_ready")

    def test_server_receives_second_hello(self) -> None:
        pair = ProtocolPair.open()
        pair.server.receive_data(codec.encode(Hello("tok", "r1")))
        assert_failed(pair.server, "bad_frame")

    def test_server_receives_second_hello_before_accept(self) -> None:
        pair = ProtocolPair.make()
        pair.client_to_server()
        pair.server.receive_data(codec.encode(Hello("tok", "r1")))
        assert_failed(pair.server, "bad_frame")

    def test_client_receives_something_else_than_welcome_first(self) -> None:
        client = ClientProtocol("r1", "tok")
        client.data_to_send()
        client.receive_data(codec.encode(Ack((1,))))
        assert_failed(client, "bad_frame")

    @pytest.mark.parametrize("limits", [Limits(100, 10), Limits(4096, 0)])
    def test_client_receives_welcome_with_unusable_limits(self, limits: Limits) -> None:
        client = ClientProtocol("r1", "tok")
        client.data_to_send()
        client.receive_data(codec.encode(Welcome("a", ("c",), limits)))
        assert client.events_received() == []
        assert_failed(client, "bad_frame")

    def test_client_receives_welcome_twice(self) -> None:
        pair = ProtocolPair.open()
        pair.client.receive_data(codec.encode(Welcome("a", (), Limits(1, 1))))
        assert_failed(pair.client, "bad_frame")

    def test_server_sends_welcome_or_refusal_only_after_hello(self) -> None:
        server = ServerProtocol()
        with pytest.raises(InvalidState):
            server.accept("acme", ["jobs"])
        pair = ProtocolPair.open()
        with pytest.raises(InvalidState):
            pair.server.accept("acme", ["jobs"])
        with pytest.raises(InvalidState):
            pair.server.refuse("bad_token")

    def test_client_sends_nothing_before_welcome(self) -> None:
        client = ClientProtocol("r1", "tok")
        with pytest.raises(InvalidState):
            client.push([(1, "jobs", "j", b"u")])
        with pytest.raises(InvalidState):
            client.subscribe(["jobs"], None)
        with pytest.raises(InvalidState):
            client.send_state_vectors([], done=True)
        with pytest.raises(InvalidState):
            client.ping()
        with pytest.raises(InvalidState):
            _ = client.limits

    def test_server_sends_nothing_before_accept(self) -> None:
        server = ServerProtocol()
        for command in (
            lambda: server.ack([1]),
            lambda: server.reject([(1, "rejected", "")]),
            lambda: server.send_changed([], 0),
            lambda: server.send_updates([], None),
            lambda: server.send_synced(0),
            lambda: server.send_error("internal"),
            lambda: server.ping(),
        ):
            with pytest.raises(InvalidState):
                command()


class TestUpload:
    def test_client_sends_push_and_server_receives_it(self) -> None:
        pair = ProtocolPair.open()
        pair.client.push([(1, "jobs", "j1", b"a"), PushItem(2, "contacts", "c1", b"b")])
        sent = pair.client_to_server()
        assert sent == [
            Push((PushItem(1, "jobs", "j1", b"a"), PushItem(2, "contacts", "c1", b"b")))
        ]
        assert pair.server_events() == [
            PushReceived((PushItem(1, "jobs", "j1", b"a"), PushItem(2, "contacts", "c1", b"b")))
        ]

    def test_client_sends_push_batched_by_max_items_in_order(self) -> None:
        pair = ProtocolPair.open(max_items=3)
        pair.client.push([(seq, "jobs", f"j{seq}", b"u") for seq in range(1, 9)])
        sent = pair.client_to_server()
        assert [[i.seq for i in m.items] for m in sent if isinstance(m, Push)] == [
            [1, 2, 3],
            [4, 5, 6],
            [7, 8],
        ]
        assert pair.server.state is State.OPEN

    def test_client_sends_push_batched_by_max_frame(self) -> None:
        pair = ProtocolPair.open(max_frame=1000)
        pair.client.push([(seq, "jobs", "j", b"x" * 300) for seq in range(1, 8)])
        frames = pair.client.data_to_send()
        assert len(frames) > 2
        assert all(len(f) <= 1000 for f in frames)
        for f in frames:
            pair.server.receive_data(f)
        pushed = [
            i.seq for e in pair.server_events() if isinstance(e, PushReceived) for i in e.items
        ]
        assert pushed == list(range(1, 8))

    def test_client_sends_no_push_for_an_entry_over_max_frame(self) -> None:
        pair = ProtocolPair.open(max_frame=1000)
        with pytest.raises(MessageTooBig, match="outbox entry 2"):
            pair.client.push([(1, "jobs", "j", b"x"), (2, "jobs", "j", b"x" * 1000)])
        assert pair.client.data_to_send() == []
        assert pair.client.uploads_pending == 0

    def test_client_receives_ack_and_reject_of_pushed_seqs(self) -> None:
        pair = ProtocolPair.open()
        pair.client.push([(1, "jobs", "j", b"a"), (2, "jobs", "j", b"b"), (3, "jobs", "k", b"c")])
        pair.client_to_server()
        assert pair.client.in_flight == {1, 2, 3}
        assert pair.client.uploads_pending == 3
        pair.server.ack([1, 3])
        pair.server.reject([(2, "rejected", "job already closed")])
        assert pair.server_to_client() == [
            Ack((1, 3)),
            Reject((RejectItem(2, "rejected", "job already closed"),)),
        ]
        assert pair.client_events() == [
            Acked((1, 3)),
            Rejected((RejectItem(2, "rejected", "job already closed"),)),
        ]
        assert pair.client.uploads_pending == 0

    def test_client_receives_duplicate_and_unknown_acks_and_ignores_them(self) -> None:
        pair = ProtocolPair.open()
        pair.client.push([(1, "jobs", "j", b"a"), (2, "jobs", "j", b"b")])
        pair.client_to_server()
        pair.server.ack([1])
        pair.server.ack([1, 2])
        pair.server.ack([1, 2, 99])
        pair.server.reject([(1, "rejected", "late")])
        pair.server_to_client()
        assert pair.client_events() == [Acked((1,)), Acked((2,))]
        assert pair.client.state is State.OPEN

    def test_client_sends_a_seq_again_after_a_lost_ack(self) -> None:
        pair = ProtocolPair.open()
        pair.client.push([(5, "jobs", "j", b"a")])
        pair.client.push([(5, "jobs", "j", b"a")])
        assert len(pair.client_to_server()) == 2
        assert pair.client.in_flight == {5}
        pair.server.ack([5])
        pair.server.ack([5])
        pair.server_to_client()
        assert pair.client_events() == [Acked((5,))]

    def test_server_receives_push_outside_the_grant_and_rejects_it(self) -> None:
        pair = ProtocolPair.open(collections=("jobs",))
        pair.client.push(
            [(1, "jobs", "j", b"a"), (2, "payroll", "p", b"b"), (3, "jobs", "k", b"c")]
        )
        pair.client_to_server()
        assert pair.server_events() == [
            PushReceived((PushItem(1, "jobs", "j", b"a"), PushItem(3, "jobs", "k", b"c")))
        ]
        assert pair.server_to_client() == [
            Reject((RejectItem(2, "forbidden", "no access to 'payroll'"),))
        ]
        assert pair.client_events() == [
            Rejected((RejectItem(2, "forbidden", "no access to 'payroll'"),))
        ]

    def test_server_receives_push_entirely_outside_the_grant(self) -> None:
        pair = ProtocolPair.open(collections=("jobs",))
        pair.client.push([(1, "payroll", "p", b"b")])
        pair.client_to_server()
        assert pair.server_events() == []
        assert pair.server.state is State.OPEN

    @pytest.mark.parametrize("seqs", [[2, 1], [1, 1]])
    def test_server_receives_push_with_seqs_out_of_order(self, seqs: list[int]) -> None:
        pair = ProtocolPair.open()
        pair.server.receive_data(
            codec.encode(Push(tuple(PushItem(s, "jobs", "j", b"u") for s in seqs)))
        )
        assert pair.server_events() == []
        assert_failed(pair.server, "bad_frame")

    def test_server_sends_nothing_for_empty_ack_or_reject(self) -> None:
        pair = ProtocolPair.open()
        pair.server.ack([])
        pair.server.reject([])
        assert pair.server.data_to_send() == []


class TestCatchUp:
    def test_client_sends_sub_and_server_receives_it(self) -> None:
        pair = ProtocolPair.open()
        pair.client.subscribe(["jobs", "contacts"], 41)
        assert pair.client.catching_up
        assert pair.client_to_server() == [Subscribe(("jobs", "contacts"), 41)]
        assert pair.server_events() == [Subscribed(("jobs", "contacts"), 41)]

    def test_server_receives_sub_outside_the_grant(self) -> None:
        pair = ProtocolPair.open(collections=("jobs",))
        pair.client.subscribe(["jobs", "payroll"], None)
        pair.client_to_server()
        assert pair.server_events() == []
        assert_failed(pair.server, "forbidden")

    def test_client_receives_catch_up_after_sending_sub(self) -> None:
        pair = ProtocolPair.open()
        pair.client.subscribe(["jobs"], 10)
        pair.client_to_server()
        pair.server_events()
        pair.server.send_changed([("jobs", "j1"), ("jobs", "j2")], cursor=15, done=True)
        assert pair.server_to_client() == [
            Changed((RecordKey("jobs", "j1"), RecordKey("jobs", "j2")), 15, True)
        ]
        (event,) = pair.client_events()
        assert event == ChangedReceived(
            (RecordKey("jobs", "j1"), RecordKey("jobs", "j2")), 15, True
        )
        assert isinstance(event, ChangedReceived)
        pair.client.send_state_vectors(
            [("jobs", "j1", b"\x01\x02\x03"), ("jobs", "j2", b"")], done=event.done
        )
        pair.client_to_server()
        assert pair.server_events() == [
            StateVectorsReceived(
                (
                    StateVectorItem("jobs", "j1", b"\x01\x02\x03"),
                    StateVectorItem("jobs", "j2", b"\x00"),
                ),
                done=True,
            )
        ]
        pair.server.send_updates([("jobs", "j1", b"d1"), ("jobs", "j2", b"d2")], None)
        pair.server.send_synced(15)
        assert pair.server_to_client() == [
            Updates((UpdateItem("jobs", "j1", b"d1"), UpdateItem("jobs", "j2", b"d2")), None),
            Synced(15),
        ]
        assert pair.client_events() == [
            UpdatesReceived(
                (UpdateItem("jobs", "j1", b"d1"), UpdateItem("jobs", "j2", b"d2")), None
            ),
            SyncedReceived(15),
        ]
        assert not pair.client.catching_up

    def test_client_receives_removed_records_before_synced(self) -> None:
        # docs/protocol.md, "Deletion": purged records are listed in the catch-up.
        pair = ProtocolPair.open()
        pair.client.subscribe(["jobs"], 10)
        pair.client_to_server()
        pair.server_events()
        pair.server.send_removed([("jobs", "j1", "ts-1"), ("jobs", "j2", "ts-2")])
        pair.server.send_synced(15)
        items = (RemovedItem("jobs", "j1", "ts-1"), RemovedItem("jobs", "j2", "ts-2"))
        assert pair.server_to_client() == [Removed(items, None), Synced(15)]
        assert pair.client_events() == [RemovedReceived(items, None), SyncedReceived(15)]

    def test_server_sends_removed_batched_by_max_items(self) -> None:
        pair = ProtocolPair.open(max_items=2)
        pair.server.send_removed([("jobs", f"j{i}", "ts") for i in range(5)], cursor=None)
        frames = pair.server_to_client()
        assert [len(f.items) for f in frames if isinstance(f, Removed)] == [2, 2, 1]

    def test_server_receives_removed_and_fails(self) -> None:
        pair = ProtocolPair.open()
        pair.server.receive_data(codec.encode(Removed((), None)))
        assert_failed(pair.server, "bad_frame")

    def test_server_sends_synced_at_once_when_nothing_changed(self) -> None:
        pair = ProtocolPair.open()
        pair.client.subscribe(["jobs"], 10)
        pair.client_to_server()
        pair.server.send_synced(10)
        pair.server_to_client()
        assert pair.client_events() == [SyncedReceived(10)]

    def test_server_sends_changed_batched_with_done_on_the_last_frame(self) -> None:
        pair = ProtocolPair.open(max_items=2)
        pair.server.send_changed([("jobs", f"j{i}") for i in range(5)], cursor=8, done=True)
        sent = pair.server_to_client()
        assert [(len(m.items), m.cursor, m.done) for m in sent if isinstance(m, Changed)] == [
            (2, 8, False),
            (2, 8, False),
            (1, 8, True),
        ]
        events = pair.client_events()
        assert [e.done for e in events if isinstance(e, ChangedReceived)] == [False, False, True]

    def test_server_sends_changed_not_done_when_more_calls_follow(self) -> None:
        pair = ProtocolPair.open(max_items=2)
        pair.server.send_changed([("jobs", "a"), ("jobs", "b"), ("jobs", "c")], 8, done=False)
        pair.server.send_changed([], 8, done=True)
        sent = pair.server_to_client()
        assert [m.done for m in sent if isinstance(m, Changed)] == [False, False, True]

    def test_client_sends_sv_batched_with_done_on_the_last_frame(self) -> None:
        pair = ProtocolPair.open(max_items=2)
        pair.client.send_state_vectors([("jobs", f"j{i}", b"\x00") for i in range(3)], done=True)
        sent = pair.client_to_server()
        assert [(len(m.items), m.done) for m in sent if isinstance(m, StateVectors)] == [
            (2, False),
            (1, True),
        ]
        assert [e.done for e in pair.server_events() if isinstance(e, StateVectorsReceived)] == [
            False,
            True,
        ]

    def test_client_sends_an_empty_done_sv_to_answer_an_empty_last_changed(self) -> None:
        pair = ProtocolPair.open()
        pair.client.send_state_vectors([], done=True)
        assert pair.client_to_server() == [StateVectors((), True)]
        pair.client.send_state_vectors([], done=False)
        assert pair.client_to_server() == []

    def test_client_sends_sv_on_its_own_to_preload_records(self) -> None:
        pair = ProtocolPair.open()
        pair.client.send_state_vectors([("jobs", "tomorrow-1", b"\x00")])
        pair.client_to_server()
        assert pair.server_events() == [
            StateVectorsReceived((StateVectorItem("jobs", "tomorrow-1", b"\x00"),), done=False)
        ]

    def test_server_receives_sv_outside_the_grant(self) -> None:
        pair = ProtocolPair.open(collections=("jobs",))
        pair.client.send_state_vectors([("jobs", "j", b"\x00"), ("payroll", "p", b"\x00")])
        pair.client_to_server()
        assert pair.server_events() == []
        assert_failed(pair.server, "forbidden")


class TestLiveUpdates:
    def test_server_sends_live_updates_and_client_receives_them(self) -> None:
        pair = ProtocolPair.open()
        pair.server.send_updates([("jobs", "j1", b"u")], cursor=77)
        assert pair.server_to_client() == [Updates((UpdateItem("jobs", "j1", b"u"),), 77)]
        assert pair.client_events() == [UpdatesReceived((UpdateItem("jobs", "j1", b"u"),), 77)]

    def test_server_sends_updates_batched_with_the_cursor_on_the_last_frame(self) -> None:
        pair = ProtocolPair.open(max_frame=600)
        pair.server.send_updates([("jobs", f"j{i}", b"x" * 200) for i in range(5)], cursor=9)
        frames = pair.server.data_to_send()
        assert all(len(f) <= 600 for f in frames)
        sent = decoded(frames)
        assert [m.cursor for m in sent if isinstance(m, Updates)][-1] == 9
        assert all(m.cursor is None for m in sent[:-1] if isinstance(m, Updates))
        assert sum(len(m.items) for m in sent if isinstance(m, Updates)) == 5

    def test_server_sends_an_update_bigger_than_its_budget_alone(self) -> None:
        pair = ProtocolPair.open(max_frame=600)
        pair.server.send_updates([("jobs", "a", b"x"), ("jobs", "big", b"y" * 5000)], None)
        sent = pair.server_to_client()
        assert [len(m.items) for m in sent if isinstance(m, Updates)] == [1, 1]
        assert pair.client.state is State.OPEN

    def test_server_sends_a_cursor_alone_as_an_empty_updates_frame(self) -> None:
        pair = ProtocolPair.open()
        pair.server.send_cursor(12)
        assert pair.server_to_client() == [Updates((), 12)]
        assert pair.client_events() == [UpdatesReceived((), 12)]
        assert pair.client.state is State.OPEN

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=4),
                st.integers(min_value=1, max_value=5),
            ),
            max_size=20,
        )
    )
    def test_client_receives_early_updates_and_cursors_in_the_order_sent(
        self, steps: list[list[bytes] | int]
    ) -> None:
        # The relay's live pattern: updates with no cursor (before their commit), cursors
        # alone (after it); the client sees both in order, as frames it can persist.
        pair = ProtocolPair.open()
        expected: list[UpdatesReceived] = []
        cursor = 0
        for step in steps:
            if isinstance(step, int):
                cursor += step
                pair.server.send_cursor(cursor)
                expected.append(UpdatesReceived((), cursor))
            else:
                items = tuple(UpdateItem("jobs", f"j{i}", u) for i, u in enumerate(step))
                pair.server.send_updates(items, None)
                expected.append(UpdatesReceived(items, None))
        pair.server_to_client()
        assert pair.client_events() == expected

    def test_server_sends_no_cursor_before_accept(self) -> None:
        server = ServerProtocol()
        with pytest.raises(InvalidState):
            server.send_cursor(1)

    def test_server_sends_nothing_for_no_updates(self) -> None:
        pair = ProtocolPair.open()
        pair.server.send_updates([], cursor=3)
        assert pair.server.data_to_send() == []

    def test_client_sends_push_while_receiving_live_updates(self) -> None:
        pair = ProtocolPair.open()
        pair.client.subscribe(["jobs"], None)
        pair.client_to_server()
        pair.server.send_synced(0)
        pair.server.send_updates([("jobs", "j", b"theirs")], cursor=1)
        pair.client.push([(1, "jobs", "j", b"mine")])
        pair.server_to_client()
        pair.client_to_server()
        assert pair.server_events() == [
            Subscribed(("jobs",), None),
            PushReceived((PushItem(1, "jobs", "j", b"mine"),)),
        ]
        assert [type(e) for e in pair.client_events()] == [SyncedReceived, UpdatesReceived]


class TestHeartbeat:
    def test_client_sends_ping_and_receives_pong_with_round_trip(self) -> None:
        pair = ProtocolPair.open(now=100.0)
        ping_id = pair.client.ping(now=100.0)
        assert pair.client_to_server() == [Ping(ping_id)]
        assert pair.server_events() == []
        assert pair.server_to_client() == [Pong(ping_id)]
        pair.client.receive_data(codec.encode(Pong(ping_id)), now=100.25)
        # The first pong (delivered at now=100.0) answered it; a second one has no send time.
        assert pair.client_events() == [
            PongReceived(ping_id, 0.0),
            PongReceived(ping_id, None),
        ]

    def test_server_sends_ping_and_client_answers(self) -> None:
        pair = ProtocolPair.open()
        ping_id = pair.server.ping()
        pair.server_to_client()
        assert pair.client_to_server() == [Pong(ping_id)]
        assert pair.server_events() == [PongReceived(ping_id, None)]

    def test_client_sends_pings_with_increasing_ids(self) -> None:
        pair = ProtocolPair.open()
        assert [pair.client.ping() for _ in range(3)] == [1, 2, 3]

    def test_client_receives_nothing_for_a_while_and_reports_idle_time(self) -> None:
        client = ClientProtocol("r1", "tok", now=10.0)
        assert client.idle_for(12.5) == 2.5
        client.receive_data(codec.encode(Welcome("a", (), Limits(4096, 10))), now=20.0)
        assert client.last_received_at == 20.0
        assert client.idle_for(26.0) == 6.0
        assert client.idle_for(19.0) == 0.0  # never negative

    def test_client_receives_without_now_and_reports_no_idle_time(self) -> None:
        assert ClientProtocol("r1", "tok").idle_for(1000.0) == 0.0

    def test_client_sends_many_unanswered_pings_in_bounded_memory(self) -> None:
        pair = ProtocolPair.open()
        for i in range(1000):
            pair.client.ping(now=float(i))
        assert len(pair.client._pings) <= 64


class TestLimits:
    def test_server_receives_frame_over_max_frame(self) -> None:
        pair = ProtocolPair.open(max_frame=500)
        pair.server.receive_data(codec.encode(Push((PushItem(1, "jobs", "j", b"x" * 600),))))
        assert pair.server_events() == []
        assert_failed(pair.server, "too_big")
        assert isinstance(pair.server.close_exc.__cause__, MessageTooBig)

    @pytest.mark.parametrize(
        "msg",
        [
            Push(tuple(PushItem(s, "jobs", "j", b"") for s in range(1, 6))),
            StateVectors(tuple(StateVectorItem("jobs", f"j{i}", b"\x00") for i in range(5))),
            Subscribe(("jobs", "jobs", "jobs", "jobs", "jobs"), None),
        ],
        ids=lambda msg: type(msg).__name__,
    )
    def test_server_receives_too_many_items(self, msg: object) -> None:
        pair = ProtocolPair.open(max_items=4)
        pair.server.receive_data(codec.encode(msg))  # type: ignore[arg-type]
        assert pair.server_events() == []
        assert_failed(pair.server, "too_many_items")

    def test_server_receives_exactly_max_items(self) -> None:
        pair = ProtocolPair.open(max_items=4)
        pair.server.receive_data(
            codec.encode(Push(tuple(PushItem(s, "jobs", "j", b"") for s in range(1, 5))))
        )
        assert len(pair.server_events()) == 1

    def test_server_receives_a_burst_over_the_limit(self) -> None:
        pair = ProtocolPair.open(rate=10.0, burst=5, now=0.0)
        ping = codec.encode(Ping(1))
        # The handshake's hello spent one token: four more fit in the burst at t=0.
        for _ in range(4):
            pair.server.receive_data(ping, now=0.0)
        assert pair.server.state is State.OPEN
        pair.server.receive_data(ping, now=0.0)
        assert_failed(pair.server, "rate_limited")

    def test_server_receives_a_sustained_rate_under_the_limit(self) -> None:
        pair = ProtocolPair.open(rate=10.0, burst=2, now=0.0)
        ping = codec.encode(Ping(1))
        # 10 messages per second, sustained for 5 seconds: never limited.
        for i in range(50):
            pair.server.receive_data(ping, now=0.1 * (i + 1))
        assert pair.server.state is State.OPEN

    def test_server_receives_without_now_or_rate_and_does_not_limit(self) -> None:
        pair = ProtocolPair.open(rate=1.0, burst=1)
        for _ in range(100):
            pair.server.receive_data(codec.encode(Ping(1)))
        assert pair.server.state is State.OPEN
        unlimited = ProtocolPair.open(rate=None, now=0.0)
        for _ in range(100):
            unlimited.server.receive_data(codec.encode(Ping(1)), now=0.0)
        assert unlimited.server.state is State.OPEN

    def test_server_receives_over_the_limit_on_one_connection_only(self) -> None:
        noisy = ProtocolPair.open(rate=1.0, burst=1, now=0.0)
        quiet = ProtocolPair.open(rate=1.0, burst=1, now=0.0)
        for _ in range(3):
            noisy.server.receive_data(codec.encode(Ping(1)), now=0.0)
        assert noisy.server.state is State.CLOSING
        quiet.server.receive_data(codec.encode(Ping(1)), now=5.0)
        assert quiet.server.state is State.OPEN


class TestErrors:
    @pytest.mark.parametrize(
        "data",
        [
            b"\xc1",
            frame([1, 2]),
            frame({"t": "push", "items": [[1, "c", "r", "str"]]}),
            frame({"t": "nope"}),
        ],
    )
    def test_server_receives_malformed_frame(self, data: bytes) -> None:
        pair = ProtocolPair.open()
        pair.server.receive_data(data)
        assert pair.server_events() == []
        assert_failed(pair.server, "bad_frame")
        assert isinstance(pair.server.close_exc.__cause__, InvalidMessage)

    def test_client_receives_malformed_frame(self) -> None:
        pair = ProtocolPair.open()
        pair.client.receive_data(b"\x00\x01")
        assert_failed(pair.client, "bad_frame")

    def test_server_receives_text_message(self) -> None:
        pair = ProtocolPair.open()
        pair.server.receive_data('{"t": "ping"}')
        assert_failed(pair.server, "bad_frame")

    def test_server_receives_a_server_message(self) -> None:
        pair = ProtocolPair.open()
        pair.server.receive_data(codec.encode(Ack((1,))))
        assert_failed(pair.server, "bad_frame")

    def test_client_receives_a_client_message(self) -> None:
        pair = ProtocolPair.open()
        pair.client.receive_data(codec.encode(Push(())))
        assert_failed(pair.client, "bad_frame")

    def test_server_sends_non_fatal_error(self) -> None:
        pair = ProtocolPair.open()
        pair.server.send_error("internal", "try again")
        assert pair.server_to_client() == [Error("internal", "try again", False)]
        assert pair.client_events() == [ErrorReceived("internal", "try again", False)]
        assert pair.client.state is State.OPEN

    def test_server_sends_fatal_error_on_fail(self) -> None:
        pair = ProtocolPair.open()
        pair.server.fail("going_away", "relay shutting down")
        assert pair.server_to_client() == [Error("going_away", "relay shutting down", True), EOF]
        assert pair.client.close_exc.code == "going_away"
        pair.server.fail("internal", "twice")
        assert pair.server.data_to_send() == []
        assert pair.server.close_exc.code == "going_away"

    def test_client_sends_close(self) -> None:
        pair = ProtocolPair.open()
        pair.client.close()
        assert pair.client_to_server() == [Error("going_away", "", True), EOF]
        assert pair.server_events() == [ErrorReceived("going_away", "", True)]
        assert pair.server.state is State.CLOSED
        assert pair.server.close_exc.code == "going_away"
        pair.client.close()  # idempotent
        assert pair.client.data_to_send() == []

    def test_server_receives_data_after_failing_and_ignores_it(self) -> None:
        pair = ProtocolPair.open()
        pair.server.fail("internal")
        pair.server.data_to_send()
        pair.server.receive_data(codec.encode(Push((PushItem(1, "jobs", "j", b"u"),))))
        assert pair.server_events() == []
        assert pair.server.data_to_send() == []

    def test_client_and_server_send_after_closing_raises(self) -> None:
        pair = ProtocolPair.open()
        pair.client.close()
        with pytest.raises(InvalidState):
            pair.client.push([(1, "jobs", "j", b"u")])
        pair.server.receive_eof()
        with pytest.raises(InvalidState):
            pair.server.ack([1])

    def test_client_reads_close_exc_before_closing_raises(self) -> None:
        pair = ProtocolPair.open()
        with pytest.raises(InvalidState):
            _ = pair.client.close_exc

    def test_client_receives_eof_without_error(self) -> None:
        pair = ProtocolPair.open()
        pair.client.receive_eof()
        assert pair.client.state is State.CLOSED
        assert pair.client.close_exc.code == "connection_lost"
        pair.client.receive_eof()  # idempotent
        assert pair.client.state is State.CLOSED

    def test_client_receives_garbage_without_raising(self) -> None:
        for data in (b"", b"\xff" * 10, frame({"t": "hello"}), frame({"t": "ack", "seqs": [-1]})):
            client = ClientProtocol("r1", "tok")
            client.receive_data(data)
            assert client.state is State.CLOSING


class TestSubscriptions:
    """``sub`` with subscriptions, ``synced`` with ``at``, ``drop`` (docs/protocol.md,
    "Subscriptions")."""

    def test_subscriptions_reach_the_server_and_drops_the_client(self) -> None:
        pair = ProtocolPair.open()
        window = Subscription("jobs", where=query_field("date").window(0, 3, tz="Europe/Paris"))
        pair.client.subscribe(("jobs", "contacts"), 7, [window], since=1_000)
        pair.client_to_server()
        assert pair.server_events() == [Subscribed(("jobs", "contacts"), 7, (window,), 1_000)]
        pair.server.send_dropped([("jobs", "j1"), ("jobs", "j2")])
        pair.server.send_synced(9, at=2_000)
        pair.server_to_client()
        assert pair.client_events() == [
            DroppedReceived((RecordKey("jobs", "j1"), RecordKey("jobs", "j2"))),
            SyncedReceived(9, 2_000),
        ]

    def test_drops_are_batched_to_the_limits(self) -> None:
        pair = ProtocolPair.open(max_items=2)
        pair.server.send_dropped([("jobs", f"j{i}") for i in range(5)])
        frames = pair.server_to_client()
        assert [len(f.items) for f in frames if isinstance(f, Dropped)] == [2, 2, 1]

    def test_a_subscription_outside_the_grant_is_forbidden(self) -> None:
        pair = ProtocolPair.open()
        pair.client.subscribe(("payroll",), None, [Subscription("payroll", ids=["p1"])])
        pair.client_to_server()
        assert_failed(pair.server, "forbidden")

    def test_a_subscription_on_a_collection_not_subscribed_is_a_bad_frame(self) -> None:
        pair = ProtocolPair.open()
        with pytest.raises(ValueError):
            pair.client.subscribe(("jobs",), None, [Subscription("contacts")])
        pair.server.receive_data(
            codec.encode(Subscribe(("jobs",), None, (Subscription("contacts"),)))
        )
        assert_failed(pair.server, "bad_frame")
