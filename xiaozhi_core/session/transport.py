"""The seam between a session and its connection: the :class:`Transport` protocol.

A session speaks the xiaozhi conversation (hello, listen, turns, MCP) and never knows
how the bytes travel. The gateway wraps each connection in a transport:

* WebSocket (``gateway/ws_transport.py``): JSON in text frames, Opus in binary frames
  with the v1/v2/v3 framing;
* MQTT + UDP (a later transport): JSON over MQTT, Opus in AES-CTR encrypted datagrams.

Incoming traffic is an async iterator of ``str`` (one JSON text message) and
``bytes`` (one Opus packet, framing already removed; may be empty: the "stopped"
marker of browser clients). Malformed binary frames are the transport's business: it
counts and drops them. When the peer goes away the iterator ends, or any send raises
:class:`TransportClosed`.

Example — an in-memory transport, as a test or another process would write one:

    >>> import asyncio
    >>> class ListTransport:
    ...     kind = "websocket"
    ...     def __init__(self, incoming):
    ...         self.peer = Peer("aa:bb:cc:dd:ee:ff", "client-1", "127.0.0.1:5000", 1)
    ...         self.incoming, self.sent = incoming, []
    ...     def hello_fields(self):
    ...         return {}
    ...     def negotiated(self, protocol_version):
    ...         pass
    ...     async def send_json(self, text):
    ...         self.sent.append(text)
    ...     async def send_audio(self, packet, timestamp_ms):
    ...         self.sent.append(packet)
    ...     async def send_audio_many(self, packets, timestamp_ms):
    ...         self.sent.extend(packets)
    ...     async def close(self, code=1000, reason=""):
    ...         pass
    ...     async def __aiter__(self):
    ...         for item in self.incoming:
    ...             yield item
    >>> t: Transport = ListTransport(['{"type":"hello"}', b"\\x01"])
    >>> async def drain():
    ...     return [m async for m in t]
    >>> asyncio.run(drain())
    ['{"type":"hello"}', b'\\x01']
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["AudioFastPath", "AudioHandler", "Peer", "Transport", "TransportClosed"]


class TransportClosed(Exception):
    """The connection is gone; whatever was being sent is lost. Not an error of the turn."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the handshake said.

    ``protocol_version`` is the binary framing version the handshake asked for (0: not
    said; the hello's ``version`` then decides).

    >>> Peer("aa:bb:cc:dd:ee:ff", "c1", "10.0.0.5:41234", 3).protocol_version
    3
    """

    device_id: str
    client_id: str
    remote: str = ""
    protocol_version: int = 0


class Transport(Protocol):
    """What a session needs from its connection."""

    #: The ``transport`` value of the server hello: ``"websocket"`` or ``"udp"``.
    kind: str
    peer: Peer

    def hello_fields(self) -> dict[str, object]:
        """Extra fields of the server hello this transport needs (``udp`` for MQTT+UDP)."""
        ...

    def negotiated(self, protocol_version: int) -> None:
        """The hello settled the binary framing version (1, 2 or 3)."""
        ...

    async def send_json(self, text: str) -> None:
        """Send one JSON text message (already serialised). Raises TransportClosed."""
        ...

    async def send_audio(self, packet: bytes, timestamp_ms: int) -> None:
        """Send one Opus packet. Raises TransportClosed."""
        ...

    async def send_audio_many(self, packets: Sequence[bytes], timestamp_ms: int) -> None:
        """Send several Opus packets in order, at once (one write where the transport
        can). Raises TransportClosed."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent; never raises)."""
        ...

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Incoming JSON text messages and Opus packets, in arrival order."""
        ...


#: What a session gives :meth:`AudioFastPath.set_audio_handler`: takes one Opus packet
#: (framing removed) without waiting and says whether it did. False means "not now"
#: (the session's lane is full), *having changed nothing*: the packet then takes the
#: iterator's way, in its place.
AudioHandler = Callable[[bytes], bool]


@runtime_checkable
class AudioFastPath(Protocol):
    """What a transport may offer on top of :class:`Transport`: Opus packets handed to
    the session straight from the receive callback, without the wake-up of the task
    that iterates the transport (one per packet, ~16 per second per device: a good part
    of the event loop's per-device cost).

    Order is kept by construction: the transport calls the handler only while the
    session waits for its next message with nothing queued before the packet — exactly
    when the iterator would have yielded this packet next and the session would have
    taken it at once. Otherwise (a text message being handled, messages queued) the
    packet goes through the iterator as usual.
    """

    def set_audio_handler(self, handler: AudioHandler | None) -> None:
        """Install (or with None remove) the session's handler."""
        ...
