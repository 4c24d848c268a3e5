"""docs/protocol.md's example exchange is what the cores really produce; catch-up's cost.

The exchange is replayed here with the two cores joined in memory and fixed Yjs client ids (so
the update bytes are deterministic); the test compares the transcript with the first fenced
block of the "An example exchange" section. To regenerate it after a deliberate change:
``.venv/bin/python tests/crdt_sync/test_protocol_docs.py`` prints the new block.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgpack
from pycrdt import Doc, Map, Text

from crdt_sync.protocol import (
    ChangedReceived,
    ClientEvent,
    ClientProtocol,
    ServerEvent,
    ServerProtocol,
    StateVectorsReceived,
    SyncedReceived,
    UpdatesReceived,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _show(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<bin {len(value)}: {value.hex(' ')}>"
    if isinstance(value, list):
        return [_show(v) for v in value]
    if isinstance(value, dict):
        return {k: _show(v) for k, v in value.items()}
    return value


def transcript() -> str:
    lines: list[str] = []
    client = ClientProtocol("tech-17", "v1.eyJ0IjoiYWNtZSJ9.c2ln", now=0.0)
    server = ServerProtocol(max_items=500, max_frame=1048576, now=0.0)

    def move(
        direction: str,
        source: ClientProtocol | ServerProtocol,
        to: ClientProtocol | ServerProtocol,
        now: float,
    ) -> list[ClientEvent] | list[ServerEvent]:
        for frame in source.data_to_send():
            if frame == b"":
                lines.append(f"{direction}  close")
                to.receive_eof()
                continue
            shown = json.dumps(_show(msgpack.unpackb(frame)), ensure_ascii=False)
            lines.append(f"{direction} {len(frame):4d} B  {shown}")
            to.receive_data(frame, now=now)
        return to.events_received()

    def c2s(now: float = 1.0) -> list[ServerEvent]:
        events = move("C->S", client, server, now)
        return events  # type: ignore[return-value]

    def s2c(now: float = 1.0) -> list[ClientEvent]:
        events = move("S->C", server, client, now)
        return events  # type: ignore[return-value]

    def note(text: str) -> None:
        lines.append(text)

    # Two offline edits of job-42 on this replica; job-7 as another replica left it.
    doc: Doc[Any] = Doc(client_id=1001)
    fields = doc.get("fields", type=Map)
    notes = doc.get("notes", type=Text)
    before = doc.get_state()
    fields["status"] = "in_progress"
    status_update = doc.get_update(before)
    before = doc.get_state()
    notes += "Arrived."
    notes_update = doc.get_update(before)
    other: Doc[Any] = Doc(client_id=2002)
    other.get("fields", type=Map)["status"] = "closed"
    job7 = other.get_update()

    note("# handshake")
    note(f"   server events: {c2s()}")
    server.accept("acme", ["jobs", "contacts"])
    note(f"   client events: {s2c()}")
    note('# upload first: two offline edits of job-42 (status := in_progress; notes += "Arrived.")')
    client.push([(41, "jobs", "job-42", status_update), (42, "jobs", "job-42", notes_update)])
    events = c2s()
    note(f"   server events: {[type(e).__name__ for e in events]}")
    server.ack([41, 42])
    note(f"   client events: {s2c()} uploads_pending = {client.uploads_pending}")
    note("# then download")
    client.subscribe(["jobs"], 1200)
    note(f"   server events: {c2s()}")
    server.send_changed([("jobs", "job-7")], 1234, done=True)
    note(f"   client events: {s2c()}")
    client.send_state_vectors([("jobs", "job-7", b"\x00")], done=True)
    note(f"   server events: {c2s()}")
    server.send_updates([("jobs", "job-7", job7)], None)
    server.send_synced(1234)
    note(f"   client events: {[type(e).__name__ for e in s2c()]}")
    note("# live: an update another replica pushed")
    server.send_updates([("jobs", "job-9", job7)], 1235)
    s2c()
    note("# heartbeat")
    client.ping(now=30.0)
    c2s(now=30.0)
    note(f"   client events: {s2c(now=30.5)}")
    note('# a malformed frame reaches the server (b"\\x93\\x01\\x02")')
    server.receive_data(b"\x93\x01\x02", now=31.0)
    s2c(now=31.0)
    note(f"   client.close_exc: {client.close_exc!r}")
    return "\n".join(lines)


def documented_transcript() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## An example exchange", 1)[1]
    match = re.search(r"```\n(.*?)\n```", section, re.DOTALL)
    assert match, "no fenced block in the example section"
    return match.group(1)


def test_the_documented_exchange_is_what_the_cores_produce() -> None:
    assert documented_transcript() == transcript()


def test_the_documented_ack_bytes_are_the_encoding() -> None:
    from crdt_sync import codec
    from crdt_sync.messages import Ack

    section = DOC.read_text(encoding="utf-8").split("The `ack` above, byte by byte:", 1)[1]
    block = re.search(r"```\n(.*?)\n```", section, re.DOTALL)
    assert block
    hex_bytes = " ".join(line.split("  ")[0].strip() for line in block.group(1).splitlines())
    assert bytes.fromhex(hex_bytes) == codec.encode(Ack((41, 42)))


def catch_up_cost(cached: int, changed: int) -> dict[str, int]:
    """Bytes and frames of one reconnect catch-up through the two cores (docs: "Catch-up").

    The replica caches ``cached`` records; ``changed`` of them (spread evenly) changed on the
    relay since the replica's cursor. The relay side lists them from its change log, diffs
    against the state vectors it is sent; the replica applies the diffs.
    """
    relay: dict[str, Doc[Any]] = {}
    local: dict[str, Doc[Any]] = {}
    for i in range(cached):
        record_id = f"job-{i:05d}"
        relay[record_id] = Doc(client_id=2**20 + i)  # fixed: reproducible sizes
        relay[record_id].get("fields", type=Map)["status"] = "open"
        local[record_id] = Doc()
        local[record_id].apply_update(relay[record_id].get_update())
    cursor = 5000
    log = [f"job-{i:05d}" for i in range(0, cached, cached // changed)][:changed]
    for record_id in log:
        relay[record_id].get("fields", type=Map)["status"] = "closed"

    client = ClientProtocol("tech-17", "token")
    server = ServerProtocol(rate=None)
    cost = {"bytes_up": 0, "bytes_down": 0, "frames_up": 0, "frames_down": 0}

    def c2s() -> list[ServerEvent]:
        for frame in client.data_to_send():
            cost["bytes_up"] += len(frame)
            cost["frames_up"] += 1
            server.receive_data(frame)
        return server.events_received()

    def s2c() -> list[ClientEvent]:
        for frame in server.data_to_send():
            cost["bytes_down"] += len(frame)
            cost["frames_down"] += 1
            client.receive_data(frame)
        return client.events_received()

    c2s()
    server.accept("acme", ["jobs"])
    s2c()
    client.subscribe(["jobs"], cursor)
    c2s()
    head = cursor + len(log)
    server.send_changed([("jobs", record_id) for record_id in log], head, done=True)
    for event in s2c():
        assert isinstance(event, ChangedReceived)
        client.send_state_vectors(
            [(k.collection, k.record_id, local[k.record_id].get_state()) for k in event.items],
            done=event.done,
        )
    for event in c2s():
        assert isinstance(event, StateVectorsReceived)
        diffs = [
            (i.collection, i.record_id, relay[i.record_id].get_update(i.state_vector))
            for i in event.items
        ]
        server.send_updates(diffs, None)
        if event.done:
            server.send_synced(head)
    synced = None
    for event in s2c():
        if isinstance(event, UpdatesReceived):
            for item in event.items:
                local[item.record_id].apply_update(item.update)
        elif isinstance(event, SyncedReceived):
            synced = event.cursor
    assert synced == head
    assert all(local[r].get("fields", type=Map)["status"] == "closed" for r in log)
    return cost


def test_catch_up_costs_what_changed_not_what_is_cached() -> None:
    small = catch_up_cost(cached=200, changed=50)
    large = catch_up_cost(cached=2000, changed=50)
    assert small == large
    # About 30 bytes up per changed record (its key and state vector) besides hello and sub.
    assert large["bytes_up"] < 200 + 40 * 50
    assert large["frames_up"] == 3 and large["frames_down"] == 4


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--catch-up"]:
        print(catch_up_cost(cached=10_000, changed=100))
    else:
        print(transcript())
