"""One conversational turn: ASR → ``stt`` → LLM (streamed, with tools) → sentences →
TTS (streamed) → Opus → paced frames → ``tts stop``.

Four tasks run in one task group so that speech starts with the first sentence:

* **think**: streams the LLM, runs tool calls, cuts sentences as text arrives;
* **speak**: synthesises each sentence;
* **encode**: resamples its audio to the downstream rate and encodes Opus in the worker
  pool (what the TTS delivered while a job ran goes into the next job together);
* **send**: paces frames to the device — a small pre-buffer, then one frame per frame
  duration — and sends ``tts stop`` once the device has played the last one.

Cancelling the turn (abort, barge-in, disconnect) cancels all four at once; every
audio frame carries the turn's id and the session drops frames of a turn that is no
longer current, so nothing stale is ever sent after ``tts stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, cast

import numpy as np

from ..audio import Resampler
from ..errors import ProviderError, ProviderTimeout
from ..language import normalize_language
from ..logutil import clip
from ..protocol import messages as msg
from ..protocol.opus import OpusEncoder
from ..providers import AsyncASRStream, LLMChunk
from ..types import ASRResult, Message, ToolCall, ToolSpec
from .host import SessionHost
from .latency import TurnLatency
from .memory import Memory
from .profiles import Profile
from .text import SentenceCutter, clean_for_speech, detect_emotion
from .tools import ToolBox
from .transport import TransportClosed

__all__ = ["SEND_BURST", "Frame", "SubtitleEvent", "Turn", "TurnHooks"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _disconnected(exc: BaseException) -> bool:
    """Whether ``exc`` (or any error of a task group's) is the connection closing."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(TransportClosed) is not None
    return isinstance(exc, TransportClosed)


class _ChatWithOptions(Protocol):
    """``chat`` of an LLM that declares per-request options (``ProviderSpec.request_options``)."""

    def __call__(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        options: object = None,
    ) -> AsyncIterator[LLMChunk]: ...


class _SynthesizeWithOptions(Protocol):
    """``synthesize`` of a TTS that declares per-request options."""

    def __call__(
        self, text: str, *, voice: str | None = None, options: object = None
    ) -> AsyncIterator[bytes]: ...


class TurnHooks(Protocol):
    """What a turn needs from its session (and nothing more)."""

    session_id: str
    speaker: str | None
    memory: Memory
    tools: ToolBox
    llm_tools: bool
    #: What the memory provider recalled of the device (added to the system prompt).
    memory_notes: str

    @property
    def listen_mode(self) -> str: ...

    async def send_json(self, message: dict[str, object]) -> None: ...

    async def send_audio(self, turn_id: int, packet: bytes) -> None: ...

    async def send_audio_many(self, turn_id: int, packets: list[bytes]) -> None: ...

    def speaker_identified(self, name: str | None) -> None: ...

    async def ready(self) -> None:
        """Wait (bounded) until the device's profile and memory are known."""
        ...

    def current_profile(self) -> Profile:
        """The device's profile under the current config."""
        ...

    def turn_finished(self, turn: Turn) -> None: ...

    def turn_failed(self, error: BaseException) -> None: ...


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded Opus packet on its way to the device."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class SubtitleEvent:
    """``tts sentence_start`` / ``sentence_end`` for one sentence, in line with its audio."""

    state: Literal["sentence_start", "sentence_end"]
    text: str


#: What the speak task hands the send task (None ends the turn's audio).
SendItem = Frame | SubtitleEvent | None


_END = None

#: Frames sent per wake-up once the device holds its pre-buffer (see ``Turn._send``).
#: 4 (240 ms at 60 ms frames): a quarter of the timer wake-ups and socket writes of one
#: frame per wake-up; the device then holds between the pre-buffer and the pre-buffer
#: plus 240 ms (the firmware queues 2.4 s), which also rides out more Wi-Fi jitter.
SEND_BURST = 4


#: What the speak task hands its encoder: a TTS chunk of a sentence (None: the
#: sentence's end), a subtitle event in line with the audio, or None (no more).
_EncodeItem = tuple[Resampler, bytes | None] | SubtitleEvent | None

#: TTS chunks queued for encoding before the speak task waits (bounds the audio read
#: ahead of the send pacing, with the frames queue).
_ENCODE_AHEAD = 16
#: TTS audio per pool job at most (seconds; a job takes at least one chunk): a job stays
#: short, so the audio hub's decode + VAD batches never wait long behind one in the
#: shared pool (0.8 s: 13 frames, ~7 ms of encoding speech), yet a sentence that is
#: ready at once takes few round trips.
_ENCODE_SECONDS = 0.8


def _encode(resampler: Resampler, encoder: OpusEncoder, chunk: bytes | None) -> list[bytes]:
    """Resample one TTS chunk to the downstream rate and Opus-encode it (``None``
    flushes the tail of the sentence, padded to a whole frame)."""
    if chunk is None:
        return encoder.encode(resampler.flush().tobytes()) + encoder.flush()
    return encoder.encode(resampler.process(np.frombuffer(chunk, np.int16)).tobytes())


def _pcm_bytes(item: _EncodeItem) -> int:
    """What an encode item weighs in a job: its PCM bytes (a sentence's end: 1)."""
    if isinstance(item, tuple):
        return len(item[1]) if item[1] else 1
    return 0


def _encode_all(
    encoder: OpusEncoder, chunks: Sequence[tuple[Resampler, bytes | None]]
) -> list[list[bytes]]:
    """Pool job: :func:`_encode` each chunk in order; the packets of each."""
    return [_encode(resampler, encoder, chunk) for resampler, chunk in chunks]


class Turn:
    """A single turn of one session. Create, then ``await turn.run()`` in a task."""

    def __init__(
        self,
        host: SessionHost,
        session: TurnHooks,
        turn_id: int,
        *,
        audio: np.ndarray | None = None,
        text: str | None = None,
        speak: str | None = None,
        asr_result: ASRResult | None = None,
        kind: str = "voice",
        end_of_speech: float | None = None,
        language: str | None = None,
    ) -> None:
        self.host = host
        self.session = session
        self.id = turn_id
        self.audio = audio
        self.text = text
        self.speak_text = speak
        self.asr_result = asr_result
        self.latency = TurnLatency(turn_id, kind, end_of_speech or time.monotonic())
        #: Wall-clock start (epoch seconds), for the store.
        self.started_at = time.time()
        #: The profile this turn runs with (resolved when it starts).
        self.profile: Profile | None = None
        #: The language the turn answers in (a code; None: none known). Given for a
        #: greeting (the wake word's language), else the profile's, or with ``auto`` the
        #: one the ASR detected (typed text: its script).
        self.language = language
        #: Nothing was recognised (no turn to record).
        self.empty = False
        self.reply_parts: list[str] = []
        self.tts_started = False
        self.tts_stopped = False
        self.frames_sent = 0
        self.history: list[Message] = []
        #: A streaming ASR session that already heard the utterance (finish() gives text).
        self.asr_stream: AsyncASRStream | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def profile_name(self) -> str | None:
        return self.profile.name if self.profile is not None else None

    @property
    def reply_text(self) -> str | None:
        """What the turn answered (the LLM's text, or the spoken greeting/goodbye)."""
        if self.speak_text is not None:
            return self.speak_text
        reply = "".join(self.reply_parts).strip()
        return reply or None

    @property
    def outcome(self) -> str:
        """``ok``, ``failed``, ``aborted`` or ``nothing`` (nothing recognised)."""
        if self.empty:
            return "nothing"
        error = self.latency.error
        if error is None:
            return "ok"
        return "aborted" if error == "cancelled" else "failed"

    @property
    def timeout(self) -> float:
        return self.host.timeouts.provider

    async def _within(self, what: str, aw: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await aw
        except TimeoutError:
            raise ProviderTimeout(f"{what} did not answer within {self.timeout:g} s") from None

    async def _items(self, what: str, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate a provider stream with a timeout on every item."""
        it = stream.__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        item = await it.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ProviderTimeout(
                        f"{what} produced nothing for {self.timeout:g} s"
                    ) from None
                yield item
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    # ------------------------------------------------------------------ the turn
    async def run(self) -> None:
        s = self.session
        try:
            await s.ready()
            self.profile = profile = s.current_profile()
            if self.language is None:
                self.language = profile.turn_language(None, self.text)
            if self.speak_text is None and self.text is None:
                text = await self._recognise()
                if not text:
                    self.empty = True
                    log.info("session %s turn %d: nothing recognised", s.session_id, self.id)
                    if s.listen_mode == "manual":
                        await s.send_json(msg.tts(s.session_id, "stop"))
                    return
                self.text = text
                detected = self.asr_result.language if self.asr_result is not None else None
                self.language = profile.turn_language(normalize_language(detected), text)
            if self.text is not None:
                await s.send_json(msg.stt(s.session_id, self.text))
            await self._pipeline()
        except asyncio.CancelledError:
            self.latency.error = "cancelled"
            raise
        except Exception as exc:
            if _disconnected(exc):
                # the device went away mid-reply: like a cancellation, not a failure
                self.latency.error = "disconnected"
                log.debug(
                    "session %s turn %d: connection closed during the reply", s.session_id, self.id
                )
            else:
                await self._fail(exc)
        finally:
            if self.asr_stream is not None:
                stream, self.asr_stream = self.asr_stream, None
                with contextlib.suppress(Exception):
                    await stream.close()
            self.latency.finished = time.monotonic()
            s.turn_finished(self)

    async def _recognise(self) -> str:
        """ASR (streamed session if one heard the utterance, else whole-utterance), with
        speaker identification running beside it when a voiceprint provider is set."""
        s, providers = self.session, self.host.providers
        t0 = time.monotonic()
        vp_task: asyncio.Task[None] | None = None
        if providers.voiceprint is not None and self.audio is not None and len(self.audio) >= 16000:
            vp_task = asyncio.ensure_future(self._identify(self.audio))
        try:
            if self.asr_result is None and self.asr_stream is not None:
                stream, self.asr_stream = self.asr_stream, None
                try:
                    self.asr_result = await self._within(
                        f"ASR provider '{providers.asr.name}' (stream)", stream.finish()
                    )
                except Exception as exc:
                    log.warning(
                        "session %s: streaming ASR failed (%s); recognising the "
                        "whole utterance instead",
                        s.session_id,
                        exc,
                    )
                finally:
                    with contextlib.suppress(Exception):
                        await stream.close()
            if self.asr_result is None:
                assert self.audio is not None
                language = self.profile.asr_language if self.profile is not None else None
                call = (
                    providers.asr.transcribe(self.audio, language=language)
                    if language
                    else providers.asr.transcribe(self.audio)
                )
                self.asr_result = await self._within(f"ASR provider '{providers.asr.name}'", call)
        finally:
            if vp_task is not None:
                if self.asr_result is None:
                    vp_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await vp_task
        self.latency.asr_final = time.monotonic()
        self.latency.provider_seconds["asr"] = self.latency.asr_final - t0
        assert self.asr_result is not None
        return self.asr_result.text.strip()

    async def _identify(self, audio: np.ndarray) -> None:
        s, voiceprint = self.session, self.host.providers.voiceprint
        if voiceprint is None:
            return
        try:
            match = await self._within("voiceprint provider", voiceprint.identify(audio))
            s.speaker_identified(match.name)
            log.info(
                "session %s: speaker %s (score %.2f)",
                s.session_id,
                match.name or "unknown",
                match.score,
            )
        except Exception as exc:  # identification is optional: never fail the turn
            log.warning("session %s: voiceprint failed: %s", s.session_id, exc)

    async def _pipeline(self) -> None:
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        work: asyncio.Queue[_EncodeItem] = asyncio.Queue(maxsize=_ENCODE_AHEAD)
        frames: asyncio.Queue[SendItem] = asyncio.Queue(
            maxsize=max(8, 3000 // self.host.output.frame_ms)
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._think(sentences), name=f"turn{self.id}-think")
            tg.create_task(self._speak(sentences, work), name=f"turn{self.id}-speak")
            tg.create_task(self._encode(work, frames), name=f"turn{self.id}-encode")
            tg.create_task(self._send(frames), name=f"turn{self.id}-send")
        if self.text is not None:
            self.session.memory.add_turn(
                [
                    Message("user", self.text),
                    *self.history,
                    Message("assistant", "".join(self.reply_parts).strip()),
                ]
            )

    async def _think(self, sentences: asyncio.Queue[str | None]) -> None:
        s, llm = self.session, self.host.providers.llm
        profile = self.profile or s.current_profile()
        cutter = SentenceCutter()
        emotion_sent = False
        spoken_chars = 0
        said: list[str] = []
        budget = profile.reply_chars

        async def emit(parts: list[str]) -> None:
            nonlocal emotion_sent, spoken_chars
            for sentence in parts:
                spoken_chars += len(sentence)
                said.append(sentence)
                if not emotion_sent:
                    emotion_sent = True
                    await s.send_json(msg.llm_emotion(s.session_id, detect_emotion(sentence)))
                spoken = clean_for_speech(sentence)
                if spoken:
                    await sentences.put(spoken)

        if self.speak_text is not None:
            self.latency.llm_first_token = time.monotonic()
            await emit([*cutter.feed(self.speak_text), *cutter.flush()])
            await sentences.put(_END)
            return
        assert self.text is not None
        context = "\n".join(
            part
            for part in (
                f"What you remember about this user from earlier conversations: {s.memory_notes}"
                if s.memory_notes
                else "",
                f"The user speaking is {s.speaker}." if s.speaker else "",
            )
            if part
        )
        prompt = profile.prompt_for(self.language)
        messages = [*s.memory.messages(context, prompt), Message("user", self.text)]
        tools = s.tools.specs(profile.tools) if s.llm_tools else []
        max_rounds = self.host.session.max_tool_rounds
        llm_options = profile.llm_options
        t0 = time.monotonic()
        cut = False
        for round_no in range(max_rounds + 1):
            calls: list[ToolCall] = []
            round_text: list[str] = []
            offered = tools if tools and round_no < max_rounds else None
            stream = (
                llm.chat(messages, tools=offered)
                if llm_options is None
                else cast(_ChatWithOptions, llm.chat)(messages, tools=offered, options=llm_options)
            )
            async for item in self._items(f"LLM provider '{llm.name}'", stream):
                if self.latency.llm_first_token is None and item:
                    self.latency.llm_first_token = time.monotonic()
                    self.latency.provider_seconds["llm_first_token"] = (
                        self.latency.llm_first_token - t0
                    )
                if isinstance(item, ToolCall):
                    calls.append(item)
                elif item:
                    round_text.append(item)
                    self.reply_parts.append(item)
                    await emit(cutter.feed(item))
                    if budget and spoken_chars >= budget:
                        cut = True  # the reply-length budget: stop at this sentence end
                        break
            if cut or not calls:
                break
            assistant = Message("assistant", "".join(round_text), tool_calls=calls)
            messages.append(assistant)
            self.history.append(assistant)
            for call in calls:
                log.info(
                    "session %s turn %d: tool call %s(%s)",
                    s.session_id,
                    self.id,
                    clip(call.name),
                    clip(call.arguments),
                )
                result = await s.tools.call(call, profile.tools)
                tool_msg = Message("tool", result, tool_call_id=call.id)
                messages.append(tool_msg)
                self.history.append(tool_msg)
        if cut:
            self.reply_parts = ["".join(said)]
            log.info(
                "session %s turn %d: reply cut at the profile's %d-character budget",
                s.session_id,
                self.id,
                budget,
            )
        else:
            await emit(cutter.flush())
        await sentences.put(_END)

    async def _speak(
        self, sentences: asyncio.Queue[str | None], work: asyncio.Queue[_EncodeItem]
    ) -> None:
        """Synthesise each sentence; its audio and subtitle events go to ``work``, in
        order, for :meth:`_encode`."""
        host = self.host
        tts, out = host.providers.tts, host.output
        profile = self.profile
        voice = profile.voice_for(self.language) if profile is not None else host.session.tts_voice
        tts_options = profile.tts_options if profile is not None else None
        while (sentence := await sentences.get()) is not None:
            await work.put(SubtitleEvent("sentence_start", sentence))
            resampler = Resampler(out.tts_sample_rate, out.sample_rate)
            t0 = time.monotonic()
            if tts_options is not None:  # only providers that declare request_options
                stream = cast(_SynthesizeWithOptions, tts.synthesize)(
                    sentence, voice=voice or None, options=tts_options
                )
            else:
                stream = (
                    tts.synthesize(sentence, voice=voice) if voice else tts.synthesize(sentence)
                )
            async for chunk in self._items(f"TTS provider '{tts.name}'", stream):
                if not chunk:
                    continue
                first = self.latency.tts_first_audio is None
                if first:
                    self.latency.tts_first_audio = time.monotonic()
                    self.latency.provider_seconds["tts_first_audio"] = (
                        self.latency.tts_first_audio - t0
                    )
                await work.put((resampler, chunk))
                if first:  # let the encoder start on it before the TTS's next chunk
                    await asyncio.sleep(0)
            await work.put((resampler, None))
            await work.put(SubtitleEvent("sentence_end", sentence))
        await work.put(_END)

    async def _encode(
        self, work: asyncio.Queue[_EncodeItem], frames: asyncio.Queue[SendItem]
    ) -> None:
        """Resample + Opus-encode the TTS audio in the pool, in order, with the subtitle
        events in line. What was queued while a job ran goes into the next job (up to
        ``_ENCODE_SECONDS`` of audio): one pool round trip per chunk while the TTS is slower
        than real time (no added latency), a few per sentence when it is faster. The
        turn's first job holds only its first chunk."""
        executor, encoders = self.host.executor, self.host.encoders
        encoder = encoders.take()
        most = int(self.host.output.tts_sample_rate * 2 * _ENCODE_SECONDS)  # bytes of PCM
        limit = 1  # the first job: just the first chunk, so the first frame goes out at once
        done = False
        while not done:
            items = [await work.get()]
            size = _pcm_bytes(items[0])
            while size < limit and not work.empty():
                items.append(item := work.get_nowait())
                size += _pcm_bytes(item)
            if size:
                limit = most
            audio = [item for item in items if isinstance(item, tuple)]
            packets = iter(await executor.run(_encode_all, encoder, audio) if audio else ())
            for item in items:
                if item is None:
                    done = True
                    break
                if isinstance(item, SubtitleEvent):
                    await frames.put(item)
                    continue
                for packet in next(packets):
                    await frames.put(Frame(packet))
        # no pool job holds this encoder any more: a later turn may reuse it
        encoders.give(encoder)
        await frames.put(_END)

    async def _send(self, frames: asyncio.Queue[SendItem]) -> None:
        """Pace frames to the device: send freely until it holds ``lead_max`` of audio,
        then wake once per ``SEND_BURST`` frames (when the device is down to
        ``lead_max``) and send that many at once: never less buffered at the device than
        with one frame per wake-up, and half the timer wake-ups per speaking device.
        Frames that go out at the same moment go in one transport write."""
        s, host = self.session, self.host
        cfg = host.session
        frame_s = host.output.frame_seconds
        lead_max = min(cfg.prebuffer_frames * frame_s, cfg.max_ahead_ms / 1000)
        lead_burst = lead_max + (SEND_BURST - 1) * frame_s
        played_until = 0.0
        loop = asyncio.get_running_loop()
        held: list[SendItem] = []  # an item taken while gathering frames, for next time
        while (item := held.pop() if held else await frames.get()) is not None:
            if not self.tts_started:
                self.tts_started = True
                await s.send_json(msg.tts(s.session_id, "start"))
            if isinstance(item, SubtitleEvent):
                await s.send_json(msg.tts(s.session_id, item.state, item.text))
                continue
            now = loop.time()
            if played_until < now:  # start, or the device ran dry: pre-buffer again
                played_until = now
            lead = played_until - now
            if lead > lead_burst:
                await asyncio.sleep(lead - lead_max)
                now = loop.time()
            packets = [item.packet]
            played_until += frame_s
            # the frames already queued that would go out now anyway: in the same write
            while not frames.empty() and played_until - now <= lead_burst:
                nxt = frames.get_nowait()
                if not isinstance(nxt, Frame):
                    held.append(nxt)
                    break
                packets.append(nxt.packet)
                played_until += frame_s
            await s.send_audio_many(self.id, packets)
            if self.latency.first_frame_sent is None:
                self.latency.first_frame_sent = time.monotonic()
            self.frames_sent += len(packets)
        if self.tts_started:
            # let the device play what it holds before leaving Speaking
            remaining = played_until - loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
            await self.stop_speaking()

    async def stop_speaking(self) -> None:
        if not self.tts_stopped:
            self.tts_stopped = True
            await self.session.send_json(msg.tts(self.session.session_id, "stop"))

    async def _fail(self, exc: BaseException) -> None:
        s = self.session
        profile = self.profile or self.host.profiles.current.default
        apology = profile.apology_for(self.language)
        errors = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
        first = errors[0]
        self.latency.error = f"{type(first).__name__}: {first}"
        if isinstance(first, ProviderError):
            log.error("session %s turn %d failed: %s", s.session_id, self.id, first)
        else:
            log.exception("session %s turn %d failed", s.session_id, self.id, exc_info=first)
        s.turn_failed(first)
        try:
            await s.send_json(msg.alert(s.session_id, apology))
            if not self.tts_started:
                await s.send_json(msg.tts(s.session_id, "start"))
                self.tts_started = True
            await s.send_json(msg.tts(s.session_id, "sentence_start", apology))
            await self._speak_apology()
        except Exception as exc2:  # the apology itself may fail (e.g. TTS is the culprit)
            log.warning("session %s: apology not spoken: %s", s.session_id, exc2)
        finally:
            with contextlib.suppress(Exception):
                await self.stop_speaking()

    async def _speak_apology(self) -> None:
        cached = self.host.apology_audio(self.language)
        if cached is None:
            return
        frame_s = self.host.output.frame_seconds
        prebuffer = self.host.session.prebuffer_frames
        for i, packet in enumerate(cached):
            if i >= prebuffer:
                await asyncio.sleep(frame_s)
            await self.session.send_audio(self.id, packet)
        await asyncio.sleep(frame_s * min(len(cached), prebuffer))
