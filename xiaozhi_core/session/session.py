"""One device connection: the protocol state machine and the turns.

A session is a handful of asyncio tasks — the receive loop, the audio lane consumer
(:mod:`~xiaozhi_core.session.lane`), an idle watchdog, the current turn — never a
thread. It knows its connection only as a :class:`~xiaozhi_core.session.transport.Transport`
and its server only as a :class:`~xiaozhi_core.session.host.SessionHost`; it is the
:class:`~xiaozhi_core.session.lane.LaneSink` of its lane and the
:class:`~xiaozhi_core.session.turn.TurnHooks` of its turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine

import numpy as np

from ..logfmt import cut, plain
from ..logutil import LogLimiter, clip
from ..protocol import messages as msg
from ..providers import ASRCapabilities, AsyncASRStream, LLMCapabilities
from ..types import ASRResult
from .host import SessionHost
from .lane import AudioLane, AudioRate, ControlItem, ListenMode
from .mcp import MCPClient, MCPError
from .memory import Memory
from .profiles import Profile
from .recall import StoreDeviceMemory, recall
from .segmenter import Segment
from .tools import ToolBox
from .transport import AudioFastPath, Peer, Transport, TransportClosed
from .turn import Turn

__all__ = ["Session"]

log = logging.getLogger(__name__)

_MODES: tuple[ListenMode, ...] = ("auto", "manual", "realtime")


class Session:
    """Serves one device connection until it closes."""

    def __init__(self, host: SessionHost, transport: Transport) -> None:
        self.host = host
        self.transport = transport
        self.device: Peer = transport.peer
        self.session_id = uuid.uuid4().hex
        cfg = host.session
        self.settings = cfg
        self.memory = Memory(cfg.system_prompt, cfg.history_chars)
        self.tools = ToolBox(cfg.server_tools)
        self.llm_tools = LLMCapabilities.of(host.providers.llm.spec).tools
        self.mcp = MCPClient(self._send_mcp, host.timeouts.mcp)
        self.speaker: str | None = None
        #: The language of the last answered turn (``auto`` sessions say goodbye in it).
        self.last_language: str | None = None
        # profile and durable memory (resolved after the hello, see _prepare)
        #: The profile the store maps this device to (None: none, or not read yet).
        self.stored_profile: str | None = None
        self.profile: Profile = host.profiles.current.resolve(self.device.device_id, None)
        #: What the memory provider recalled, added to the system prompt.
        self.memory_notes = ""
        self._prepared: asyncio.Task[None] | None = None
        #: Why the session ended, when the session itself knows (e.g. ``idle timeout``).
        self.close_reason: str | None = None
        self.started_at = time.time()
        # protocol state
        self.hello: dict[str, object] | None = None
        #: Called when the device says hello, before the server's hello is sent: the
        #: gateway moves it out of its pending-handshake budget into a session slot.
        #: False: no slot (the server is full): the session is closed 1013 unanswered.
        self.on_hello: Callable[[], bool] | None = None
        self.protocol_version = transport.peer.protocol_version
        self.listen_mode: ListenMode = "auto"
        self.listening = False
        self.closed = False
        # the lane
        self.lane = AudioLane(
            host.hub,
            host.hub.new_stream(),
            host.metrics,
            self,
            maxsize=host.limits.audio_queue_frames,
            label=self.session_id,
        )
        self.segmenter = host.segmentation.segmenter(16000, host.hub.window)
        self.manual_buffer: list[np.ndarray] = []
        self.asr_stream: AsyncASRStream | None = None
        # turns
        self.turn_seq = 0
        self.turn: Turn | None = None
        self.turn_task: asyncio.Task[None] | None = None
        self.active_turn_id: int | None = None
        self.latencies: list[dict[str, object]] = []
        self.stale_dropped = 0
        self.last_voice = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_alert = 0.0
        #: Closing a device that floods the server with audio (set once).
        self._flood: asyncio.Future[None] | None = None
        limits = host.limits
        #: Uploaded audio is held to real time (plus a burst): a flood is dropped, not
        #: decoded, so it cannot take CPU from the other sessions.
        self.audio_rate = AudioRate(
            limits.max_audio_speed, limits.audio_burst_ms, limits.audio_flood_ms
        )
        self.upstream_frame_ms = 60
        #: Complaints about malformed JSON a device can trigger at will: rate-limited.
        self._log_limit = LogLimiter(on_suppressed=host.metrics.count_suppressed_log)

    # ------------------------------------------------------------------ counters
    @property
    def frames_in(self) -> int:
        return self.lane.frames_in

    @property
    def frames_processed(self) -> int:
        return self.lane.frames_processed

    @property
    def frames_lost(self) -> int:
        return self.lane.frames_lost

    @property
    def frames_reordered(self) -> int:
        return self.lane.frames_reordered

    @property
    def lane_lag_max(self) -> float:
        return self.lane.lag_max

    @property
    def frame_errors(self) -> int:
        """Malformed frames: framing errors (counted by the transport) + Opus errors."""
        return int(getattr(self.transport, "frame_errors", 0)) + self.lane.opus_errors

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.session_id[:8]}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Hello, then serve messages until the device goes away."""
        fast: AudioFastPath | None = None
        try:
            if not await self._await_hello():
                return
            self._spawn(self.lane.run(), "lane")
            self._spawn(self._watchdog(), "watchdog")
            fast = self.transport if isinstance(self.transport, AudioFastPath) else None
            if fast is not None:
                fast.set_audio_handler(self.take_audio)
            async for message in self.transport:
                if isinstance(message, bytes):
                    while not self.take_audio(message):
                        await self.lane.wait_for_room()
                    if self._flood is not None:
                        await asyncio.shield(self._flood)
                        return
                else:
                    await self._on_text(message)
        except TransportClosed:
            pass
        finally:
            if fast is not None:
                fast.set_audio_handler(None)
            await self.close_tasks()

    async def close_tasks(self) -> None:
        """Cancel everything this session started and release its resources."""
        self.closed = True
        self.active_turn_id = None
        self.mcp.cancel_all()
        tasks: list[asyncio.Task[None]] = list(self._tasks)
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
        timeout = self.host.timeouts.hello
        try:
            async with asyncio.timeout(timeout):
                async for message in self.transport:
                    if isinstance(message, bytes):
                        continue
                    try:
                        data = msg.parse_message(message)
                    except msg.ProtocolError as exc:
                        if self._log_limit.allow("bad_frame:"):
                            log.info("session %s: bad frame before hello: %s", self.session_id, exc)
                        continue
                    if data["type"] == "hello":
                        if self.on_hello is not None and not self.on_hello():
                            await self.transport.close(1013, "server full")
                            return False
                        await self._on_hello(data)
                        return True
                    log.debug(
                        "session %s: %s before hello ignored", self.session_id, clip(data["type"])
                    )
                return False
        except TimeoutError:
            log.warning(
                "device %s sent no hello within %g s; closing", self.device.device_id, timeout
            )
            await self.transport.close(4001, f"no hello within {timeout:g} s")
            return False

    async def _on_hello(self, data: dict[str, object]) -> None:
        self.hello = data
        version = data.get("version")
        if isinstance(version, int) and version in (1, 2, 3) and not self.device.protocol_version:
            self.protocol_version = version
        self.protocol_version = self.protocol_version or 1
        self.transport.negotiated(self.protocol_version)
        raw_params = data.get("audio_params")
        params: dict[str, object] = raw_params if isinstance(raw_params, dict) else {}
        frame_ms = params.get("frame_duration")
        if isinstance(frame_ms, int) and 10 <= frame_ms <= 120:
            self.upstream_frame_ms = frame_ms
        if params and params.get("format", "opus") != "opus":
            log.warning(
                "session %s: device audio format %s unsupported; expecting opus",
                self.session_id,
                clip(params.get("format")),
            )
        out = self.host.output
        hello = msg.server_hello(self.session_id, out.sample_rate, out.frame_ms)
        hello["transport"] = self.transport.kind
        hello.update(self.transport.hello_fields())
        await self.send_json(hello)
        raw_features = data.get("features")
        features: dict[str, object] = raw_features if isinstance(raw_features, dict) else {}
        if self._prepared is None:
            store = self.host.store
            if store is not None:
                store.session_started(
                    self.session_id, self.device.device_id, transport=self.transport.kind
                )
            self._prepared = self._spawn(self._prepare(), "prepare")
        if features.get("mcp"):
            self._spawn(self._init_mcp(), "mcp-init")
        log.info(
            "session %s: hello from %s (protocol v%d, mcp=%s)",
            self.session_id,
            self.device.device_id,
            self.protocol_version,
            bool(features.get("mcp")),
        )

    async def _prepare(self) -> None:
        """Read the device's profile mapping and let the memory provider recall it
        (both bounded by ``store.read_timeout``; on failure the session goes on with
        the defaults and no memory)."""
        store, providers = self.host.store, self.host.providers
        if store is None:
            return
        self.stored_profile = await store.device_profile(self.device.device_id)
        if providers.memory is not None:
            memory = StoreDeviceMemory(
                store,
                providers.llm,
                self.device.device_id,
                self.session_id,
                self.host.timeouts.provider,
            )
            remembered = await recall(
                providers.memory, memory, self.host.executor, within=store.settings.read_timeout * 3
            )
            self.memory_notes = remembered.notes.strip()
            if remembered.history:
                self.memory.seed(list(remembered.history))

    async def ready(self) -> None:
        """Wait (bounded) for :meth:`_prepare`: a turn starts with the device's profile
        and memory when they can be had, and without them when they cannot."""
        task = self._prepared
        if task is None or task.done():
            return
        limit = self.host.store.settings.read_timeout * 4 if self.host.store else 1.0
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), limit)

    def current_profile(self) -> Profile:
        """This device's profile as the current config defines it (a reload or a new
        mapping applies from the next turn)."""
        self.profile = self.host.profiles.current.resolve(
            self.device.device_id, self.stored_profile
        )
        return self.profile

    def set_stored_profile(self, name: str | None) -> None:
        """The device was mapped to ``name`` (None: the default) while connected."""
        self.stored_profile = name

    # ------------------------------------------------------------------ sending
    async def send_json(self, message: dict[str, object]) -> None:
        if self.closed:
            return
        await self.transport.send_json(msg.dumps(message))

    async def send_audio(self, turn_id: int, packet: bytes) -> None:
        """Send one Opus packet of turn ``turn_id`` — unless that turn is no longer current."""
        if self.closed or turn_id != self.active_turn_id:
            self.stale_dropped += 1
            return
        await self.transport.send_audio(packet, int(time.monotonic() * 1000) & 0xFFFFFFFF)
        self.host.metrics.frame_out()

    async def send_audio_many(self, turn_id: int, packets: list[bytes]) -> None:
        """:meth:`send_audio` for several packets of one turn, in one transport write."""
        if self.closed or turn_id != self.active_turn_id:
            self.stale_dropped += len(packets)
            return
        ts = int(time.monotonic() * 1000) & 0xFFFFFFFF
        await self.transport.send_audio_many(packets, ts)
        self.host.metrics.frame_out(len(packets))

    async def _send_mcp(self, payload: dict[str, object]) -> None:
        await self.send_json(msg.mcp(self.session_id, payload))

    # ------------------------------------------------------------------ receiving
    async def _on_text(self, text: str) -> None:
        try:
            data = msg.parse_message(text)
        except msg.ProtocolError as exc:
            self.host.metrics.frame_error("json")
            if self._log_limit.allow("bad_frame:"):
                log.info("session %s: ignored text frame: %s", self.session_id, exc)
            return
        kind = data["type"]
        if kind == "listen":
            await self._on_listen(data)
        elif kind == "abort":
            log.info("session %s: abort (%s)", self.session_id, clip(data.get("reason", "button")))
            await self.abort()
        elif kind == "mcp":
            self.mcp.handle(data.get("payload"))
        elif kind == "hello":
            await self._on_hello(data)
        elif kind == "iot":
            log.debug("session %s: legacy iot message ignored", self.session_id)
        else:
            log.debug("session %s: unknown message type %s ignored", self.session_id, clip(kind))

    async def _on_listen(self, data: dict[str, object]) -> None:
        state = data.get("state")
        if state == "start":
            raw_mode = data.get("mode", "auto")
            mode = next((m for m in _MODES if m == raw_mode), None)
            if mode is None:
                log.info(
                    "session %s: unknown listen mode %s, using auto",
                    self.session_id,
                    clip(raw_mode),
                )
                mode = "auto"
            self.listen_mode = mode
            await self.lane.put_control(ControlItem("start", mode))
        elif state == "stop":
            await self.lane.put_control(ControlItem("stop"))
        elif state == "detect":
            text = str(data.get("text", "")).strip()
            self.last_voice = time.monotonic()
            wake = self.host.profiles.current.wake_words.match(text)
            if wake is not None:
                # The greeting is in the wake word's language (你好小智 → Chinese, in the
                # Chinese voice), but the session keeps its language: the stock firmware
                # sends 你好小智 whatever its owner speaks.
                await self.ready()
                profile = self.current_profile()
                language = profile.greeting_language(wake[0])
                greeting = profile.greeting_for(language)
                if greeting:
                    await self.start_turn(
                        self._turn(speak=greeting, kind="greeting", language=language)
                    )
            elif text:
                await self.start_turn(self._turn(text=text, kind="text"))
        else:
            log.debug("session %s: listen state %s ignored", self.session_id, clip(state))

    # ------------------------------------------------------------------ LaneSink
    async def on_control(self, item: ControlItem) -> None:
        if item.kind == "start":
            self.segmenter.reset()
            self.manual_buffer = []
            await self._close_asr_stream()
            self.listening = True
            if item.mode == "manual" and self._streaming_asr():
                await self._open_asr_stream([])
        elif self.listen_mode == "manual" or self.manual_buffer:
            audio = (
                np.concatenate(self.manual_buffer) if self.manual_buffer else np.zeros(0, np.int16)
            )
            self.manual_buffer = []
            self.listening = False
            await self._end_utterance(audio)
        else:
            # auto/realtime: a stop ends what the segmenter holds, if anything
            audio_or_none = self.segmenter.take()
            self.listening = False
            if audio_or_none is not None and len(audio_or_none):
                await self._end_utterance(audio_or_none)

    async def on_window(self, window: np.ndarray, prob: float) -> None:
        if not self.listening:
            return
        if self.listen_mode == "manual":
            self.manual_buffer.append(window)
            if self.asr_stream is not None:
                await self._push_asr(window)
            if prob >= self.host.segmentation.threshold:
                self.last_voice = time.monotonic()
            return
        events = self.segmenter.feed(window, prob)
        if self.asr_stream is not None and self.segmenter.active and not events:
            await self._push_asr(window)
        for event in events:
            await self._on_segment(event)

    def takes_silence_now(self) -> bool:
        """(:class:`~xiaozhi_core.session.lane.SilenceSink`) Whether windows of silence
        need nothing awaited now: not listening; manual mode without a streaming ASR;
        otherwise while no utterance is under way (silence then only fills the
        segmenter's pre-roll)."""
        if not self.listening:
            return True
        if self.listen_mode == "manual":
            return self.asr_stream is None and self.host.segmentation.threshold > 0.0
        return not self.segmenter.active and self.segmenter.threshold > 0.0

    def take_silence(self, windows: list[np.ndarray]) -> None:
        """``on_window(w, 0.0)`` for each window, when :meth:`takes_silence_now`."""
        if not self.listening:
            return
        if self.listen_mode == "manual":
            self.manual_buffer.extend(windows)
            return
        feed = self.segmenter.feed
        for window in windows:
            feed(window, 0.0)  # no utterance under way, below the threshold: no events

    async def on_lane_error(self, message: str) -> None:
        await self._alert_once(message)

    async def _on_segment(self, event: Segment) -> None:
        if event.kind == "start":
            self.last_voice = time.monotonic()
            if (
                self.listen_mode == "realtime"
                and self.turn_task is not None
                and not self.turn_task.done()
            ):
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
        min_samples = 16 * self.host.segmentation.min_speech_ms
        stream, self.asr_stream = self.asr_stream, None
        if len(audio) < min_samples:
            log.info(
                "session %s: utterance of %d ms too short; ignored",
                self.session_id,
                len(audio) // 16,
            )
            if stream is not None:
                await _close_stream(stream)
            self.turn = None
            self._resume_listening()
            if self.listen_mode == "manual":
                await self.send_json(msg.tts(self.session_id, "stop"))
            return
        await self.start_turn(self._turn(audio=audio, end_of_speech=eos), asr_stream=stream)

    # ------------------------------------------------------------------ streaming ASR
    def _streaming_asr(self) -> bool:
        return (
            ASRCapabilities.of(self.host.providers.asr.spec).streaming
            and not self.host.executor.is_process_pool
        )

    async def _open_asr_stream(self, initial: list[np.ndarray]) -> None:
        await self._close_asr_stream()
        try:
            asr, language = self.host.providers.asr, self.current_profile().asr_language
            stream = await (
                asr.open_stream(language=language, on_partial=self._on_partial)
                if language
                else asr.open_stream(on_partial=self._on_partial)
            )
            self.asr_stream = stream
            for chunk in initial:
                await stream.push(chunk)
        except Exception as exc:
            log.warning(
                "session %s: streaming ASR unavailable, using whole-utterance recognition: %s",
                self.session_id,
                exc,
            )
            await self._close_asr_stream()

    async def _push_asr(self, window: np.ndarray) -> None:
        stream = self.asr_stream
        if stream is None:
            return
        try:
            await stream.push(window)
        except Exception as exc:
            log.warning("session %s: streaming ASR push failed: %s", self.session_id, exc)
            await self._close_asr_stream()

    def _on_partial(self, result: ASRResult) -> None:
        log.debug("session %s: partial: %s", self.session_id, result.text)

    async def _close_asr_stream(self) -> None:
        stream, self.asr_stream = self.asr_stream, None
        if stream is not None:
            await _close_stream(stream)

    # ------------------------------------------------------------------ turns
    def _turn(
        self,
        *,
        audio: np.ndarray | None = None,
        text: str | None = None,
        speak: str | None = None,
        kind: str = "voice",
        end_of_speech: float | None = None,
        language: str | None = None,
    ) -> Turn:
        self.turn_seq += 1
        return Turn(
            self.host,
            self,
            self.turn_seq,
            audio=audio,
            text=text,
            speak=speak,
            kind=kind,
            end_of_speech=end_of_speech,
            language=language,
        )

    async def start_turn(self, turn: Turn, asr_stream: AsyncASRStream | None = None) -> None:
        if self.turn_task is not None and not self.turn_task.done():
            await self.abort(answer=False)
        if asr_stream is not None:
            turn.asr_stream = asr_stream
        self.turn = turn
        self.active_turn_id = turn.id
        self.turn_task = asyncio.get_running_loop().create_task(
            turn.run(), name=f"{self.session_id[:8]}:turn{turn.id}"
        )

    async def abort(self, answer: bool = True) -> None:
        """Cancel the current turn (LLM, TTS, queued frames) and answer ``tts stop``."""
        task, turn = self.turn_task, self.turn
        self.active_turn_id = None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self.host.metrics.turn_outcome("aborted")
        self.turn_task = None
        if answer or (turn is not None and turn.tts_started and not turn.tts_stopped):
            if turn is not None:
                turn.tts_stopped = True
            await self.send_json(msg.tts(self.session_id, "stop"))

    # ------------------------------------------------------------------ TurnHooks
    def speaker_identified(self, name: str | None) -> None:
        self.speaker = name

    def turn_finished(self, turn: Turn) -> None:
        record: dict[str, object] = {
            "turn": turn.id,
            "kind": turn.latency.kind,
            **turn.latency.as_ms(),
            "error": turn.latency.error,
        }
        self.latencies.append(record)
        del self.latencies[:-20]
        if turn.text is not None and turn.language is not None:
            self.last_language = turn.language
        self.last_voice = time.monotonic()
        if turn.latency.error is None:
            self.host.metrics.turn_outcome("ok")
            self.host.metrics.observe_turn(turn.latency)
        elif turn.latency.error == "disconnected":
            self.host.metrics.turn_outcome("disconnected")
        self._record_turn(turn, record)
        if turn.id == self.active_turn_id and self.listen_mode != "manual":
            self._resume_listening()

    def _record_turn(self, turn: Turn, record: dict[str, object]) -> None:
        """The turn's one log line and its row in the store (a plain queue append)."""
        error = turn.latency.error
        outcome = turn.outcome
        latency = {k: v for k, v in record.items() if k.endswith("_ms") and v is not None}
        reply = turn.reply_text
        store = self.host.store
        transcripts = store.settings.transcripts if store is not None else True
        fields: dict[str, object] = {
            "device": plain(self.device.device_id),
            "session": self.session_id,
            "turn": turn.id,
            "kind": turn.latency.kind,
            "profile": turn.profile_name,
            "outcome": outcome,
            "latency": latency,
            "speaker": plain(self.speaker) if self.speaker else None,
            "error": cut(error, 300),
        }
        if transcripts:  # device-supplied text: bounded in the log (whole in the store)
            fields.update(text=cut(turn.text, 500), reply=cut(reply, 500))
        if log.isEnabledFor(logging.INFO):  # formatting costs more than the rest of this
            log.info("turn %s", format_turn(fields), extra={"turn": fields})
        if store is not None and outcome != "nothing":
            store.turn_recorded(
                session_id=self.session_id,
                device_id=self.device.device_id,
                turn=turn.id,
                kind=turn.latency.kind,
                outcome=outcome,
                text=turn.text,
                reply=reply,
                speaker=self.speaker,
                latency=latency,
                error=error,
                at=turn.started_at,
            )

    def turn_failed(self, error: BaseException) -> None:
        self.host.metrics.turn_outcome("failed")

    def _resume_listening(self) -> None:
        """Listen again after a turn (or a non-turn) without waiting for ``listen start``
        where the device will not send one: realtime mode, or auto mode when nothing was
        spoken (the device never left Listening)."""
        if self.listen_mode == "realtime" or (
            self.listen_mode == "auto" and (self.turn is None or not self.turn.tts_started)
        ):
            self.listening = True

    def take_audio(self, packet: bytes) -> bool:
        """One Opus packet from the device, taken without waiting: into the lane, or
        dropped (over the audio rate; the 0-byte "stopped" marker of browsers). False,
        having changed nothing, when the lane is full. The receive loop calls it, and
        the transport's fast path (:class:`AudioFastPath`) straight from its socket."""
        if not packet or self._flood is not None:
            return True  # (a flooding device's audio is dropped until its close completes)
        lane = self.lane
        if lane.queue.full():
            return False
        if self.audio_rate.allow(self.upstream_frame_ms):
            if not lane.process_at_once(packet):
                lane.put_audio_nowait(packet)  # not full: it takes it
        else:
            self._audio_too_fast()
        return True

    def _audio_too_fast(self) -> None:
        """A frame over the audio rate: count it, tell the device (at most every 10 s),
        close a flood."""
        self.host.metrics.audio_dropped()
        if self.audio_rate.flooding:
            log.warning(
                "session %s: device %s sends audio far faster than real time "
                "(%d frames dropped); closing",
                self.session_id,
                clip(self.device.device_id),
                self.audio_rate.dropped,
            )
            # not one of the session's tasks: closing the session must not cancel it
            self._flood = asyncio.ensure_future(
                self.transport.close(1008, "audio faster than real time")
            )
            return
        now = time.monotonic()
        if now - self._last_alert > 10:
            self._last_alert = now
            log.warning(
                "session %s: audio faster than real time; dropping the excess", self.session_id
            )
            self._spawn(
                self._alert("Audio is arriving faster than real time; extra audio is dropped."),
                "alert",
            )

    async def _alert_once(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_alert > 10:
            self._last_alert = now
            await self._alert(message)

    async def _alert(self, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.send_json(msg.alert(self.session_id, message))

    # ------------------------------------------------------------------ MCP
    async def _init_mcp(self) -> None:
        grant = self.host.vision_grant
        vision = (
            grant(self.session_id, self.device.device_id)
            if grant is not None
            else {"url": "", "token": ""}
        )
        try:
            await self.mcp.initialize(vision)
            tools = await self.mcp.list_tools()
            self.tools.set_device_tools(tools, self.mcp.call_tool)
            log.info("session %s: device offers %d MCP tools", self.session_id, len(tools))
        except MCPError as exc:
            log.warning(
                "session %s: device %s: MCP setup failed: %s",
                self.session_id,
                clip(self.device.device_id),
                exc,
            )
        except TransportClosed:
            log.debug("session %s: connection closed during MCP setup", self.session_id)

    # ------------------------------------------------------------------ idle
    async def _watchdog(self) -> None:
        idle = self.host.timeouts.idle
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            busy = self.turn_task is not None and not self.turn_task.done()
            if busy or time.monotonic() - self.last_voice < idle:
                continue
            log.info("session %s: no voice for %g s; saying goodbye", self.session_id, idle)
            profile = self.current_profile()
            language = profile.turn_language(self.last_language)
            goodbye = profile.goodbye_for(language)
            self.close_reason = "idle timeout"
            if goodbye:
                await self.start_turn(self._turn(speak=goodbye, kind="goodbye", language=language))
                if self.turn_task is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.turn_task)
            await self.transport.close(1000, "idle timeout")
            return


def format_turn(fields: dict[str, object]) -> str:
    """A turn's fields as one ``key=value`` log line, device-supplied text clipped.

    >>> format_turn({"device": "aa:bb\\nX", "outcome": "ok", "latency": {"total_ms": 5.0},
    ...              "error": None})
    "device=aa:bb?X outcome=ok latency={'total_ms': 5.0}"
    >>> format_turn({"text": "x" * 300})[-14:]
    "'…(+220 chars)"
    """
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, str) and key in ("text", "reply", "error"):
            value = clip(value)
        elif isinstance(value, str):
            value = plain(value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


async def _close_stream(stream: AsyncASRStream) -> None:
    with contextlib.suppress(Exception):
        await stream.close()
