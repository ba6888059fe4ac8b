"""A fake xiaozhi device: speaks the protocol as the ESP32 firmware does.

Used by the tests and by ``xiaozhi simulate``; plugin authors can use it to drive a
server end to end. It records every message and audio frame it receives, in order.

Example:
    >>> import asyncio
    >>> from xiaozhi_core.gateway import XiaozhiServer
    >>> from xiaozhi_core.testing import fake_config
    >>> async def main():
    ...     server = await XiaozhiServer.create(fake_config())
    ...     await server.start(port=0, http_port=0)
    ...     try:
    ...         async with FakeDevice(server.ws_url) as dev:
    ...             return dev.server_hello["transport"]
    ...     finally:
    ...         await server.stop()
    >>> asyncio.run(main())
    'websocket'
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from .protocol.framing import decode_frame, encode_frame
from .protocol.opus import OpusDecoder, OpusEncoder
from .types import JSONObject

__all__ = [
    "FakeDevice",
    "McpHandler",
    "Received",
    "RecordingDevice",
    "downstream_rate",
    "encode_utterance",
]

#: Answers one MCP request of the server: its JSON-RPC payload → the reply payload, or
#: None for no answer; may be a coroutine function.
McpHandler = Callable[[JSONObject], JSONObject | None | Awaitable[JSONObject | None]]

#: The sample rates an Opus decoder plays.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass
class Received:
    """One thing the device received: a JSON message or an audio frame."""

    at: float
    message: JSONObject | None = None
    audio: bytes | None = None
    timestamp: int | None = None


def downstream_rate(hello: JSONObject) -> int:
    """The sample rate of the reply audio a server hello announces
    (``audio_params.sample_rate``; absent: the firmware's 24000).

    Raises ValueError naming the value when it is not a rate Opus can be played at.

    >>> downstream_rate({"type": "hello", "audio_params": {"sample_rate": 16000}})
    16000
    >>> downstream_rate({"type": "hello"})
    24000
    >>> downstream_rate({"type": "hello", "audio_params": {"sample_rate": None}})
    Traceback (most recent call last):
    ...
    ValueError: audio_params.sample_rate None is not an Opus rate (8000, 12000, 16000, 24000, 48000)
    """
    params = hello.get("audio_params")
    if params is None:
        return 24000
    if not isinstance(params, dict):
        raise ValueError(f"audio_params is not an object: {params!r}")
    rate = params.get("sample_rate", 24000)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in _OPUS_RATES:
        raise ValueError(
            f"audio_params.sample_rate {rate!r} is not an Opus rate "
            f"({', '.join(map(str, _OPUS_RATES))})"
        )
    return rate


def encode_utterance(pcm: np.ndarray, frame_ms: int = 60, sample_rate: int = 16000) -> list[bytes]:
    """Encode int16 audio as the firmware's upstream Opus packets (padded last frame)."""
    enc = OpusEncoder(sample_rate, frame_ms, application="voip")
    return enc.encode(pcm.astype(np.int16).tobytes()) + enc.flush()


class RecordingDevice(abc.ABC):
    """What both fake devices share: the ordered log of what they received, the waits on
    it, and the conversation messages they send.

    A subclass connects, appends to ``received`` (setting ``_new`` after each entry),
    keeps the server's hello in ``server_hello``, sends with :meth:`send_json` and says
    in :meth:`_lost` when its connection is gone.

    >>> class Loopback(RecordingDevice):
    ...     async def connect(self):
    ...         return self
    ...     async def close(self):
    ...         pass
    ...     async def send_json(self, message):
    ...         self.received.append(Received(0.0, message=dict(message)))
    ...         self._new.set()
    ...     async def send_packet(self, packet, timestamp=0):
    ...         self.received.append(Received(0.0, audio=packet, timestamp=timestamp))
    ...         self._new.set()
    >>> async def main():
    ...     async with Loopback() as dev:
    ...         await dev.listen("start", "manual")
    ...         await dev.stream([b"a", b"b"], realtime=False)
    ...         await dev.abort("wake_word_detected")
    ...         return dev.events(), await dev.wait_for("listen", "start")
    >>> asyncio.run(main())
    (['listen', 'audio', 'abort'], {'type': 'listen', 'state': 'start', 'mode': 'manual'})
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.server_hello: JSONObject = {}
        self._new = asyncio.Event()

    @abc.abstractmethod
    async def connect(self) -> Self:
        """Connect (and, unless told not to, say hello); returns the device."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection."""

    @abc.abstractmethod
    async def send_json(self, message: Mapping[str, object]) -> None:
        """Send one JSON message to the server."""

    @abc.abstractmethod
    async def send_packet(self, packet: bytes, timestamp: int = 0) -> None:
        """Send one Opus packet (``timestamp``: its ms since the stream began)."""

    def _lost(self) -> str | None:
        """Why the connection is gone (``"closed (1000 bye)"``), or None while it is up."""
        return None

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ sending
    async def listen(
        self, state: str = "start", mode: str = "auto", text: str | None = None
    ) -> None:
        msg: dict[str, object] = {"type": "listen", "state": state}
        if state == "start":
            msg["mode"] = mode
        if text is not None:
            msg["text"] = text
        await self.send_json(msg)

    async def abort(self, reason: str | None = None) -> None:
        await self.send_json({"type": "abort", **({"reason": reason} if reason else {})})

    async def stream(
        self, packets: Iterable[bytes], frame_ms: int = 60, realtime: bool = True
    ) -> None:
        """Send packets as the firmware does: one per ``frame_ms`` (or as fast as possible)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, packet in enumerate(packets):
            if realtime:
                delay = start + i * frame_ms / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_packet(packet, timestamp=i * frame_ms)

    # ------------------------------------------------------------------ inspecting
    def messages(self, type_: str | None = None) -> list[JSONObject]:
        return [
            r.message
            for r in self.received
            if r.message is not None and (type_ is None or r.message.get("type") == type_)
        ]

    def audio_frames(self) -> list[bytes]:
        return [r.audio for r in self.received if r.audio is not None]

    def events(self) -> list[str]:
        """A compact ordered log: ``stt``, ``llm``, ``tts:start``, ``audio``, ``tts:stop``..."""
        out: list[str] = []
        for r in self.received:
            if r.audio is not None:
                if not out or out[-1] != "audio":
                    out.append("audio")
            elif r.message is not None:
                t = r.message.get("type")
                kind = t if isinstance(t, str) else "?"
                out.append(f"tts:{r.message.get('state')}" if kind == "tts" else kind)
        return out

    # The waits take a timeout argument on purpose: they are a test/driver convenience
    # API where every call needs a bound.
    async def wait_frames(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``count`` audio frames have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.audio_frames()) < count:
                if (lost := self._lost()) is not None:
                    raise ConnectionError(f"{lost} before {count} frames")
                self._new.clear()
                await self._new.wait()

    async def wait_for(
        self,
        type_: str,
        state: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
        after: int = 0,
    ) -> JSONObject:
        """Wait for a message of ``type_`` (and ``state``) at index >= ``after``."""
        async with asyncio.timeout(timeout):
            while True:
                for r in self.received[after:]:
                    m = r.message
                    if (
                        m is not None
                        and m.get("type") == type_
                        and (state is None or m.get("state") == state)
                    ):
                        return m
                if (lost := self._lost()) is not None:
                    raise ConnectionError(f"{lost} before {type_}")
                self._new.clear()
                await self._new.wait()

    def decode_reply_audio(self, sample_rate: int | None = None) -> np.ndarray:
        """Decode every received Opus frame into one int16 signal."""
        rate = sample_rate or downstream_rate(self.server_hello)
        dec = OpusDecoder(rate)
        pcm = b"".join(dec.decode(p) for p in self.audio_frames())
        return np.frombuffer(pcm, np.int16)


@dataclass
class FakeDevice(RecordingDevice):
    url: str
    device_id: str = "aa:bb:cc:dd:ee:ff"
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str = ""
    protocol_version: int = 1
    #: Send identity as query parameters (browser style) instead of headers.
    use_query: bool = False
    features: JSONObject = field(default_factory=lambda: {"mcp": False})
    send_hello: bool = True
    #: Answer MCP requests with this handler: payload → result dict (or None: no answer).
    mcp_handler: McpHandler | None = None

    def __post_init__(self) -> None:
        super().__init__()
        self.ws: ClientConnection | None = None
        self.session_id = ""
        #: Text frames that were not a JSON object, in order: ignored, as the firmware does.
        self.malformed: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self.closed_code: int | None = None
        self.closed_reason = ""

    def _lost(self) -> str | None:
        if self.closed_code is None:
            return None
        return f"closed ({self.closed_code} {self.closed_reason})"

    # ------------------------------------------------------------------ connect
    async def connect(self) -> Self:
        headers = {
            "Device-Id": self.device_id,
            "Client-Id": self.client_id,
            "Protocol-Version": str(self.protocol_version),
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.url
        if self.use_query:
            query = {
                "device-id": self.device_id,
                "client-id": self.client_id,
                "protocol-version": str(self.protocol_version),
            }
            if self.token:
                query["authorization"] = f"Bearer {self.token}"
            url = f"{url}?{urlencode(query)}"
            headers = {}
        self.ws = await connect(
            url, additional_headers=headers, compression=None, max_size=65535, ping_interval=None
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if self.send_hello:
            await self.send_json(
                {
                    "type": "hello",
                    "version": self.protocol_version,
                    "transport": "websocket",
                    "features": self.features,
                    "audio_params": {
                        "format": "opus",
                        "sample_rate": 16000,
                        "channels": 1,
                        "frame_duration": 60,
                    },
                }
            )
            hello = await self.wait_for("hello", timeout=10)
            self.server_hello = hello
            session_id = hello.get("session_id")
            self.session_id = session_id if isinstance(session_id, str) else ""
        return self

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def drop(self) -> None:
        """Vanish like a real device: drop TCP without a close frame."""
        if self.ws is not None:
            transport = self.ws.transport
            transport.abort()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        assert self.ws is not None
        try:
            async for raw in self.ws:
                now = time.monotonic()
                if isinstance(raw, bytes):
                    payload, ts = decode_frame(raw, self.protocol_version)
                    self.received.append(Received(now, audio=payload, timestamp=ts))
                else:
                    try:
                        data = json.loads(raw)
                    except ValueError:
                        data = None
                    if not isinstance(data, dict):
                        self.malformed.append(raw)
                        continue
                    self.received.append(Received(now, message=data))
                    payload = data.get("payload", {})
                    if (
                        data.get("type") == "mcp"
                        and self.mcp_handler is not None
                        and isinstance(payload, dict)
                    ):
                        await self._answer_mcp(self.mcp_handler, payload)
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed_code = self.ws.close_code
            self.closed_reason = self.ws.close_reason or ""
            self._new.set()

    async def _answer_mcp(self, handler: McpHandler, payload: JSONObject) -> None:
        answer = handler(payload)
        reply = await answer if isinstance(answer, Awaitable) else answer
        if reply is not None:
            await self.send_json({"session_id": self.session_id, "type": "mcp", "payload": reply})

    # ------------------------------------------------------------------ sending
    async def send_json(self, message: Mapping[str, object]) -> None:
        assert self.ws is not None
        if self.session_id and "session_id" not in message:
            message = {"session_id": self.session_id, **message}
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: bytes | str) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def send_packet(self, packet: bytes, timestamp: int = 0) -> None:
        await self.send_raw(encode_frame(packet, self.protocol_version, timestamp))

    async def wait_closed(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> tuple[int | None, str]:
        async with asyncio.timeout(timeout):
            while self.closed_code is None:
                self._new.clear()
                await self._new.wait()
        return self.closed_code, self.closed_reason
