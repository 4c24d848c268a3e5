"""``welcome.cache_max_age``: the relay's maximum offline-cache age for the tenant (optional)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from helpers.protocol_pair import ProtocolPair

from crdt_sync import codec
from crdt_sync.errors import InvalidMessage
from crdt_sync.messages import Limits, Welcome
from crdt_sync.protocol import Welcomed

OLD_WELCOME = {
    "t": "welcome",
    "v": 1,
    "tenant": "a",
    "collections": ["c"],
    "limits": {"max_frame": 4096, "max_items": 2},
}


def test_round_trip_with_and_without_it() -> None:
    for msg in (
        Welcome("a", ("c",), Limits(4096, 2), cache_max_age=86400.0),
        Welcome("a", ("c",), Limits(4096, 2), cache_max_age=0.5),
        Welcome("a", ("c",), Limits(4096, 2)),
    ):
        assert codec.decode(codec.encode(msg)) == msg


def test_absent_when_none_so_older_clients_see_the_same_frame() -> None:
    assert msgpack.unpackb(codec.encode(Welcome("a", ("c",), Limits(4096, 2)))) == OLD_WELCOME
    with_age = msgpack.unpackb(codec.encode(Welcome("a", ("c",), Limits(4096, 2), 1, 60.0)))
    assert with_age == {**OLD_WELCOME, "cache_max_age": 60.0}


def test_an_older_relay_without_it_means_no_expiry() -> None:
    decoded = codec.decode(msgpack.packb(OLD_WELCOME))
    assert isinstance(decoded, Welcome) and decoded.cache_max_age is None


def test_an_integer_number_of_seconds_is_accepted() -> None:
    decoded = codec.decode(msgpack.packb({**OLD_WELCOME, "cache_max_age": 3600}))
    assert isinstance(decoded, Welcome) and decoded.cache_max_age == 3600.0


@pytest.mark.parametrize("bad", [0, -5, "60", float("inf"), float("nan"), True, [1]])
def test_bad_values_are_invalid(bad: Any) -> None:
    with pytest.raises(InvalidMessage, match="cache_max_age"):
        codec.decode(msgpack.packb({**OLD_WELCOME, "cache_max_age": bad}))


def test_server_sends_it_and_the_client_reports_it() -> None:
    pair = ProtocolPair.make(max_frame=5000, max_items=7)
    pair.client_to_server()
    pair.server.accept("acme", ["jobs"], cache_max_age=7200.0)
    assert pair.server_to_client() == [Welcome("acme", ("jobs",), Limits(5000, 7), 1, 7200.0)]
    assert pair.client_events() == [Welcomed("acme", ("jobs",), Limits(5000, 7), 7200.0)]


def test_without_it_the_client_reports_none() -> None:
    pair = ProtocolPair.make()
    pair.client_to_server()
    pair.server.accept("acme", ["jobs"])
    pair.server_to_client()
    [welcomed] = [e for e in pair.client_events() if isinstance(e, Welcomed)]
    assert welcomed.cache_max_age is None
