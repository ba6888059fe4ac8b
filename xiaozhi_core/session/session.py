"""One device connection: the protocol state machine, the ordered audio lane, turns.

A session is a handful of asyncio tasks — the receive loop, the audio lane consumer, an
idle watchdog, the current turn — never a thread.

**The ordered audio lane.** The receive loop strips the binary framing and puts each
Opus packet (and each ``listen`` control message, so control and audio keep their
relative order) into a *bounded* queue. When the queue is full the receive loop waits,
which stops reading the socket: back-pressure reaches the device through TCP, and it is
counted and logged. Nothing is dropped or reordered. The lane consumer takes items
strictly in order, has the shared :class:`~xiaozhi_core.session.audio_hub.AudioHub`
decode and VAD them (batched with every other session), and feeds the per-window
probabilities to the segmenter, the manual buffer and the streaming ASR session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..protocol import messages as msg
from ..protocol.framing import FrameError, decode_frame, encode_frame
from ..types import Role
from .mcp import MCPClient, MCPError
from .memory import Memory
from .segmenter import Segment, Segmenter
from .tools import ToolBox
from .turn import Turn

if TYPE_CHECKING:
    from ..gateway.server import XiaozhiServer

__all__ = ["DeviceInfo", "Providers", "Session"]

log = logging.getLogger(__name__)


@dataclass
class Providers:
    """The bound providers a session uses (shared by all sessions)."""

    vad: Any
    asr: Any
    llm: Any
    tts: Any
    voiceprint: Any = None

    @classmethod
    def from_roles(cls, bound: dict[Role, Any]) -> Providers:
        return cls(bound[Role.VAD], bound[Role.ASR], bound[Role.LLM], bound[Role.TTS],
                   bound.get(Role.VOICEPRINT))


@dataclass
class DeviceInfo:
    device_id: str
    client_id: str
    protocol_version: int
    remote: str = ""


@dataclass
class _Control:
    kind: str          # "start" | "stop"
    mode: str = "auto"


class Session:
    """Serves one WebSocket connection until it closes."""

    def __init__(self, server: XiaozhiServer, ws: Any, device: DeviceInfo) -> None:
        self.server = server
        self.ws = ws
        self.device = device
        self.settings = server.config
        self.providers: Providers = server.providers
        self.executor = server.executor
        self.metrics = server.metrics
        self.session_id = uuid.uuid4().hex
        self.protocol_version = device.protocol_version
        cfg = self.settings.session
        self.memory = Memory(cfg.system_prompt, cfg.history_chars)
        self.tools = ToolBox(cfg.server_tools)
        self.llm_tools = "tools" in self.providers.llm.spec.capabilities
        self.mcp = MCPClient(self._send_mcp, self.settings.server.timeouts.mcp)
        self.tts_sample_rate: int = server.tts_sample_rate
        self.apology_frames: list[bytes] | None = server.apology_frames
        self.speaker: str | None = None
        # protocol state
        self.hello: dict[str, Any] | None = None
        self.listen_mode = "auto"
        self.listening = False
        self.closed = False
        # lane
        #: (Opus packet, arrival time, arrival sequence number) or a control item.
        self.queue: asyncio.Queue[tuple[bytes, float, int] | _Control] = asyncio.Queue(
            self.settings.server.limits.audio_queue_frames)
        self.stream = server.hub.new_stream()
        self.seg = server.segmentation
        self.segmenter = Segmenter(
            16000, server.hub.window, threshold=self.seg["threshold"],
            release_threshold=self.seg["release_threshold"],
            min_speech_ms=int(self.seg["min_speech_ms"]), silence_ms=int(self.seg["silence_ms"]),
            pre_roll_ms=int(self.seg["pre_roll_ms"]), max_utterance_ms=cfg.max_utterance_ms)
        self.manual_buffer: list[np.ndarray] = []
        self.asr_stream: Any = None
        self.frames_in = 0
        self.frames_processed = 0
        #: Frames the lane skipped (decode/VAD failure) or saw out of order: stay 0.
        self.frames_lost = 0
        self.frames_reordered = 0
        self._last_seq = 0
        self.frame_errors = 0
        self.lane_lag_max = 0.0
        # turns
        self.turn_seq = 0
        self.turn: Turn | None = None
        self.turn_task: asyncio.Task[None] | None = None
        self.active_turn_id: int | None = None
        self.latencies: list[dict[str, Any]] = []
        self.stale_dropped = 0
        self.last_voice = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backpressured = False

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.session_id[:8]}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Hello, then serve messages until the device goes away."""
        from websockets.exceptions import ConnectionClosed

        try:
            if not await self._await_hello():
                return
            self._spawn(self._lane(), "lane")
            self._spawn(self._watchdog(), "watchdog")
            async for message in self.ws:
                if isinstance(message, bytes):
                    await self._on_binary(message)
                else:
                    await self._on_text(message)
        except ConnectionClosed:
            pass
        finally:
            await self.close_tasks()

    async def close_tasks(self) -> None:
        """Cancel everything this session started and release its resources."""
        self.closed = True
        self.active_turn_id = None
        self.mcp.cancel_all()
        tasks = list(self._tasks)
        if self.turn_task is not None:
            tasks.append(self.turn_task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self.turn_task = None
        await self._close_asr_stream()

    async def _await_hello(self) -> bool:
        timeout = self.settings.server.timeouts.hello
        try:
            async with asyncio.timeout(timeout):
                async for message in self.ws:
                    if isinstance(message, bytes):
                        continue
                    try:
                        data = msg.parse_message(message)
                    except msg.ProtocolError as exc:
                        log.info("session %s: bad frame before hello: %s", self.session_id, exc)
                        continue
                    if data["type"] == "hello":
                        await self._on_hello(data)
                        return True
                    log.debug("session %s: %s before hello ignored", self.session_id, data["type"])
                return False
        except TimeoutError:
            log.warning("device %s sent no hello within %g s; closing", self.device.device_id,
                        timeout)
            await self.ws.close(4001, f"no hello within {timeout:g} s")
            return False

    async def _on_hello(self, data: dict[str, Any]) -> None:
        self.hello = data
        version = data.get("version")
        if isinstance(version, int) and version in (1, 2, 3) and not self.device.protocol_version:
            self.protocol_version = version
        self.protocol_version = self.protocol_version or 1
        raw_params = data.get("audio_params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        if params and params.get("format", "opus") != "opus":
            log.warning("session %s: device audio format %r unsupported; expecting opus",
                        self.session_id, params.get("format"))
        cfg = self.settings.session
        await self.send_json(msg.server_hello(self.session_id, cfg.output_sample_rate,
                                              cfg.output_frame_ms))
        raw_features = data.get("features")
        features: dict[str, Any] = raw_features if isinstance(raw_features, dict) else {}
        if features.get("mcp"):
            self._spawn(self._init_mcp(), "mcp-init")
        log.info("session %s: hello from %s (protocol v%d, mcp=%s)", self.session_id,
                 self.device.device_id, self.protocol_version, bool(features.get("mcp")))

    # ------------------------------------------------------------------ sending
    async def send_json(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        await self.ws.send(msg.dumps(message))

    async def send_audio(self, turn_id: int, packet: bytes) -> None:
        """Send one Opus packet of turn ``turn_id`` — unless that turn is no longer current."""
        if self.closed or turn_id != self.active_turn_id:
            self.stale_dropped += 1
            return
        ts = int(time.monotonic() * 1000) & 0xFFFFFFFF
        await self.ws.send(encode_frame(packet, self.protocol_version, ts))
        self.metrics.frames_out.inc()

    async def _send_mcp(self, payload: dict[str, Any]) -> None:
        await self.send_json(msg.mcp(self.session_id, payload))

    # ------------------------------------------------------------------ receiving
    async def _on_binary(self, data: bytes) -> None:
        try:
            payload, _ts = decode_frame(data, self.protocol_version)
        except FrameError as exc:
            self.frame_errors += 1
            self.metrics.frame_errors.labels("framing").inc()
            log.info("session %s: dropped malformed frame: %s", self.session_id, exc)
            return
        if not payload:       # 0-byte frame: "stopped" marker of browser clients
            return
        self.frames_in += 1
        self.metrics.frames_in.inc()
        item = (payload, time.monotonic(), self.frames_in)
        if self.queue.full():
            self.metrics.lane_backpressure.inc()
            if not self._backpressured:      # log once per episode, count every frame
                self._backpressured = True
                log.warning("session %s: audio lane full (%d frames); applying back-pressure",
                            self.session_id, self.queue.maxsize)
        elif self._backpressured and self.queue.qsize() <= self.queue.maxsize // 2:
            self._backpressured = False
            log.info("session %s: audio lane caught up", self.session_id)
        await self.queue.put(item)

    async def _on_text(self, text: str) -> None:
        try:
            data = msg.parse_message(text)
        except msg.ProtocolError as exc:
            self.metrics.frame_errors.labels("json").inc()
            log.info("session %s: ignored text frame: %s", self.session_id, exc)
            return
        kind = data["type"]
        if kind == "listen":
            await self._on_listen(data)
        elif kind == "abort":
            log.info("session %s: abort (%s)", self.session_id, data.get("reason", "button"))
            await self.abort()
        elif kind == "mcp":
            self.mcp.handle(data.get("payload"))
        elif kind == "hello":
            await self._on_hello(data)
        elif kind == "iot":
            log.debug("session %s: legacy iot message ignored", self.session_id)
        else:
            log.debug("session %s: unknown message type %r ignored", self.session_id, kind)

    async def _on_listen(self, data: dict[str, Any]) -> None:
        state = data.get("state")
        if state == "start":
            mode = data.get("mode", "auto")
            if mode not in ("auto", "manual", "realtime"):
                log.info("session %s: unknown listen mode %r, using auto", self.session_id, mode)
                mode = "auto"
            self.listen_mode = mode
            await self.queue.put(_Control("start", mode))
        elif state == "stop":
            await self.queue.put(_Control("stop"))
        elif state == "detect":
            text = str(data.get("text", "")).strip()
            self.last_voice = time.monotonic()
            if self._is_wake_word(text):
                greeting = self.settings.session.greeting
                if greeting:
                    await self.start_turn(Turn(self, self._next_turn_id(), speak=greeting,
                                               kind="greeting"))
            elif text:
                await self.start_turn(Turn(self, self._next_turn_id(), text=text, kind="text"))
        else:
            log.debug("session %s: listen state %r ignored", self.session_id, state)

    def _is_wake_word(self, text: str) -> bool:
        norm = "".join(ch for ch in text.lower() if ch.isalnum())
        return not norm or any(norm == "".join(c for c in w.lower() if c.isalnum())
                               for w in self.settings.session.wake_words)

    # ------------------------------------------------------------------ the lane
    async def _lane(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < 32 and not self.queue.empty():
                items.append(self.queue.get_nowait())
            i = 0
            while i < len(items):
                item = items[i]
                if isinstance(item, _Control):
                    await self._control(item)
                    i += 1
                    continue
                j = i
                while j < len(items) and not isinstance(items[j], _Control):
                    j += 1
                group = items[i:j]
                i = j
                packets = [p for p, _, _ in group]  # type: ignore[misc]
                try:
                    result = await self.server.hub.process(self.stream, packets)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("session %s: VAD/decode failed for %d frames: %s",
                              self.session_id, len(packets), exc)
                    await self._alert_once(f"Voice detection failed: {exc}")
                    continue
                now = time.monotonic()
                lags = [now - arrived for _, arrived, _ in group]  # type: ignore[misc]
                self.metrics.observe_lane_lag(lags)
                self.lane_lag_max = max(self.lane_lag_max, *lags)
                self._check_order(group)  # type: ignore[arg-type]
                self.frames_processed += len(group)
                self.metrics.frames_processed.inc(len(group))
                for err in result.errors:
                    self.frame_errors += 1
                    self.metrics.frame_errors.labels("opus").inc()
                    log.info("session %s: %s", self.session_id, err)
                for window, prob in zip(result.windows, result.probs, strict=True):
                    await self._on_window(window, prob)

    def _check_order(self, group: list[tuple[bytes, float, int]]) -> None:
        """Count frames skipped (a failed hub call) or processed out of arrival order."""
        for _, _, seq in group:
            expected = self._last_seq + 1
            if seq > expected:
                self.frames_lost += seq - expected
                self.metrics.frames_lost.inc(seq - expected)
            elif seq < expected:
                self.frames_reordered += 1
                self.metrics.frames_reordered.inc()
                log.error("session %s: frame %d processed after frame %d", self.session_id,
                          seq, self._last_seq)
            self._last_seq = max(self._last_seq, seq)

    async def _control(self, item: _Control) -> None:
        if item.kind == "start":
            self.segmenter.reset()
            self.manual_buffer = []
            await self._close_asr_stream()
            self.listening = True
            if item.mode == "manual" and self._streaming_asr():
                await self._open_asr_stream([])
        elif item.kind == "stop":
            if self.listen_mode == "manual" or self.manual_buffer:
                audio = (np.concatenate(self.manual_buffer) if self.manual_buffer
                         else np.zeros(0, np.int16))
                self.manual_buffer = []
                self.listening = False
                await self._end_utterance(audio)
            else:
                # auto/realtime: a stop ends what the segmenter holds, if anything
                audio_or_none = self.segmenter.take()
                self.listening = False
                if audio_or_none is not None and len(audio_or_none):
                    await self._end_utterance(audio_or_none)

    async def _on_window(self, window: np.ndarray, prob: float) -> None:
        if not self.listening:
            return
        if self.listen_mode == "manual":
            self.manual_buffer.append(window)
            if self.asr_stream is not None:
                await self._push_asr(window)
            if prob >= self.seg["threshold"]:
                self.last_voice = time.monotonic()
            return
        events = self.segmenter.feed(window, prob)
        if self.asr_stream is not None and self.segmenter.active and not events:
            await self._push_asr(window)
        for event in events:
            await self._on_segment(event)

    async def _on_segment(self, event: Segment) -> None:
        if event.kind == "start":
            self.last_voice = time.monotonic()
            if self.listen_mode == "realtime" and self.turn_task is not None \
                    and not self.turn_task.done():
                log.info("session %s: barge-in", self.session_id)
                await self.abort()
            if self._streaming_asr() and event.audio is not None:
                await self._open_asr_stream([event.audio])
        elif event.kind == "end" and event.audio is not None:
            if self.listen_mode == "auto":
                self.listening = False
            await self._end_utterance(event.audio)

    async def _end_utterance(self, audio: np.ndarray) -> None:
        eos = time.monotonic()
        min_samples = int(16 * self.seg["min_speech_ms"])
        stream, self.asr_stream = self.asr_stream, None
        if len(audio) < min_samples:
            log.info("session %s: utterance of %d ms too short; ignored", self.session_id,
                     len(audio) // 16)
            if stream is not None:
                await self._close_stream(stream)
            self.turn = None
            self._resume_listening()
            if self.listen_mode == "manual":
                await self.send_json(msg.tts(self.session_id, "stop"))
            return
        await self.start_turn(Turn(self, self._next_turn_id(), audio=audio,
                                   end_of_speech=eos), asr_stream=stream)

    # ------------------------------------------------------------------ streaming ASR
    def _streaming_asr(self) -> bool:
        asr = self.providers.asr
        return "streaming" in asr.spec.capabilities and hasattr(asr, "open_stream") \
            and not self.executor.is_process_pool

    async def _open_asr_stream(self, initial: list[np.ndarray]) -> None:
        await self._close_asr_stream()
        try:
            self.asr_stream = await self.providers.asr.open_stream(on_partial=self._on_partial)
            for chunk in initial:
                await self.asr_stream.push(chunk)
        except Exception as exc:
            log.warning("session %s: streaming ASR unavailable, using whole-utterance "
                        "recognition: %s", self.session_id, exc)
            await self._close_asr_stream()

    async def _push_asr(self, window: np.ndarray) -> None:
        try:
            await self.asr_stream.push(window)
        except Exception as exc:
            log.warning("session %s: streaming ASR push failed: %s", self.session_id, exc)
            await self._close_asr_stream()

    def _on_partial(self, result: Any) -> None:
        log.debug("session %s: partial: %s", self.session_id, getattr(result, "text", result))

    async def _close_asr_stream(self) -> None:
        stream, self.asr_stream = self.asr_stream, None
        if stream is not None:
            await self._close_stream(stream)

    @staticmethod
    async def _close_stream(stream: Any) -> None:
        close = getattr(stream, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    # ------------------------------------------------------------------ turns
    def _next_turn_id(self) -> int:
        self.turn_seq += 1
        return self.turn_seq

    async def start_turn(self, turn: Turn, asr_stream: Any = None) -> None:
        if self.turn_task is not None and not self.turn_task.done():
            await self.abort(answer=False)
        if asr_stream is not None:
            turn.asr_stream = asr_stream
        self.turn = turn
        self.active_turn_id = turn.id
        self.turn_task = asyncio.get_running_loop().create_task(
            turn.run(), name=f"{self.session_id[:8]}:turn{turn.id}")

    async def abort(self, answer: bool = True) -> None:
        """Cancel the current turn (LLM, TTS, queued frames) and answer ``tts stop``."""
        task, turn = self.turn_task, self.turn
        self.active_turn_id = None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self.metrics.turns.labels("aborted").inc()
        self.turn_task = None
        if answer or (turn is not None and turn.tts_started and not turn.tts_stopped):
            if turn is not None:
                turn.tts_stopped = True
            await self.send_json(msg.tts(self.session_id, "stop"))

    def turn_finished(self, turn: Turn) -> None:
        record = {"turn": turn.id, "kind": turn.latency.kind, **turn.latency.as_ms(),
                  "error": turn.latency.error}
        self.latencies.append(record)
        del self.latencies[:-20]
        self.last_voice = time.monotonic()
        if turn.latency.error is None:
            self.metrics.turns.labels("ok").inc()
            self.metrics.observe_turn(turn.latency)
            log.info("session %s turn %d latency: %s", self.session_id, turn.id,
                     {k: v for k, v in record.items() if k.endswith("_ms")})
        if turn.id == self.active_turn_id and self.listen_mode != "manual":
            self._resume_listening()

    def _resume_listening(self) -> None:
        """Listen again after a turn (or a non-turn) without waiting for ``listen start``
        where the device will not send one: realtime mode, or auto mode when nothing was
        spoken (the device never left Listening)."""
        if self.listen_mode == "realtime" or (
                self.listen_mode == "auto" and (self.turn is None or not self.turn.tts_started)):
            self.listening = True

    def metrics_turn_failed(self, exc: BaseException) -> None:
        self.metrics.turns.labels("failed").inc()

    async def _alert_once(self, message: str) -> None:
        now = time.monotonic()
        if now - getattr(self, "_last_alert", 0.0) > 10:
            self._last_alert = now
            with contextlib.suppress(Exception):
                await self.send_json(msg.alert(self.session_id, message))

    # ------------------------------------------------------------------ MCP
    async def _init_mcp(self) -> None:
        try:
            await self.mcp.initialize()
            tools = await self.mcp.list_tools()
            self.tools.set_device_tools(tools, self.mcp.call_tool)
            log.info("session %s: device offers %d MCP tools", self.session_id, len(tools))
        except MCPError as exc:
            log.warning("session %s: MCP setup failed: %s", self.session_id, exc)

    # ------------------------------------------------------------------ idle
    async def _watchdog(self) -> None:
        idle = self.settings.server.timeouts.idle
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            busy = self.turn_task is not None and not self.turn_task.done()
            if busy or time.monotonic() - self.last_voice < idle:
                continue
            log.info("session %s: no voice for %g s; saying goodbye", self.session_id, idle)
            goodbye = self.settings.session.goodbye
            if goodbye:
                await self.start_turn(Turn(self, self._next_turn_id(), speak=goodbye,
                                           kind="goodbye"))
                if self.turn_task is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.turn_task)
            await self.ws.close(1000, "idle timeout")
            return
