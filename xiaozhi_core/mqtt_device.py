"""A fake MQTT + UDP xiaozhi device, written from the firmware's protocol.

Like ``main/protocols/mqtt_protocol.cc`` it logs in with the OTA ``mqtt`` block's
credentials, **never subscribes** (it reads whatever the broker pushes to its
connection), publishes JSON on ``publish_topic``, opens its audio channel with a
``hello`` (version 3, transport ``udp``), then sends and receives Opus in AES-128-CTR
datagrams whose 16-byte header is the counter block; received datagrams are checked the
firmware's way (size, type, length, sequence above the last one). It records what it
receives like :class:`~xiaozhi_core.device.FakeDevice`, and exposes the datagram level
(:meth:`FakeMqttDevice.seal`, :meth:`FakeMqttDevice.send_datagram`) so tests can lose,
reorder, duplicate or forge packets.

Example (``ota`` is the ``mqtt`` object of an OTA response)::

    async with FakeMqttDevice(ota) as dev:
        await dev.listen("start", "auto")
        await dev.stream(packets)
        await dev.wait_for("tts", "stop")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import aiomqtt

from .device import Received, RecordingDevice
from .protocol.udp import HEADER_SIZE, TYPE_AUDIO, UdpCipher, UdpError, parse_header
from .types import JSONObject

__all__ = ["FakeMqttDevice"]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, device: FakeMqttDevice) -> None:
        self.device = device

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.device._datagram(data)


class FakeMqttDevice(RecordingDevice):
    """One device; ``mqtt`` is the OTA response's ``mqtt`` object."""

    def __init__(
        self,
        mqtt: dict[str, Any],
        *,
        features: dict[str, object] | None = None,
        mcp_handler: Callable[[object], object] | None = None,
        hello: bool = True,
        udp_via: tuple[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.config = dict(mqtt)
        self.features = features if features is not None else {"mcp": False}
        self.mcp_handler = mcp_handler
        self.send_hello = hello
        #: Send audio to this address instead of the hello's ``udp`` (a test proxy).
        self.udp_via = udp_via
        #: Sequence numbers of the audio datagrams accepted, in order.
        self.accepted_sequences: list[int] = []
        self.session_id = ""
        self.cipher: UdpCipher | None = None
        self.local_sequence = 0
        self.remote_sequence = 0
        #: Datagrams dropped on receipt, by the firmware's reason.
        self.dropped = {"short": 0, "type": 0, "length": 0, "old": 0}
        self.gaps = 0
        self.client: aiomqtt.Client | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self._reader: asyncio.Task[None] | None = None
        self.disconnected = False

    def _lost(self) -> str | None:
        return "MQTT connection lost" if self.disconnected else None

    # ------------------------------------------------------------------ MQTT
    async def connect(self) -> Self:
        """MQTT CONNECT (and, unless ``hello=False``, open the audio channel)."""
        host, _, port = self.config["endpoint"].rpartition(":")
        self.client = aiomqtt.Client(
            host,
            int(port),
            identifier=self.config["client_id"],
            username=self.config["username"],
            password=self.config["password"],
            keepalive=int(self.config.get("keepalive", 240)),
        )
        await self.client.__aenter__()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if self.send_hello:
            await self.open_audio_channel()
        return self

    async def close(self, goodbye: bool = True) -> None:
        """Close the audio channel (saying goodbye, as the firmware does) and MQTT."""
        if goodbye and self.udp is not None and self.client is not None:
            with contextlib.suppress(Exception):
                await self.send_json({"type": "goodbye"})
        self.close_audio_channel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.__aexit__(None, None, None)
            self.client = None

    async def _read(self) -> None:
        assert self.client is not None
        try:
            async for message in self.client.messages:
                payload = message.payload
                data = json.loads(payload if isinstance(payload, (str, bytes)) else b"")
                if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                    continue
                self.received.append(Received(time.monotonic(), message=data))
                if data["type"] == "hello":
                    self._server_hello(data)
                elif data["type"] == "goodbye" and data.get("session_id") == self.session_id:
                    self.close_audio_channel()
                elif data["type"] == "mcp" and self.mcp_handler is not None:
                    reply = self.mcp_handler(data.get("payload", {}))
                    if reply is not None:
                        await self.send_json({"type": "mcp", "payload": reply})
                self._new.set()
        except aiomqtt.MqttError:
            self.disconnected = True
            self._new.set()

    async def send_json(self, message: Mapping[str, object]) -> None:
        assert self.client is not None
        if self.session_id and "session_id" not in message:
            message = {"session_id": self.session_id, **message}
        await self.client.publish(self.config["publish_topic"], json.dumps(message).encode())

    # ------------------------------------------------------------------ audio channel
    async def open_audio_channel(self, timeout: float = 10.0) -> JSONObject:  # noqa: ASYNC109
        """Send hello, wait for the server's (10 s like the firmware), open UDP."""
        self.session_id = ""
        start = len(self.received)
        await self.send_json(
            {
                "type": "hello",
                "version": 3,
                "transport": "udp",
                "features": self.features,
                "audio_params": {
                    "format": "opus",
                    "sample_rate": 16000,
                    "channels": 1,
                    "frame_duration": 60,
                },
            }
        )
        hello = await self.wait_for("hello", timeout=timeout, after=start)
        udp = hello.get("udp")
        if not isinstance(udp, dict):
            raise ConnectionError(f"server hello without a udp block: {hello}")
        loop = asyncio.get_running_loop()
        address = self.udp_via or (str(udp["server"]), int(str(udp["port"])))
        self.udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), remote_addr=address)
        return hello

    def _server_hello(self, hello: JSONObject) -> None:
        udp = hello.get("udp")
        if hello.get("transport") != "udp" or not isinstance(udp, dict):
            return
        key, nonce = bytes.fromhex(str(udp["key"])), bytes.fromhex(str(udp["nonce"]))
        if len(key) != 16 or len(nonce) != 16:
            return
        self.server_hello = hello
        self.session_id = str(hello.get("session_id", ""))
        self.cipher = UdpCipher(key, nonce)
        self.local_sequence = self.remote_sequence = 0

    def close_audio_channel(self) -> None:
        if self.udp is not None:
            self.udp.close()
            self.udp = None

    def seal(self, packet: bytes, timestamp: int = 0) -> bytes:
        """The next uplink datagram for ``packet`` (advances the sequence)."""
        assert self.cipher is not None, "no server hello yet"
        self.local_sequence += 1
        return self.cipher.seal(packet, self.local_sequence, timestamp)

    def send_datagram(self, datagram: bytes) -> None:
        assert self.udp is not None, "audio channel is not open"
        self.udp.sendto(datagram)

    async def send_packet(self, packet: bytes, timestamp: int = 0) -> None:
        self.send_datagram(self.seal(packet, timestamp))
        await asyncio.sleep(0)  # a datagram send never waits: let the loop run between packets

    def _datagram(self, data: bytes) -> None:
        if len(data) < HEADER_SIZE:
            self.dropped["short"] += 1
            return
        try:
            header = parse_header(data)
        except UdpError:
            self.dropped["type" if data[0] != TYPE_AUDIO else "length"] += 1
            return
        if header.sequence <= self.remote_sequence:
            self.dropped["old"] += 1
            return
        if header.sequence != self.remote_sequence + 1:
            self.gaps += header.sequence - self.remote_sequence - 1
        assert self.cipher is not None
        _h, payload = self.cipher.open(data)
        self.remote_sequence = header.sequence
        self.accepted_sequences.append(header.sequence)
        self.received.append(Received(time.monotonic(), audio=payload, timestamp=header.timestamp))
        self._new.set()
