"""ProtocolPair: a ClientProtocol and a ServerProtocol joined by an in-memory "network".

Like h11's ``ConnectionPair``: nothing is delivered by itself. A test moves frames one way or
the other (``client_to_server()``, ``server_to_client()``), sees them decoded (so it can assert
what went over the wire), and reads the events they produced. ``b""`` (close the transport)
is turned into ``receive_eof()`` on the other side, as a driver would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crdt_sync import codec
from crdt_sync.messages import Message
from crdt_sync.protocol import (
    ClientEvent,
    ClientProtocol,
    ServerEvent,
    ServerProtocol,
    State,
)

#: A message or the end of the transport, as seen on the wire by a test.
EOF = "EOF"


def decoded(frames: list[bytes]) -> list[Message | str]:
    """Frames as messages, ``b""`` as :data:`EOF` (for assertions)."""
    return [EOF if frame == b"" else codec.decode(frame, 2**31) for frame in frames]


@dataclass
class ProtocolPair:
    """A client and a server core, plus the frames that went each way so far."""

    client: ClientProtocol
    server: ServerProtocol
    now: float | None = None
    wire_log: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        *,
        replica: str = "replica-1",
        token: str = "token",
        now: float | None = None,
        **server_options: object,
    ) -> ProtocolPair:
        """A fresh pair: the client has queued ``hello``, nothing was delivered yet."""
        client = ClientProtocol(replica, token, now=now)
        server = ServerProtocol(now=now, **server_options)  # type: ignore[arg-type]
        return cls(client, server, now)

    @classmethod
    def open(
        cls,
        *,
        tenant: str = "acme",
        collections: tuple[str, ...] = ("jobs", "contacts"),
        **options: object,
    ) -> ProtocolPair:
        """A pair past the handshake (hello, welcome delivered; events drained)."""
        pair = cls.make(**options)  # type: ignore[arg-type]
        pair.client_to_server()
        pair.server_events()
        pair.server.accept(tenant, collections)
        pair.server_to_client()
        pair.client_events()
        assert pair.client.state is State.OPEN and pair.server.state is State.OPEN
        return pair

    # -- moving frames ---------------------------------------------------------------------

    def client_to_server(self) -> list[Message | str]:
        """Deliver everything the client queued to the server; return it decoded."""
        frames = self.client.data_to_send()
        self._deliver(frames, self.server, "c>s")
        return decoded(frames)

    def server_to_client(self) -> list[Message | str]:
        """Deliver everything the server queued to the client; return it decoded."""
        frames = self.server.data_to_send()
        self._deliver(frames, self.client, "s>c")
        return decoded(frames)

    def _deliver(
        self, frames: list[bytes], to: ClientProtocol | ServerProtocol, direction: str
    ) -> None:
        for frame in frames:
            self.wire_log.append((direction, frame))
            if frame == b"":
                to.receive_eof()
            else:
                to.receive_data(frame, self.now)

    # -- events ----------------------------------------------------------------------------

    def client_events(self) -> list[ClientEvent]:
        return self.client.events_received()

    def server_events(self) -> list[ServerEvent]:
        return self.server.events_received()
