"""A local fake of Microsoft Edge's read-aloud WebSocket service (aiohttp, 127.0.0.1).

It speaks the protocol as edge-tts 7.x speaks it, so the real ``edge_tts.Communicate``
can be pointed at it (the provider's ``endpoint`` option):

* ``GET /consumer/speech/synthesize/readaloud/edge/v1?TrustedClientToken=…&ConnectionId=…
  &Sec-MS-GEC=…&Sec-MS-GEC-Version=…`` upgrades to a WebSocket (a missing token or
  Sec-MS-GEC gets HTTP 403, like the real service);
* the client sends two text messages, ``Path:speech.config`` (JSON: output format,
  boundary options) and ``Path:ssml`` (the SSML: voice, prosody rate/volume/pitch,
  escaped text); both are recorded and parsed;
* the server answers text ``Path:turn.start``, text ``Path:audio.metadata``
  (a SentenceBoundary), binary audio messages — a 2-byte big-endian header length, the
  header text (``X-RequestId``, ``Content-Type:audio/mpeg``, ``X-StreamId``,
  ``Path:audio``, each line ending in CRLF) and the MP3 bytes — then an empty binary
  ``Path:audio`` message without Content-Type, and text ``Path:turn.end``; it then
  waits for the client to close.

Each connection plays the next script of :attr:`FakeEdge.scripts` (a :class:`Speak`
when there is none): :class:`Speak` (chunking, delays, a gate, how the turn ends),
:class:`Reject` (HTTP status at the handshake), :class:`Hang` (never answers, at a
given stage), :class:`Malformed` (a protocol violation), :class:`NoAudio`.
:attr:`FakeEdge.connections` records what each client sent and when it went away.

MP3 comes from :func:`sine_mp3` or :func:`speech_mp3` (espeak-ng, resampled to 24 kHz),
encoded in memory with PyAV at 48 kbit/s mono: the format Edge sends.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     async with FakeEdge() as server:
    ...         return server.url.startswith("ws://127.0.0.1:")
    >>> asyncio.run(demo())
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import re
import shutil
import struct
import subprocess
import time
import uuid
import wave
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import av
import numpy as np
from aiohttp import WSMsgType, web
from edge_tts.constants import TRUSTED_CLIENT_TOKEN
from xiaozhi_edge_tts._mp3 import encode_mp3

__all__ = [
    "PATH",
    "Connection",
    "FakeEdge",
    "Hang",
    "Malformed",
    "NoAudio",
    "Reject",
    "Speak",
    "mp3_frames",
    "sine_mp3",
    "speech_mp3",
]

PATH = "/consumer/speech/synthesize/readaloud/edge/v1"
RATE = 24000  # Edge's audio-24khz-48kbitrate-mono-mp3
FRAME = 576  # samples per MPEG-2 Layer III frame


# --------------------------------------------------------------------------- audio
@lru_cache(maxsize=8)
def sine_mp3(seconds: float = 1.0, freq: float = 440.0) -> bytes:
    """A sine tone as 24 kHz mono MP3."""
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (0.3 * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()
    return encode_mp3(pcm, RATE)


@lru_cache(maxsize=8)
def speech_mp3(text: str, voice: str = "en-us") -> bytes:
    """``text`` spoken by espeak-ng, as 24 kHz mono MP3 (needs ``espeak-ng`` on PATH)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("the tests need espeak-ng: apt-get install espeak-ng")
    wav = subprocess.run(
        [exe, "-v", voice, "--stdout", text], capture_output=True, check=True, timeout=30
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(raw) // 2)
    frame.planes[0].update(raw + b"\x00" * (frame.planes[0].buffer_size - len(raw)))
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    out = [*resampler.resample(frame), *resampler.resample(None)]
    pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in out)
    return encode_mp3(pcm, RATE)


def mp3_frames(mp3: bytes) -> int:
    """How many MP3 frames ``mp3`` holds (each decodes to 576 samples at 24 kHz)."""
    codec = av.CodecContext.create("mp3", "r")
    return len(codec.parse(mp3)) + len(codec.parse(None))


# --------------------------------------------------------------------------- scripts
@dataclass
class Speak:
    """A normal turn: turn.start, metadata, the MP3 in chunks, turn.end."""

    #: The MP3 to send (None: a 1 s 440 Hz sine).
    mp3: bytes | None = None
    chunk_bytes: int = 2048
    #: Seconds between the SSML and turn.start, and between audio messages.
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    metadata: bool = True
    #: Wait for :attr:`FakeEdge.gate` before sending chunk number ``gate_after``.
    gate_after: int | None = None
    #: Stop after this many chunks (None: all), then end the turn as ``end`` says.
    stop_after: int | None = None
    #: "turn.end": normal; "close": close frame without turn.end; "drop": abort the
    #: TCP connection; "hang": send nothing more, keep the connection open.
    end: Literal["turn.end", "close", "drop", "hang"] = "turn.end"


@dataclass
class Reject:
    """Answer the WebSocket upgrade with an HTTP error."""

    status: int = 403
    body: str = ""
    #: The Date header (edge-tts corrects its clock from it after a 403); "" = unusable.
    date: str | None = None


@dataclass
class Hang:
    """Never answer: at the HTTP upgrade, or after the SSML arrived."""

    stage: Literal["handshake", "ssml"] = "ssml"


@dataclass
class Malformed:
    """turn.start, then a message edge-tts cannot accept."""

    kind: Literal[
        "short_binary",
        "header_length",
        "binary_path",
        "header_line",
        "text_path",
        "metadata_json",
        "not_mp3",
    ] = "header_length"


@dataclass
class NoAudio:
    """turn.start and turn.end with no audio in between."""


Script = Speak | Reject | Hang | Malformed | NoAudio


# --------------------------------------------------------------------------- records
@dataclass
class Connection:
    """What one client connection sent, and how it ended."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    script: Script
    opened_at: float = field(default_factory=time.monotonic)
    #: Every text message from the client, raw.
    texts: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    ssml: str | None = None
    #: From the SSML: voice (long form), prosody and the text.
    voice: str | None = None
    rate: str | None = None
    volume: str | None = None
    pitch: str | None = None
    text: str | None = None
    chunks_sent: int = 0
    audio_bytes_sent: int = 0
    #: "close" (the client sent a close frame) or "eof" (the socket dropped).
    end_kind: str | None = None
    ended_at: float | None = None
    got_ssml: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    transport: Any = field(default=None, repr=False)

    @property
    def short_voice(self) -> str | None:
        """ "Microsoft Server Speech Text to Speech Voice (en-US, AriaNeural)" →
        "en-US-AriaNeural"."""
        m = re.fullmatch(
            r"Microsoft Server Speech Text to Speech Voice \((.+), (.+)\)", self.voice or ""
        )
        return f"{m.group(1)}-{m.group(2)}" if m else None


def _split(message: str) -> tuple[dict[str, str], str]:
    head, _, body = message.partition("\r\n\r\n")
    headers = dict(line.split(":", 1) for line in head.split("\r\n") if ":" in line)
    return headers, body


def _text_message(request_id: str, path: str, body: str) -> str:
    return (
        f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\n"
        f"Path:{path}\r\n\r\n{body}"
    )


def _binary_message(header: str, payload: bytes) -> bytes:
    raw = header.encode()
    return struct.pack(">H", len(raw)) + raw + payload


def _audio_message(request_id: str, stream_id: str, payload: bytes) -> bytes:
    if not payload:  # the end-of-audio marker: no Content-Type, no data
        return _binary_message(
            f"X-RequestId:{request_id}\r\nX-StreamId:{stream_id}\r\nPath:audio\r\n", b""
        )
    return _binary_message(
        f"X-RequestId:{request_id}\r\nContent-Type:audio/mpeg\r\nX-StreamId:{stream_id}\r\n"
        "Path:audio\r\n",
        payload,
    )


# --------------------------------------------------------------------------- server
class FakeEdge:
    """The fake service. ``async with FakeEdge() as server:``; point clients at
    :attr:`url`."""

    def __init__(self) -> None:
        self.scripts: deque[Script] = deque()
        self.connections: list[Connection] = []
        #: Opened by the test to release a :class:`Speak` with ``gate_after``.
        self.gate = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The endpoint: the real service's path, on 127.0.0.1 (no query)."""
        return f"ws://127.0.0.1:{self.port}{PATH}"

    def script(self, *scripts: Script) -> None:
        """Queue what the next connections do, one script each."""
        self.scripts.extend(scripts)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeEdge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or return early when the server stops."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # -- one connection ---------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        script = self.scripts.popleft() if self.scripts else Speak()
        rec = Connection(
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            script=script,
            transport=request.transport,
        )
        self.connections.append(rec)
        if rec.query.get("TrustedClientToken") != TRUSTED_CLIENT_TOKEN or not (
            rec.query.get("Sec-MS-GEC")
        ):
            return web.Response(status=403, text="missing token")
        if isinstance(script, Reject):
            headers = {"Date": script.date} if script.date is not None else None
            return web.Response(status=script.status, text=script.body, headers=headers)
        if isinstance(script, Hang) and script.stage == "handshake":
            await self._sleep(3600)
            return web.Response(status=503)
        ws = web.WebSocketResponse(compress=True)
        await ws.prepare(request)
        reader = asyncio.create_task(self._read(ws, rec))
        try:
            await self._until(rec.got_ssml, rec.ended)
            if rec.got_ssml.is_set() and not rec.ended.is_set():
                await self._play(ws, rec, script)
            await self._until(rec.ended)  # the client closes (after turn.end)
        except (ConnectionError, RuntimeError):
            pass  # the client went away while we were sending
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ws

    async def _until(self, *events: asyncio.Event) -> None:
        """Wait until one of ``events`` is set or the server stops."""
        waits = [asyncio.ensure_future(e.wait()) for e in (*events, self._stopping)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _read(self, ws: web.WebSocketResponse, rec: Connection) -> None:
        """Record the client's messages until it goes away."""
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                rec.texts.append(msg.data)
                headers, body = _split(msg.data)
                if headers.get("Path") == "speech.config":
                    rec.config = json.loads(body)
                elif headers.get("Path") == "ssml":
                    self._record_ssml(rec, body)
                    rec.got_ssml.set()
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING):
                rec.end_kind = rec.end_kind or "close"
            elif msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                rec.end_kind = rec.end_kind or "eof"
            else:
                continue
            rec.ended_at = rec.ended_at or time.monotonic()
            rec.ended.set()
            if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR) or ws.closed:
                return

    @staticmethod
    def _record_ssml(rec: Connection, ssml: str) -> None:
        rec.ssml = ssml
        root = ET.fromstring(ssml)
        ns = {"s": "http://www.w3.org/2001/10/synthesis"}
        voice = root.find("s:voice", ns)
        prosody = voice.find("s:prosody", ns) if voice is not None else None
        if voice is not None:
            rec.voice = voice.get("name")
        if prosody is not None:
            rec.rate, rec.volume = prosody.get("rate"), prosody.get("volume")
            rec.pitch, rec.text = prosody.get("pitch"), prosody.text

    async def _play(self, ws: web.WebSocketResponse, rec: Connection, script: Script) -> None:
        rid = uuid.uuid4().hex
        sid = uuid.uuid4().hex.upper()
        if isinstance(script, Hang):
            return  # the handler then waits for the client to leave
        if isinstance(script, Speak) and script.first_delay:
            await self._sleep(script.first_delay)
        await ws.send_str(_text_message(rid, "turn.start", '{"context":{"serviceTag":"fake"}}'))
        if isinstance(script, Malformed):
            await self._malformed(ws, rid, sid, script.kind)
            return
        if isinstance(script, Speak) and not await self._speak(ws, rec, script, rid, sid):
            return
        await ws.send_bytes(_audio_message(rid, sid, b""))
        await ws.send_str(_text_message(rid, "turn.end", "{}"))

    async def _speak(
        self, ws: web.WebSocketResponse, rec: Connection, s: Speak, rid: str, sid: str
    ) -> bool:
        """Send the audio; False when the turn must not end normally."""
        if s.metadata:
            meta = {
                "Metadata": [
                    {
                        "Type": "SentenceBoundary",
                        "Data": {
                            "Offset": 1_000_000,
                            "Duration": 8_000_000,
                            "text": {
                                "Text": rec.text or "",
                                "Length": len(rec.text or ""),
                                "BoundaryType": "SentenceBoundary",
                            },
                        },
                    }
                ]
            }
            await ws.send_str(_text_message(rid, "audio.metadata", json.dumps(meta)))
        mp3 = s.mp3 if s.mp3 is not None else sine_mp3()
        chunks = [mp3[i : i + s.chunk_bytes] for i in range(0, len(mp3), s.chunk_bytes)]
        for n, chunk in enumerate(chunks):
            if s.stop_after is not None and n >= s.stop_after:
                break
            if s.gate_after is not None and n == s.gate_after:
                await self._until(self.gate, rec.ended)
            if n and s.chunk_delay:
                await self._until_or_sleep(rec.ended, s.chunk_delay)
            if rec.ended.is_set() or ws.closed:
                return False
            await ws.send_bytes(_audio_message(rid, sid, chunk))
            rec.chunks_sent += 1
            rec.audio_bytes_sent += len(chunk)
        if s.stop_after is None or s.end == "turn.end":
            return True
        if s.end == "close":
            await ws.close()
        elif s.end == "drop":
            rec.transport.abort()
        return False  # "hang": nothing more

    async def _until_or_sleep(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._until(event)

    @staticmethod
    async def _malformed(ws: web.WebSocketResponse, rid: str, sid: str, kind: str) -> None:
        if kind == "short_binary":
            await ws.send_bytes(b"\x00")
        elif kind == "header_length":
            await ws.send_bytes(struct.pack(">H", 500) + b"Path:audio\r\n")
        elif kind == "binary_path":
            await ws.send_bytes(
                _binary_message(
                    f"X-RequestId:{rid}\r\nContent-Type:audio/mpeg\r\nPath:video\r\n", b"\xff"
                )
            )
        elif kind == "header_line":
            await ws.send_bytes(
                _binary_message(f"X-RequestId:{rid}\r\nno colon here\r\nPath:audio\r\n", b"\xff")
            )
        elif kind == "text_path":
            await ws.send_str(_text_message(rid, "turn.middle", "{}"))
        elif kind == "metadata_json":
            await ws.send_str(_text_message(rid, "audio.metadata", "{not json"))
        elif kind == "not_mp3":
            for _ in range(3):
                await ws.send_bytes(_audio_message(rid, sid, b"\x00" * 1000))
            await ws.send_bytes(_audio_message(rid, sid, b""))
            await ws.send_str(_text_message(rid, "turn.end", "{}"))
