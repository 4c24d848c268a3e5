"""Properties of the protocol cores (hypothesis).

1. Fuzzing: ``decode()`` and ``ServerProtocol.receive_data()`` (and the client's) on random,
   structured-random and mutated frames never do anything but the documented behaviour: a
   message, or ``InvalidMessage``/``MessageTooBig`` from the codec; for the cores, events of
   the documented types or a fatal ``error`` frame followed by ``b""`` and the ``CLOSING`` state.

2. Convergence: several replicas (pycrdt docs + an in-memory outbox and cursor) sync through an
   in-memory relay model, driven only through ``ClientProtocol``/``ServerProtocol``, under
   random local edits, duplicated frames, connections cut at any point (frames in flight lost,
   or still delivered late, interleaved with the replica's next connection), and reconnects.
   After a clean final sync of every replica, all replicas and the relay hold the same content
   and every edit, acknowledged ones included, is in every replica.

The replica and relay models here are test code, kept as small as the protocol allows: the
real relay lives in ``server/`` and the real client runtime in ``client/``.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

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

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies: valid messages, random msgpack, mutations ----------------------------------

names = st.sampled_from(["jobs", "contacts", "payroll", "j1", "é", "x" * 40])
ints = st.integers(min_value=0, max_value=2**63 - 1)
small_ints = st.integers(min_value=0, max_value=50)
payloads = st.binary(max_size=40)

valid_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, st.text(max_size=20), names, st.sampled_from([1, 1, 1, 2])),
    st.builds(
        Push,
        st.lists(small_ints, max_size=5, unique=True).flatmap(
            lambda seqs: st.tuples(
                *[st.builds(PushItem, st.just(s), names, names, payloads) for s in sorted(seqs)]
            )
        ),
    ),
    st.builds(Subscribe, st.lists(names, max_size=4).map(tuple), st.none() | small_ints),
    st.builds(
        StateVectors,
        st.lists(
            st.builds(StateVectorItem, names, names, st.binary(min_size=1, max_size=20)), max_size=4
        ).map(tuple),
        st.booleans(),
    ),
    st.builds(Ping, ints),
    st.builds(Pong, ints),
    st.builds(
        Error, st.sampled_from(["bad_frame", "internal"]), st.text(max_size=10), st.booleans()
    ),
    st.builds(
        Welcome, names, st.lists(names, max_size=3).map(tuple), st.builds(Limits, ints, ints)
    ),
    st.builds(Ack, st.lists(small_ints, max_size=5).map(tuple)),
    st.builds(
        Reject,
        st.lists(st.builds(RejectItem, small_ints, names, st.text(max_size=5)), max_size=3).map(
            tuple
        ),
    ),
    st.builds(
        Changed,
        st.lists(st.builds(RecordKey, names, names), max_size=3).map(tuple),
        ints,
        st.booleans(),
    ),
    st.builds(
        Updates,
        st.lists(st.builds(UpdateItem, names, names, payloads), max_size=3).map(tuple),
        st.none() | ints,
    ),
    st.builds(Synced, ints),
    st.builds(Synced, ints, st.none() | ints),
    st.builds(Dropped, st.lists(st.builds(RecordKey, names, names), max_size=3).map(tuple)),
    st.lists(names, min_size=1, max_size=3).flatmap(
        lambda cs: st.builds(
            Subscribe,
            st.just(tuple(cs)),
            st.none() | small_ints,
            st.lists(
                st.one_of(
                    st.builds(Subscription, st.sampled_from(cs)),
                    st.builds(
                        lambda c, ids: Subscription(c, ids=ids),
                        st.sampled_from(cs),
                        st.lists(names, max_size=3),
                    ),
                    st.builds(
                        lambda c, d: Subscription(c, where=query_field("date").window(0, d)),
                        st.sampled_from(cs),
                        st.integers(0, 30),
                    ),
                ),
                max_size=3,
            ).map(tuple)
            | st.none(),
            st.none() | ints,
        )
    ),
)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
kinds = st.sampled_from(
    [
        "hello",
        "push",
        "sub",
        "sv",
        "ping",
        "pong",
        "error",
        "welcome",
        "ack",
        "reject",
        "changed",
        "updates",
        "synced",
        "nope",
    ]
)
field_names = st.sampled_from(
    [
        "v",
        "token",
        "replica",
        "items",
        "collections",
        "cursor",
        "done",
        "id",
        "code",
        "reason",
        "fatal",
        "tenant",
        "limits",
        "seqs",
    ]
)
structured_frames = st.builds(
    lambda kind, fields: msgpack.packb({"t": kind, **fields}, use_bin_type=True),
    kinds,
    st.dictionaries(field_names, msgpack_values, max_size=5),
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(codec.encode(draw(valid_messages)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:] = codec.encode(draw(valid_messages))[pos:]
    return bytes(data)


any_frames = st.one_of(
    st.binary(max_size=64), structured_frames, mutated_frames(), valid_messages.map(codec.encode)
)


# -- 1. fuzzing ---------------------------------------------------------------------------


class TestFuzzDecode:
    @FUZZ
    @given(any_frames)
    def test_decode_returns_a_message_or_raises_a_protocol_error(self, data: bytes) -> None:
        try:
            msg = codec.decode(data, max_size=4096)
        except (InvalidMessage, MessageTooBig):
            return
        # Whatever decodes, re-encodes to an equivalent frame.
        assert codec.decode(codec.encode(msg)) == msg

    @FUZZ
    @given(valid_messages)
    def test_valid_messages_round_trip(self, msg: Message) -> None:
        assert codec.decode(codec.encode(msg)) == msg

    @FUZZ
    @given(st.binary(min_size=1, max_size=300), st.integers(min_value=0, max_value=300))
    def test_size_limit_is_checked_first(self, data: bytes, limit: int) -> None:
        try:
            codec.decode(data, max_size=limit)
        except MessageTooBig:
            assert len(data) > limit
        except InvalidMessage:
            assert len(data) <= limit


SERVER_EVENTS = (
    HelloReceived,
    PushReceived,
    Subscribed,
    StateVectorsReceived,
    PongReceived,
    ErrorReceived,
)
CLIENT_EVENTS = (
    Welcomed,
    Acked,
    Rejected,
    ChangedReceived,
    UpdatesReceived,
    SyncedReceived,
    DroppedReceived,
    PongReceived,
    ErrorReceived,
)


def check_outcome(
    proto: ClientProtocol | ServerProtocol,
    before: State,
    events: list[Any],
    allowed_events: tuple[type, ...],
) -> None:
    """What receive_data() may do: events and automatic answers, or a clean failure."""
    out = proto.data_to_send()
    for event in events:
        assert isinstance(event, allowed_events)
    if before >= State.CLOSING:
        assert out == [] and proto.state is before
        return
    if proto.state is State.CLOSING:
        assert out[-1] == b"", out
        if len(out) >= 2:  # our own fatal error (a received fatal error closes silently)
            last = codec.decode(out[-2])
            assert isinstance(last, Error) and last.fatal
        assert proto.close_exc.code
        return
    assert proto.state in (State.CONNECTING, State.OPEN)
    for frame in out:
        assert isinstance(codec.decode(frame), Pong | Reject | Welcome)


def check_server_event(server: ServerProtocol, event: Any) -> None:
    """What the relay is told is within the grant and the limits."""
    match event:
        case PushReceived(items):
            assert 0 < len(items) <= server.max_items
            assert all(i.collection in server.collections for i in items)
            assert [i.seq for i in items] == sorted({i.seq for i in items})
        case Subscribed(collections, _):
            assert len(collections) <= server.max_items
            assert set(collections) <= server.collections
        case StateVectorsReceived(items, _):
            assert len(items) <= server.max_items
            assert all(i.collection in server.collections for i in items)
            assert all(i.state_vector for i in items)
        case HelloReceived():
            assert server.state is State.CONNECTING


class TestFuzzProtocols:
    @FUZZ
    @given(st.lists(any_frames, max_size=8), st.booleans(), st.floats(0, 1000) | st.none())
    def test_server_receive_data_never_raises(
        self, frames: list[bytes], handshake: bool, now: float | None
    ) -> None:
        server = ServerProtocol(max_frame=2048, max_items=4, rate=5.0, burst=3)
        if handshake:
            server.receive_data(codec.encode(Hello("tok", "r1")))
            server.events_received()
            server.accept("acme", ["jobs", "j1"])
            server.data_to_send()
        for data in frames:
            before = server.state
            server.receive_data(data, now)
            # A driver accepting every hello, as the relay does for a good token.
            events = server.events_received()
            for event in events:
                check_server_event(server, event)
            if any(isinstance(e, HelloReceived) for e in events):
                server.accept("acme", ["jobs"])
            check_outcome(server, before, events, SERVER_EVENTS)
        server.receive_eof()
        assert server.state is State.CLOSED and server.close_exc.code

    @FUZZ
    @given(st.lists(any_frames, max_size=8), st.booleans())
    def test_client_receive_data_never_raises(self, frames: list[bytes], welcomed: bool) -> None:
        client = ClientProtocol("r1", "tok", max_frame=2048)
        client.data_to_send()
        if welcomed:
            client.receive_data(codec.encode(Welcome("acme", ("jobs",), Limits(2048, 4))))
            client.events_received()
            client.push([(1, "jobs", "j", b"u")])
            client.data_to_send()
        for data in frames:
            before = client.state
            client.receive_data(data)
            check_outcome(client, before, client.events_received(), CLIENT_EVENTS)
        client.receive_eof()
        assert client.state is State.CLOSED


# -- 2. convergence ------------------------------------------------------------------------

TENANT = "acme"
COLLECTION = "jobs"
RECORDS = ("job-1", "job-2", "job-3")


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def decode_state_vector(data: bytes) -> dict[int, int]:
    count, pos = read_var_uint(data, 0)
    clocks = {}
    for _ in range(count):
        client, pos = read_var_uint(data, pos)
        clocks[client], pos = read_var_uint(data, pos)
    return clocks


def content(doc: Doc[Any]) -> tuple[str, dict[str, Any]]:
    return str(doc.get("notes", type=Text)), doc.get("fields", type=Map).to_py() or {}


def includes(doc: Doc[Any], update: bytes) -> bool:
    """True if ``doc`` already holds everything ``update`` carries."""
    probe: Doc[Any] = Doc()
    probe.apply_update(doc.get_update())
    have = decode_state_vector(probe.get_state())
    before = content(probe)
    probe.apply_update(update)
    need = decode_state_vector(probe.get_state())
    return all(have.get(c, 0) >= clock for c, clock in need.items()) and content(probe) == before


@dataclass
class Replica:
    """A replica's durable local state: docs, outbox, cursor (what SQLite would hold)."""

    name: str
    docs: dict[str, Doc[Any]] = field(default_factory=dict)
    outbox: dict[int, PushItem] = field(default_factory=dict)
    next_seq: int = 1
    cursor: int | None = None
    link: Link | None = None
    edits: list[tuple[str, bytes]] = field(default_factory=list)

    def doc(self, record_id: str) -> Doc[Any]:
        if record_id not in self.docs:
            self.docs[record_id] = Doc()
        return self.docs[record_id]

    def edit(self, record_id: str, position: int, text: str, key: str) -> None:
        doc = self.doc(record_id)
        before = doc.get_state()
        notes = doc.get("notes", type=Text)
        fields = doc.get("fields", type=Map)
        with doc.transaction():
            notes.insert(min(position, len(notes)), text)
            fields[key] = text
        update = doc.get_update(before)
        entry = PushItem(self.next_seq, COLLECTION, record_id, update)
        self.next_seq += 1
        self.outbox[entry.seq] = entry
        self.edits.append((record_id, update))
        if self.link is not None and self.link.client.state is State.OPEN:
            self.link.client.push([entry])
            self.link.flush_client()


@dataclass
class Link:
    """One websocket: the two cores and the frames in flight each way."""

    network: Network
    replica: Replica
    client: ClientProtocol
    server: ServerProtocol = field(default_factory=lambda: ServerProtocol(rate=None))
    c2s: deque[bytes] = field(default_factory=deque)
    s2c: deque[bytes] = field(default_factory=deque)
    client_open: bool = True
    server_open: bool = True
    subscribe_sent: bool = False
    # relay-side state of this connection
    peer: str | None = None
    subscribed: bool = False
    catchups: deque[int] = field(default_factory=deque)

    # -- the client driver (what the client runtime does) ---------------------------------

    def flush_client(self) -> None:
        for data in self.client.data_to_send():
            self.c2s.append(data)
            if data == b"":  # the client closes the socket after its fatal error
                self.drop_client()
                return

    def drop_client(self) -> None:
        """The replica's side of the socket is gone (its frames in flight may still arrive)."""
        if not self.client_open:
            return
        self.client.receive_eof()
        self.client_open = False
        self.s2c.clear()
        if self.replica.link is self:
            self.replica.link = None

    def on_client_events(self) -> None:
        replica, client = self.replica, self.client
        for event in client.events_received():
            match event:
                case Welcomed():
                    if replica.outbox:  # upload first
                        client.push(sorted(replica.outbox.values()))
                case Acked(seqs):
                    for seq in seqs:
                        replica.outbox.pop(seq, None)
                case Rejected():
                    raise AssertionError(f"nothing is ever rejected here: {event}")
                case ChangedReceived(items, _, done):
                    client.send_state_vectors(
                        [
                            (k.collection, k.record_id, replica.doc(k.record_id).get_state())
                            for k in items
                        ],
                        done=done,
                    )
                case UpdatesReceived(items):
                    for item in items:
                        replica.doc(item.record_id).apply_update(item.update)
                case SyncedReceived(cursor):
                    replica.cursor = cursor
            # then download, once every pushed entry is acked
            if (
                client.state is State.OPEN
                and client.uploads_pending == 0
                and not self.subscribe_sent
            ):
                self.subscribe_sent = True
                client.subscribe([COLLECTION], replica.cursor)
        self.flush_client()

    def deliver_to_client(self) -> None:
        data = self.s2c.popleft()
        if data == b"":
            self.drop_client()
            return
        self.client.receive_data(data)
        self.on_client_events()

    # -- the relay driver (what server/ does, with the in-memory relay model) -------------

    def flush_server(self) -> None:
        for data in self.server.data_to_send():
            if self.client_open:
                self.s2c.append(data)
            if data == b"":  # the relay closes the socket after its fatal error
                self.drop_server()
                return

    def drop_server(self) -> None:
        if not self.server_open:
            return
        self.server.receive_eof()
        self.server_open = False
        self.subscribed = False
        self.c2s.clear()

    def deliver_to_server(self) -> None:
        data = self.c2s.popleft()
        if data == b"":
            self.drop_server()
            return
        self.server.receive_data(data)
        self.network.relay.handle(self)
        for link in self.network.links:
            link.flush_server()


@dataclass
class Relay:
    """The relay model: one doc per record, a change log (seq -> record, origin), acks."""

    docs: dict[str, Doc[Any]] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)  # index + 1 = change seq
    acked: list[bytes] = field(default_factory=list)
    network: Network | None = None

    def handle(self, link: Link) -> None:
        server = link.server
        assert self.network is not None
        for event in server.events_received():
            if server.state is not State.OPEN and not isinstance(event, HelloReceived):
                continue
            match event:
                case HelloReceived(_, replica):
                    link.peer = replica
                    server.accept(TENANT, [COLLECTION])
                case PushReceived(items):
                    for item in items:
                        self.docs.setdefault(item.record_id, Doc()).apply_update(item.update)
                        self.log.append((item.record_id, link.peer or ""))
                        cursor = len(self.log)
                        for other in self.network.links:
                            if other is not link and other.subscribed and other.server_open:
                                other.server.send_updates(
                                    [(COLLECTION, item.record_id, item.update)], cursor
                                )
                    # "durably stored" (in memory, never lost), so ack
                    self.acked.extend(i.update for i in items)
                    server.ack([i.seq for i in items])
                case Subscribed(_, cursor):
                    link.subscribed = True  # registered first, then the listing
                    head = len(self.log)
                    start = cursor or 0
                    changed = sorted(
                        {r for r, origin in self.log[start:head] if origin != link.peer}
                    )
                    if changed:
                        link.catchups.append(head)
                        server.send_changed([(COLLECTION, r) for r in changed], head, done=True)
                    else:
                        server.send_synced(head)
                case StateVectorsReceived(items, done):
                    server.send_updates(
                        [
                            (
                                COLLECTION,
                                i.record_id,
                                self.docs[i.record_id].get_update(i.state_vector),
                            )
                            for i in items
                            if i.record_id in self.docs
                        ],
                        None,
                    )
                    if done:
                        server.send_synced(
                            link.catchups.popleft() if link.catchups else len(self.log)
                        )


@dataclass
class Network:
    replicas: list[Replica]
    relay: Relay = field(default_factory=Relay)
    links: list[Link] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.relay.network = self

    def connect(self, replica: Replica) -> None:
        if replica.link is not None:
            return
        link = Link(self, replica, ClientProtocol(replica.name, "token"))
        replica.link = link
        self.links.append(link)
        link.flush_client()

    def cut(self, replica: Replica, lose_in_flight: bool) -> None:
        """The replica's connection breaks; what it had sent is lost, or still in flight."""
        link = replica.link
        if link is None:
            return
        link.drop_client()
        if lose_in_flight:
            link.c2s.clear()
        link.c2s.append(b"")  # the relay sees the end after what is still in flight

    def busy_links(self) -> list[Link]:
        self.links = [link for link in self.links if link.server_open or link.s2c]
        return [link for link in self.links if link.c2s or (link.s2c and link.client_open)]

    def deliver(self, count: int) -> int:
        """Deliver up to ``count`` frames in flight, fairly, with no faults; how many were."""
        delivered = 0
        while delivered < count:
            busy = self.busy_links()
            if not busy:
                break
            for link in busy:
                if link.c2s and delivered < count:
                    link.deliver_to_server()
                    delivered += 1
                if link.s2c and link.client_open and delivered < count:
                    link.deliver_to_client()
                    delivered += 1
        return delivered

    def settle(self, max_deliveries: int = 100_000) -> None:
        """Deliver every frame in flight until nothing moves."""
        self.deliver(max_deliveries)
        assert not self.busy_links(), "the exchange did not settle"

    def final_sync(self) -> None:
        """Cut every connection, then reconnect everyone without faults and settle."""
        for replica in self.replicas:
            self.cut(replica, lose_in_flight=True)
        for link in self.links:
            link.drop_server()
        self.links = []
        for replica in self.replicas:
            self.connect(replica)
        self.settle()


def assert_converged(network: Network) -> None:
    """Everyone holds the same content, and every edit (so every acknowledged one) is in it."""
    relay = network.relay
    for replica in network.replicas:
        assert replica.outbox == {}, f"{replica.name} still has unacknowledged entries"
        assert replica.link is not None and replica.link.client.state is State.OPEN
        assert not replica.link.client.catching_up
    every_edit = [edit for replica in network.replicas for edit in replica.edits]
    acked = set(relay.acked)
    assert acked == {update for _, update in every_edit}
    for record_id, relay_doc in relay.docs.items():
        expected = content(relay_doc)
        for replica in network.replicas:
            assert content(replica.doc(record_id)) == expected, (replica.name, record_id)
    for replica in [*network.replicas, None]:
        for record_id, update in every_edit:
            doc = relay.docs[record_id] if replica is None else replica.doc(record_id)
            assert includes(doc, update), (replica and replica.name, record_id)


def pick(candidates: list[Link], index: int) -> Link | None:
    return candidates[index % len(candidates)] if candidates else None


def run_step(network: Network, step: tuple[Any, ...]) -> None:
    match step:
        case ("edit", r, record_id, position, text):
            network.replicas[r].edit(record_id, position, text, key=text[0])
        case ("connect", r):
            network.connect(network.replicas[r])
        case ("to_server", index, duplicate):
            link = pick([link for link in network.links if link.c2s], index)
            if link is not None:
                if duplicate and link.c2s[0] != b"":
                    link.c2s.appendleft(link.c2s[0])
                link.deliver_to_server()
        case ("to_client", index, duplicate):
            link = pick([link for link in network.links if link.s2c and link.client_open], index)
            if link is not None:
                if duplicate and link.s2c[0] != b"":
                    link.s2c.appendleft(link.s2c[0])
                link.deliver_to_client()
        case ("cut", r, lose_in_flight):
            network.cut(network.replicas[r], lose_in_flight)
        case ("reconnect", r):
            # Cut, keeping what was in flight, and connect again at once: the old
            # connection's frames reach the relay interleaved with the new one's.
            network.cut(network.replicas[r], lose_in_flight=False)
            network.connect(network.replicas[r])
        case ("run", count):
            network.deliver(count)


STEP_ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "edit": st.tuples(
        st.integers(0, 2),
        st.sampled_from(RECORDS),
        st.integers(0, 30),
        st.text(alphabet="abcxyz", min_size=1, max_size=3),
    ),
    "connect": st.tuples(st.integers(0, 2)),
    "to_server": st.tuples(st.integers(0, 20), st.booleans()),
    "to_client": st.tuples(st.integers(0, 20), st.booleans()),
    "cut": st.tuples(st.integers(0, 2), st.booleans()),
    "reconnect": st.tuples(st.integers(0, 2)),
    "run": st.tuples(st.integers(1, 12)),
}
# Weighted so that sessions get far (welcome, upload, catch-up, live) between cuts.
STEP_KINDS = [
    *["edit"] * 4,
    *["connect"] * 3,
    *["run"] * 4,
    *["to_server", "to_client"] * 2,
    "cut",
    "reconnect",
]

steps = st.lists(
    st.sampled_from(STEP_KINDS).flatmap(
        lambda kind: STEP_ARGUMENTS[kind].map(lambda args: (kind, *args))
    ),
    min_size=20,
    max_size=100,
)


class TestConvergence:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(steps)
    def test_replicas_converge_and_lose_no_acknowledged_update(
        self, script: list[tuple[Any, ...]]
    ) -> None:
        network = Network([Replica(f"replica-{i}") for i in range(3)])
        for step in script:
            run_step(network, step)
        network.final_sync()
        assert_converged(network)

    def test_a_connection_cut_after_any_frame_still_converges(self) -> None:
        # "Disconnects at every step", exhaustively for one scripted session: every replica
        # has offline edits, then all connect; the connection of one replica is cut after the
        # k-th frame delivered, for every k, losing or still delivering what was in flight.
        def session(cut_after: int | None, victim: int, lose: bool) -> tuple[Network, int]:
            network = Network([Replica(f"replica-{i}") for i in range(3)])
            for i, replica in enumerate(network.replicas):
                replica.edit("job-1", 0, f"r{i}", key="status")
                replica.edit(RECORDS[i], 0, "offline", key="note")
            network.replicas[0].cursor = None
            for replica in network.replicas:
                network.connect(replica)
            delivered = network.deliver(cut_after if cut_after is not None else 10_000)
            if cut_after is not None:
                network.cut(network.replicas[victim], lose)
                network.replicas[victim].edit("job-2", 3, "after-cut", key="status")
            network.final_sync()
            assert_converged(network)
            return network, delivered

        _, total = session(None, 0, False)
        assert total > 20
        for cut_after in range(total + 1):
            for victim, lose in itertools.product(range(3), (True, False)):
                session(cut_after, victim, lose)

    def test_acknowledged_updates_survive_a_cut_before_the_ack_arrives(self) -> None:
        network = Network([Replica("a"), Replica("b")])
        a, b = network.replicas
        a.edit("job-1", 0, "hello", key="k")
        network.connect(a)
        link = a.link
        assert link is not None
        link.deliver_to_server()  # hello
        link.deliver_to_client()  # welcome -> push
        link.deliver_to_server()  # push -> stored, ack queued
        assert network.relay.acked and link.s2c
        network.cut(a, lose_in_flight=True)  # the ack is lost
        assert a.outbox  # so the entry stays queued
        network.final_sync()  # re-sent (a duplicate for the relay, harmless)
        assert_converged(network)
        assert content(b.doc("job-1"))[0] == "hello"
