"""One MQTT+UDP session as a :class:`~xiaozhi_core.session.transport.Transport`.

A device's MQTT connection outlives its sessions: every ``hello`` opens a session (an
"audio channel") with a fresh AES key and ssrc, and ``goodbye`` from either side ends it.
The gateway creates one :class:`MqttUdpTransport` per hello and feeds it:

* JSON from the device's PUBLISHes (:meth:`feed_json`), the hello first;
* datagrams routed to it by ssrc (:meth:`feed_datagram`): the device's address is learned
  from its first datagram and pinned, later datagrams from any other address are dropped;
  sequences at or below the last accepted one are dropped (late/duplicate), gaps counted.

Downlink JSON goes out as a PUBLISH on the device's connection, Opus as sealed datagrams
(sequence from 1 per session). Audio sent before the device's first datagram (its
address is not known yet) waits in a short buffer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ...protocol.udp import SequenceCounter, UdpCipher, UdpHeader, new_key, new_nonce
from ...session.transport import AudioHandler, Peer, TransportClosed

__all__ = ["MqttUdpTransport", "UdpCounters"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
#: Downlink packets kept while the device's UDP address is not known (~3 s at 60 ms).
PENDING_DOWNLINK = 50
#: Uplink packets queued for the session before new ones are dropped (~15 s at 60 ms).
MAX_QUEUED_AUDIO = 256
#: JSON messages queued for the session before new ones are dropped (a flooding device).
MAX_QUEUED_JSON = 256


@dataclass
class UdpCounters:
    """Datagram accounting of one transport (also summed per gateway)."""

    received: int = 0
    accepted: int = 0
    wrong_address: int = 0
    overflow: int = 0
    json_dropped: int = 0
    sent: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    sequence: SequenceCounter = field(default_factory=SequenceCounter)

    def as_dict(self) -> dict[str, int]:
        s = self.sequence
        return {
            "received": self.received,
            "accepted": self.accepted,
            "late": s.late,
            "duplicate": s.duplicate,
            "gaps": s.gaps,
            "lost": s.lost,
            "wrong_address": self.wrong_address,
            "overflow": self.overflow,
            "json_dropped": self.json_dropped,
            "sent": self.sent,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


class MqttUdpTransport:
    """The transport of one MQTT+UDP session (created by the gateway on ``hello``)."""

    kind = "udp"

    def __init__(
        self,
        *,
        peer: Peer,
        ssrc: int,
        udp_server: str,
        udp_port: int,
        publish: Callable[[bytes], Awaitable[bool]],
        sendto: Callable[[bytes, Address], None],
        on_closed: Callable[[MqttUdpTransport], None],
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.peer = peer
        self.ssrc = ssrc
        self.key = new_key()
        self.nonce = new_nonce(ssrc)
        self.cipher = UdpCipher(self.key, self.nonce)
        self.udp_server, self.udp_port = udp_server, udp_port
        self.address: Address | None = None
        self.session_id = ""
        self.counters = UdpCounters()
        self.closed = False
        self.device_said_goodbye = False
        self._publish, self._sendto, self._on_closed = publish, sendto, on_closed
        #: Told the reason of every dropped datagram (the server's frame-error metric).
        self._on_drop = on_drop or (lambda kind: None)
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._queued_audio = 0
        self._audio_handler: AudioHandler | None = None
        #: The iterator's consumer waits for the next item, done with every earlier one.
        self._waiting = False
        #: Opus packets the session took on the fast path (the rest went through the queue).
        self.fast_frames = 0
        self._send_seq = 0
        self._pending: collections.deque[tuple[bytes, int]] = collections.deque(
            maxlen=PENDING_DOWNLINK
        )

    # ------------------------------------------------------------------ Transport
    def hello_fields(self) -> dict[str, object]:
        """The ``udp`` block of the server hello: where to send, key and nonce (hex)."""
        return {
            "udp": {
                "server": self.udp_server,
                "port": self.udp_port,
                "encryption": "aes-128-ctr",
                "key": self.key.hex(),
                "nonce": self.nonce.hex(),
            }
        }

    def negotiated(self, protocol_version: int) -> None:
        """Nothing to do: datagrams have one layout whatever the hello's version."""

    async def send_json(self, text: str) -> None:
        if self.closed:
            raise TransportClosed("MQTT session is closed")
        if not self.session_id and '"hello"' in text:
            self._remember_session_id(text)
        if not await self._publish(text.encode()):
            await self._finish()
            raise TransportClosed("device's MQTT connection is gone")

    async def send_audio(self, packet: bytes, timestamp_ms: int) -> None:
        if self.closed:
            raise TransportClosed("MQTT session is closed")
        if self.address is None:
            self._pending.append((packet, timestamp_ms))
            return
        self._send(packet, timestamp_ms)

    async def send_audio_many(self, packets: Sequence[bytes], timestamp_ms: int) -> None:
        for packet in packets:  # one datagram each
            await self.send_audio(packet, timestamp_ms)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """End the session; tells the device ``goodbye`` unless it said it first."""
        if self.closed:
            return
        if not self.device_said_goodbye:
            goodbye = {"type": "goodbye", "session_id": self.session_id}
            try:
                await self._publish(json.dumps(goodbye).encode())
            except Exception:
                pass
        await self._finish()

    def set_audio_handler(self, handler: AudioHandler | None) -> None:
        self._audio_handler = handler

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        while True:
            self._waiting = True
            try:
                item = await self._queue.get()
            finally:
                self._waiting = False
            if item is None:
                return
            if isinstance(item, bytes):
                self._queued_audio -= 1
            yield item

    # ------------------------------------------------------------------ gateway side
    def feed_json(self, text: str) -> None:
        if self.closed:
            return
        if self._queue.qsize() - self._queued_audio >= MAX_QUEUED_JSON:
            self.counters.json_dropped += 1
            return
        self._queue.put_nowait(text)

    def device_goodbye(self) -> None:
        """The device closed its audio channel: end the session without a reply."""
        self.device_said_goodbye = True
        self.end()

    def end(self) -> None:
        """End incoming traffic (the session's loop sees the end of the iterator)."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)
            self._on_closed(self)

    def feed_datagram(self, header: UdpHeader, datagram: bytes, address: Address) -> None:
        """One datagram routed here by its ssrc."""
        c = self.counters
        c.received += 1
        c.bytes_in += len(datagram)
        if self.closed:
            return
        if self.address is not None and address != self.address:
            c.wrong_address += 1
            self._on_drop("udp_wrong_address")
            return
        duplicates = c.sequence.duplicate
        if not c.sequence.accept(header.sequence):
            self._on_drop("udp_duplicate" if c.sequence.duplicate > duplicates else "udp_late")
            return
        payload = self.cipher.decrypt(datagram)  # the gateway checked the layout
        if self.address is None:
            self.address = address
            log.info(
                "session %s: device %s sends audio from %s:%d",
                self.session_id or "?",
                self.peer.device_id,
                *address,
            )
            while self._pending:
                self._send(*self._pending.popleft())
        if self._queued_audio >= MAX_QUEUED_AUDIO:
            c.overflow += 1
            self._on_drop("udp_overflow")
            return
        c.accepted += 1
        handler = self._audio_handler
        # the fast path (AudioFastPath): the session takes it now if it is next in line
        if handler is not None and self._waiting and self._queue.empty() and handler(payload):
            self.fast_frames += 1
            return
        self._queued_audio += 1
        self._queue.put_nowait(payload)

    # ------------------------------------------------------------------ helpers
    def _send(self, packet: bytes, timestamp_ms: int) -> None:
        assert self.address is not None
        self._send_seq += 1
        datagram = self.cipher.seal(packet, self._send_seq, timestamp_ms)
        self.counters.sent += 1
        self.counters.bytes_out += len(datagram)
        self._sendto(datagram, self.address)

    def _remember_session_id(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("type") == "hello":
            self.session_id = str(data.get("session_id") or "")

    async def _finish(self) -> None:
        self.end()
        self._pending.clear()
