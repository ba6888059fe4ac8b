"""Driving a :class:`~xiaozhi_core.device.FakeDevice` like the firmware: OTA bootstrap, a
real-time microphone, the device's MCP server, and what a turn looked like to the device.

Example (a 120 ms "utterance" through the mic; the filler sends DTX packets around it):
    >>> import asyncio
    >>> from xiaozhi_core.gateway import XiaozhiServer
    >>> from xiaozhi_core.testing import fake_config
    >>> async def main():
    ...     server = await XiaozhiServer.create(fake_config())
    ...     await server.start(port=0, http_port=0)
    ...     try:
    ...         boot = await ota_bootstrap(server.ota_url, "aa:bb:cc:00:00:01", "c-1")
    ...         async with FakeDevice(boot.ws_url, device_id="aa:bb:cc:00:00:01") as dev:
    ...             mic = Mic(dev, [b"\\xf8"])
    ...             mic.start()
    ...             await mic.say([b"\\x01\\x02\\x03", b"\\x04\\x05\\x06"])
    ...             await mic.stop()
    ...             return boot.ws_url == server.ws_url, mic.frames_sent >= 2
    ...     finally:
    ...         await server.stop()
    >>> asyncio.run(main())
    (True, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..device import FakeDevice, Received
from ..errors import XiaozhiError
from ..protocol.opus import OpusDecoder
from ..types import JSONObject, JSONValue

__all__ = [
    "FIRMWARE_VERSION",
    "Mic",
    "OtaResult",
    "TurnRecord",
    "firmware_mcp",
    "ota_bootstrap",
    "turn_record",
]

FIRMWARE_VERSION = "1.9.2"
FRAME_S = 0.060


# --------------------------------------------------------------------------- OTA
@dataclass
class OtaResult:
    ws_url: str
    token: str
    #: ``websocket.version`` when the server chose a binary protocol version.
    protocol_version: int | None
    response: JSONObject


def ota_body(device_id: str, client_id: str, version: str = FIRMWARE_VERSION) -> JSONObject:
    """The board description the firmware POSTs (the server treats it as opaque)."""
    return {
        "version": 2,
        "language": "en-US",
        "flash_size": 16777216,
        "minimum_free_heap_size": 8318916,
        "mac_address": device_id,
        "uuid": client_id,
        "chip_model_name": "esp32s3",
        "chip_info": {"model": 9, "cores": 2, "revision": 2, "features": 18},
        "application": {
            "name": "xiaozhi",
            "version": version,
            "compile_time": "Jan 01 2025T00:00:00Z",
            "idf_version": "v5.4",
            "elf_sha256": "0" * 64,
        },
        "partition_table": [],
        "ota": {"label": "ota_0"},
        "board": {
            "type": "xiaozhi-simulate",
            "name": "xiaozhi-simulate",
            "ssid": "sim",
            "rssi": -50,
            "channel": 1,
            "ip": "127.0.0.1",
            "mac": device_id,
        },
    }


async def ota_bootstrap(
    url: str, device_id: str, client_id: str, *, limit_s: float = 10.0
) -> OtaResult:
    """POST to the OTA endpoint as the firmware does; return the WebSocket URL and token.

    Raises :class:`XiaozhiError` with the server's answer when it refuses.
    """
    import aiohttp

    headers = {
        "Device-Id": device_id,
        "Client-Id": client_id,
        "Activation-Version": "1",
        "User-Agent": f"xiaozhi-simulate/{FIRMWARE_VERSION}",
        "Accept-Language": "en-US",
        "Content-Type": "application/json",
    }
    body = json.dumps(ota_body(device_id, client_id))
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as http,
            http.post(url, data=body, headers=headers) as resp,
        ):
            text = await resp.text()
            if resp.status != 200:
                raise XiaozhiError(
                    f"OTA {url} refused: HTTP {resp.status}: {' '.join(text.split())[:300]}"
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise XiaozhiError(f"OTA request to {url} failed: {type(exc).__name__}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError:
        raise XiaozhiError(f"OTA {url} answered with non-JSON: {text[:200]!r}") from None
    if not isinstance(data, dict):
        raise XiaozhiError(f"OTA {url} answered without a websocket url: {text[:300]}")
    ws = data.get("websocket")
    if not isinstance(ws, dict) or not ws.get("url"):
        extra = " (it offers MQTT only)" if "mqtt" in data else ""
        raise XiaozhiError(f"OTA {url} answered without a websocket url{extra}: {text[:300]}")
    version = ws.get("version")
    return OtaResult(
        str(ws["url"]),
        str(ws.get("token") or ""),
        version if isinstance(version, int) else None,
        data,
    )


# --------------------------------------------------------------------------- MCP
def firmware_mcp(volume: list[int] | None = None) -> Callable[[JSONObject], JSONObject | None]:
    """An MCP handler that answers like the firmware's MCP server (two tools).

    >>> handle = firmware_mcp()
    >>> handle({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
    ...         "params": {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 5}}})
    {'jsonrpc': '2.0', 'id': 1, 'result': {'content': [{'type': 'text', 'text': 'true'}], \
'isError': False}}
    >>> handle({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
    ...         "params": {"name": "self.audio_speaker.set_volume", "arguments": [5]}})["error"]
    {'message': 'Unknown tool: self.audio_speaker.set_volume'}
    """
    state = {"volume": 70 if not volume else volume[0]}
    tools: list[JSONValue] = [
        {
            "name": "self.get_device_status",
            "description": "Provides the real-time information of the device (speaker volume, "
            "screen, battery, network)",
            "inputSchema": {"type": "object", "properties": {}},
        },
        {
            "name": "self.audio_speaker.set_volume",
            "description": "Set the volume of the audio speaker.",
            "inputSchema": {
                "type": "object",
                "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
                "required": ["volume"],
            },
        },
    ]

    def handle(payload: JSONObject) -> JSONObject | None:
        rid, method = payload.get("id"), payload.get("method")
        if not isinstance(rid, int):
            return None  # notifications, or string ids: dropped
        raw_params = payload.get("params")
        params: JSONObject = raw_params if isinstance(raw_params, dict) else {}
        if method == "initialize":
            result: JSONObject = {
                "protocolVersion": "2024-11-05",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "xiaozhi-simulate", "version": FIRMWARE_VERSION},
            }
        elif method == "tools/list":
            result = {"tools": tools}
        elif method == "tools/call":
            name, args = params.get("name"), params.get("arguments")
            volume = args.get("volume") if isinstance(args, dict) else None
            if name == "self.get_device_status":
                text = json.dumps(
                    {
                        "audio_speaker": {"volume": state["volume"]},
                        "network": {"type": "wifi", "signal": "strong"},
                    }
                )
            elif name == "self.audio_speaker.set_volume" and isinstance(volume, int):
                state["volume"] = volume
                text = "true"
            else:
                return {"jsonrpc": "2.0", "id": rid, "error": {"message": f"Unknown tool: {name}"}}
            result = {"content": [{"type": "text", "text": text}], "isError": False}
        else:
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"message": f"Method not implemented: {method}"},
            }
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    return handle


# --------------------------------------------------------------------------- the mic
class Mic:
    """Streams a device's microphone in real time: one packet every 60 ms.

    Between utterances it sends ``filler`` packets (DTX silence, cycled) like an open
    mic; :meth:`pause` closes the mic (the device is Speaking in auto mode; nothing is
    sent) and :meth:`resume` reopens it. :meth:`say` queues an utterance and returns
    once its voice has been sent. The schedule is absolute, so a late wake-up is caught
    up rather than drifting; ``send_lag`` records how late each send was.
    """

    def __init__(
        self,
        dev: FakeDevice,
        filler: list[bytes] | None,
        *,
        frame_s: float = FRAME_S,
        keep_lags: bool = True,
    ) -> None:
        self.dev = dev
        self.filler = filler or []
        self.frame_s = frame_s
        self.frames_sent = 0  # non-empty packets sent
        self.send_lags: list[float] = []
        self.keep_lags = keep_lags
        self._speech: list[bytes] = []
        self._voice_end = 0
        self._voice_done: asyncio.Future[float] | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._task: asyncio.Task[None] | None = None
        self._filler_i = 0
        self._ts = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._voice_done is not None and not self._voice_done.done():
            self._voice_done.cancel()

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def say(self, packets: list[bytes], voice_end: int | None = None) -> float:
        """Queue ``packets``; return the ``time.monotonic()`` at which packet
        ``voice_end - 1`` (default: the last) was sent: the user's end of speech."""
        if self._task is None or self._task.done():
            raise RuntimeError("the mic is not running")
        self._speech = list(packets)
        self._voice_end = len(packets) if voice_end is None else voice_end
        self._voice_done = asyncio.get_running_loop().create_future()
        self.resume()
        return await self._voice_done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._open.is_set():
                await self._open.wait()
            start, k = loop.time(), 0
            while self._open.is_set():
                due = start + k * self.frame_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self._open.is_set():
                    break
                if self.keep_lags:
                    self.send_lags.append(max(0.0, loop.time() - due))
                await self._tick()
                k += 1

    async def _tick(self) -> None:
        if self._speech:
            packet = self._speech.pop(0)
            self._voice_end -= 1
        elif self.filler:
            packet = self.filler[self._filler_i % len(self.filler)]
            self._filler_i += 1
        else:
            return
        await self.dev.send_packet(packet, timestamp=self._ts)
        self._ts = (self._ts + int(self.frame_s * 1000)) & 0xFFFFFFFF
        if packet:
            self.frames_sent += 1
        if self._voice_end == 0 and self._voice_done is not None and not self._voice_done.done():
            self._voice_done.set_result(time.monotonic())


# --------------------------------------------------------------------------- turns
@dataclass
class TurnRecord:
    """What one turn looked like at the device; times in ms from the user's end of speech."""

    stt: str | None = None
    emotion: str | None = None
    emoji: str | None = None
    subtitles: list[str] = field(default_factory=list)
    frames: int = 0
    stt_ms: float | None = None
    tts_start_ms: float | None = None
    first_audio_ms: float | None = None
    tts_stop_ms: float | None = None
    aborted: bool = False
    #: Audio frames that arrived after ``tts stop`` (must be 0).
    frames_after_stop: int = 0
    alerts: list[str] = field(default_factory=list)
    error: str | None = None
    audio: list[bytes] = field(default_factory=list, repr=False)

    @property
    def completed(self) -> bool:
        return self.error is None and self.tts_stop_ms is not None

    def summary(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "audio"}
        out["completed"] = self.completed
        return out

    def decode(self, sample_rate: int) -> np.ndarray:
        dec = OpusDecoder(sample_rate)
        return np.frombuffer(b"".join(dec.decode(p) for p in self.audio), np.int16)


def _text(value: JSONValue) -> str | None:
    return value if isinstance(value, str) else None


def turn_record(received: list[Received], eos: float) -> TurnRecord:
    """Build a :class:`TurnRecord` from what the device received (a slice of
    ``dev.received``), with ``eos`` the ``time.monotonic()`` of the end of speech."""
    rec = TurnRecord()

    def ms(t: float) -> float:
        return round((t - eos) * 1000, 1)

    stopped = False
    for r in received:
        if r.audio is not None:
            if stopped:
                rec.frames_after_stop += 1
                continue
            rec.frames += 1
            rec.audio.append(r.audio)
            if rec.first_audio_ms is None:
                rec.first_audio_ms = ms(r.at)
            continue
        m = r.message or {}
        kind = m.get("type")
        if kind == "stt" and rec.stt is None:
            rec.stt, rec.stt_ms = str(m.get("text", "")), ms(r.at)
        elif kind == "llm" and rec.emotion is None:
            rec.emotion, rec.emoji = _text(m.get("emotion")), _text(m.get("text"))
        elif kind == "alert":
            rec.alerts.append(str(m.get("message", "")))
        elif kind == "tts":
            state = m.get("state")
            if state == "start" and rec.tts_start_ms is None:
                rec.tts_start_ms = ms(r.at)
            elif state == "sentence_start" and not stopped:
                rec.subtitles.append(str(m.get("text", "")))
            elif state == "stop" and not stopped:
                rec.tts_stop_ms = ms(r.at)
                stopped = True
    return rec
