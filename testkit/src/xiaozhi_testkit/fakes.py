"""Test doubles: fake providers with scripted timing, for plugin authors and the core's tests.

Every fake is a real provider: it has an options dataclass, can be selected in a config
as ``provider: fake`` (``cpu``) or ``fake_io`` (``io``), and goes through the executor
policy like any other. Timing is scripted in seconds (``delay``, ``first_token_delay``,
...) and failures are injected with ``fail`` (raise on every call) or ``fail_after``.

This module is itself a plugin (entry point ``fake`` of the ``xiaozhi-testkit``
distribution, which production installs do not pull); a test can also
``registry.register(xiaozhi_testkit.fakes)``. Import the fakes through
:mod:`xiaozhi_core.testing`, the stable public name.

Example:
    >>> llm = FakeLLM(reply="It is noon. Anything else?")
    >>> "".join(x for x in llm.chat([]) if isinstance(x, str))
    'It is noon. Anything else?'
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.hookspecs import hookimpl
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.types import ASRResult, Execution, Message, Role, SpeakerMatch, ToolCall, ToolSpec

__all__ = [
    "EnergyVAD",
    "FakeASR",
    "FakeAsyncASR",
    "FakeAsyncLLM",
    "FakeAsyncTTS",
    "FakeLLM",
    "FakeLLMRequest",
    "FakeTTS",
    "FakeTTSRequest",
    "FakeVision",
    "FakeVoiceprint",
    "fake_config",
    "fake_spec",
    "tone",
    "xiaozhi_providers",
]


def tone(
    seconds: float, sample_rate: int = 16000, freq: float = 440.0, amplitude: float = 0.3
) -> np.ndarray:
    """A sine tone as int16 (a stand-in for speech that an energy VAD detects).

    >>> tone(0.01).shape
    (160,)
    """
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * math.pi * freq * t) * amplitude * 32767).astype(np.int16)


def _maybe_fail(fail: str | None) -> None:
    if fail:
        raise ProviderError(fail)


# ------------------------------------------------------------------------- VAD
@dataclass
class EnergyVADOptions:
    """Options of the energy VAD (``vad: {provider: fake}``)."""

    #: RMS (of float audio in [-1, 1]) at which the probability reaches 1.0.
    full_scale_rms: float = 0.05
    delay: float = 0.0
    #: Keep what the provider saw (utterances, requests, texts, batch sizes) for tests
    #: to inspect; false for long runs (the fuzzer), where it would grow without bound.
    record: bool = True


class EnergyVAD:
    """Speech probability from window energy. Stateless, batched, deterministic."""

    sample_rate = 16000
    window = 512

    def __init__(self, options: EnergyVADOptions | None = None) -> None:
        self.options = options or EnergyVADOptions()
        self.calls = 0
        self.batch_sizes: list[int] = []

    def initial_state(self) -> Any:
        return None

    def speech_probs(
        self, windows: np.ndarray, states: Sequence[Any]
    ) -> tuple[np.ndarray, list[Any]]:
        if len(windows) != len(states):
            raise ValueError("one state per window is required")
        self.calls += 1
        if self.options.record:
            self.batch_sizes.append(len(windows))
        if self.options.delay:
            time.sleep(self.options.delay)
        rms = np.sqrt(np.mean(np.square(windows, dtype=np.float32), axis=1))
        probs = np.clip(rms / self.options.full_scale_rms, 0.0, 1.0).astype(np.float32)
        return probs, list(states)


# ------------------------------------------------------------------------- ASR
@dataclass
class FakeASROptions:
    """Options of the fake ASR: the text it recognises and its delay."""

    text: str = "hello"
    delay: float = 0.0
    fail: str | None = None
    language: str | None = "en"
    #: Keep what the provider saw (utterances, requests, texts, batch sizes) for tests
    #: to inspect; false for long runs (the fuzzer), where it would grow without bound.
    record: bool = True


class _FakeASRStream:
    def __init__(self, owner: FakeASR, on_partial: Callable[[ASRResult], None] | None) -> None:
        self.owner = owner
        self.on_partial = on_partial
        self.chunks: list[np.ndarray] = []
        self.samples = 0
        self.closed = False

    def push(self, pcm: np.ndarray) -> None:
        self.chunks.append(np.asarray(pcm, np.int16))
        self.samples += len(pcm)
        if self.on_partial is not None:
            words = self.owner.options.text.split()
            n = min(len(words), 1 + self.samples // 8000)
            self.on_partial(ASRResult(" ".join(words[:n]), final=False))

    def finish(self) -> ASRResult:
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return self.owner.transcribe(audio, _opened=True)

    def close(self) -> None:
        self.closed = True


class FakeASR:
    """Answers every utterance with ``text`` after ``delay`` seconds."""

    def __init__(self, options: FakeASROptions | None = None, **kw: Any) -> None:
        self.options = options or FakeASROptions(**kw)
        self.utterances: list[np.ndarray] = []
        #: The ``language`` of each request (a streamed one: given to open_stream).
        self.languages: list[str | None] = []

    def transcribe(
        self, pcm: np.ndarray, *, language: str | None = None, _opened: bool = False
    ) -> ASRResult:
        if self.options.record:
            self.utterances.append(pcm)
            if not _opened:
                self.languages.append(language)
        if self.options.delay:
            time.sleep(self.options.delay)
        _maybe_fail(self.options.fail)
        return ASRResult(self.options.text, language=self.options.language)

    def open_stream(
        self, *, language: str | None = None, on_partial: Callable[[ASRResult], None] | None = None
    ) -> _FakeASRStream:
        if self.options.record:
            self.languages.append(language)
        return _FakeASRStream(self, on_partial)


class FakeAsyncASR:
    """``io`` twin of :class:`FakeASR`."""

    def __init__(self, options: FakeASROptions | None = None, **kw: Any) -> None:
        self.options = options or FakeASROptions(**kw)
        self.utterances: list[np.ndarray] = []
        #: The ``language`` of each request.
        self.languages: list[str | None] = []

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> ASRResult:
        if self.options.record:
            self.utterances.append(pcm)
            self.languages.append(language)
        await asyncio.sleep(self.options.delay)
        _maybe_fail(self.options.fail)
        return ASRResult(self.options.text, language=self.options.language)


# ------------------------------------------------------------------------- LLM
@dataclass
class FakeLLMOptions:
    """Options of the fake LLM: the reply, its pacing and scripted tool calls."""

    #: The reply. ``{tool_result}`` is replaced by the content of the last tool message.
    reply: str = "Hello! How can I help?"
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    #: Scripted tool calls, ``{"name": ..., "arguments": {...}}``: requested (in one
    #: round) when offered in ``tools`` and the history holds no tool result yet.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    fail: str | None = None
    #: Raise after this many tokens (None: never).
    fail_after: int | None = None
    #: Keep what the provider saw (utterances, requests, texts, batch sizes) for tests
    #: to inspect; false for long runs (the fuzzer), where it would grow without bound.
    record: bool = True


@dataclass
class FakeLLMRequest:
    """Per-request options the fake LLM accepts (a profile's ``llm:``)."""

    model: str | None = None
    temperature: float | None = None


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


class _LLMScript:
    def __init__(self, options: FakeLLMOptions) -> None:
        self.options = options
        self.requests: list[tuple[list[Message], list[ToolSpec]]] = []

    def plan(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None) -> list[Any]:
        if self.options.record:
            self.requests.append((list(messages), list(tools or [])))
        _maybe_fail(self.options.fail)
        offered = {t.name for t in tools or []}
        has_result = any(m.role == "tool" for m in messages)
        calls = [c for c in self.options.tool_calls if c.get("name") in offered]
        if calls and not has_result:
            return [
                ToolCall(f"call_{i}", c["name"], dict(c.get("arguments", {})))
                for i, c in enumerate(calls)
            ]
        tool_result = next((m.content for m in reversed(messages) if m.role == "tool"), "")
        return _tokens(self.options.reply.replace("{tool_result}", tool_result))

    def delay(self, index: int) -> float:
        return self.options.first_token_delay if index == 0 else self.options.token_delay

    def check(self, index: int) -> None:
        if self.options.fail_after is not None and index >= self.options.fail_after:
            raise ProviderError(f"fake LLM failed after {index} tokens")


class FakeLLM:
    """Streams ``reply`` token by token; scripted delays and tool calls."""

    def __init__(self, options: FakeLLMOptions | None = None, **kw: Any) -> None:
        self.options = options or FakeLLMOptions(**kw)
        self.script = _LLMScript(self.options)
        #: The per-request options of each chat (None: none passed).
        self.request_options: list[FakeLLMRequest | None] = []

    @property
    def requests(self) -> list[tuple[list[Message], list[ToolSpec]]]:
        return self.script.requests

    def chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        options: FakeLLMRequest | None = None,
    ) -> Iterator[str | ToolCall]:
        self.request_options.append(options)
        for i, item in enumerate(self.script.plan(messages, tools)):
            self.script.check(i)
            if d := self.script.delay(i):
                time.sleep(d)
            yield item


class FakeAsyncLLM:
    """``io`` twin of :class:`FakeLLM`."""

    def __init__(self, options: FakeLLMOptions | None = None, **kw: Any) -> None:
        self.options = options or FakeLLMOptions(**kw)
        self.script = _LLMScript(self.options)

    @property
    def requests(self) -> list[tuple[list[Message], list[ToolSpec]]]:
        return self.script.requests

    async def chat(
        self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None
    ) -> AsyncIterator[str | ToolCall]:
        for i, item in enumerate(self.script.plan(messages, tools)):
            self.script.check(i)
            if d := self.script.delay(i):
                await asyncio.sleep(d)
            yield item


# ------------------------------------------------------------------------- TTS
@dataclass
class FakeTTSOptions:
    """Options of the fake TTS: output rate, audio per character, pacing."""

    sample_rate: int = 24000
    #: Audio length produced per character of text.
    seconds_per_char: float = 0.05
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_ms: int = 100
    freq: float = 330.0
    fail: str | None = None
    #: Keep what the provider saw (utterances, requests, texts, batch sizes) for tests
    #: to inspect; false for long runs (the fuzzer), where it would grow without bound.
    record: bool = True


@functools.lru_cache(maxsize=64)
def _tone_bytes(seconds: float, sample_rate: int, freq: float) -> bytes:
    # cached: a load test's "instant" TTS should cost next to nothing in the server it
    # measures (a fresh tone per sentence was ~1.5 % of the server's CPU at 100 devices)
    return tone(seconds, sample_rate, freq).tobytes()


def _tts_chunks(o: FakeTTSOptions, text: str) -> Iterable[bytes]:
    pcm = _tone_bytes(len(text) * o.seconds_per_char, o.sample_rate, o.freq)
    step = max(2, o.sample_rate * o.chunk_ms // 1000 * 2)
    return (pcm[i : i + step] for i in range(0, len(pcm), step))


@dataclass
class FakeTTSRequest:
    """Per-request options the fake TTS accepts (a profile's ``tts:``)."""

    speed: float | None = None


class FakeTTS:
    """A tone whose length follows the text; chunked, with scripted delays."""

    def __init__(self, options: FakeTTSOptions | None = None, **kw: Any) -> None:
        self.options = options or FakeTTSOptions(**kw)
        self.sample_rate = self.options.sample_rate
        self.texts: list[str] = []
        #: (voice, per-request options) of each synthesis.
        self.requests: list[tuple[str | None, FakeTTSRequest | None]] = []

    def synthesize(
        self, text: str, *, voice: str | None = None, options: FakeTTSRequest | None = None
    ) -> Iterator[bytes]:
        if self.options.record:
            self.texts.append(text)
            self.requests.append((voice, options))
        _maybe_fail(self.options.fail)
        for i, chunk in enumerate(_tts_chunks(self.options, text)):
            d = self.options.first_chunk_delay if i == 0 else self.options.chunk_delay
            if d:
                time.sleep(d)
            yield chunk


class FakeAsyncTTS:
    """``io`` twin of :class:`FakeTTS`."""

    def __init__(self, options: FakeTTSOptions | None = None, **kw: Any) -> None:
        self.options = options or FakeTTSOptions(**kw)
        self.sample_rate = self.options.sample_rate
        self.texts: list[str] = []

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        if self.options.record:
            self.texts.append(text)
        _maybe_fail(self.options.fail)
        for i, chunk in enumerate(_tts_chunks(self.options, text)):
            d = self.options.first_chunk_delay if i == 0 else self.options.chunk_delay
            if d:
                await asyncio.sleep(d)
            yield chunk


# ------------------------------------------------------------------------- Voiceprint
@dataclass
class FakeVoiceprintOptions:
    """Options of the fake voiceprint: the similarity threshold."""

    threshold: float = 0.9


class FakeVoiceprint:
    """Embeds an utterance as a normalised 8-bin spectrum; in-memory enrolment."""

    def __init__(self, options: FakeVoiceprintOptions | None = None) -> None:
        self.options = options or FakeVoiceprintOptions()
        self.enrolled: dict[str, np.ndarray] = {}

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        spec = np.abs(np.fft.rfft(pcm.astype(np.float32)))
        bins = np.array([b.sum() for b in np.array_split(spec, 8)], np.float32) + 1e-6
        return bins / np.linalg.norm(bins)

    def enroll(self, name: str, pcm: np.ndarray) -> None:
        self.enrolled[name] = self.embed(pcm)

    def identify(self, pcm: np.ndarray) -> SpeakerMatch:
        emb = self.embed(pcm)
        best, score = None, -1.0
        for name, ref in self.enrolled.items():
            s = float(np.dot(emb, ref))
            if s > score:
                best, score = name, s
        return SpeakerMatch(best if score >= self.options.threshold else None, max(score, 0.0))

    def speakers(self) -> list[str]:
        return sorted(self.enrolled)


# ------------------------------------------------------------------------- Vision
@dataclass
class FakeVisionOptions:
    """Options of the fake vision model: the answer template (``{question}``,
    ``{mime_type}``, ``{size}`` are filled in) and an optional failure."""

    text: str = "The photo ({mime_type}, {size} bytes) shows a red apple."
    fail: str | None = None


class FakeVision:
    """Answers from a template; keeps every image it was shown in ``calls``.

    >>> FakeVision().explain(b"\\x89PNG", "image/png", "what fruit?")
    'The photo (image/png, 4 bytes) shows a red apple.'
    """

    def __init__(self, options: FakeVisionOptions | None = None, **kw: Any) -> None:
        self.options = options or FakeVisionOptions(**kw)
        self.calls: list[tuple[bytes, str, str]] = []

    def explain(self, image: bytes, mime_type: str, question: str) -> str:
        self.calls.append((image, mime_type, question))
        _maybe_fail(self.options.fail)
        return self.options.text.format(question=question, mime_type=mime_type, size=len(image))


# ------------------------------------------------------------------------- specs
_FAKES: dict[tuple[Role, Execution], tuple[Callable[..., Any], type]] = {
    (Role.VAD, Execution.CPU): (EnergyVAD, EnergyVADOptions),
    (Role.ASR, Execution.CPU): (FakeASR, FakeASROptions),
    (Role.ASR, Execution.IO): (FakeAsyncASR, FakeASROptions),
    (Role.LLM, Execution.CPU): (FakeLLM, FakeLLMOptions),
    (Role.LLM, Execution.IO): (FakeAsyncLLM, FakeLLMOptions),
    (Role.TTS, Execution.CPU): (FakeTTS, FakeTTSOptions),
    (Role.TTS, Execution.IO): (FakeAsyncTTS, FakeTTSOptions),
    (Role.VOICEPRINT, Execution.CPU): (FakeVoiceprint, FakeVoiceprintOptions),
    (Role.VISION, Execution.CPU): (FakeVision, FakeVisionOptions),
}


def fake_spec(role: str | Role, execution: str | Execution = "cpu") -> ProviderSpec:
    """The :class:`ProviderSpec` of a fake (named ``fake`` for cpu, ``fake_io`` for io).

    >>> fake_spec("llm", "io").name
    'fake_io'
    """
    role, execution = Role(role), Execution(execution)
    factory, options = _FAKES[(role, execution)]
    caps = {Role.VAD: {"batch"}, Role.LLM: {"tools"}}.get(role, set())
    if role is Role.TTS and execution is Execution.CPU:
        caps = {"multilingual"}  # a tone speaks every language alike
    if role is Role.ASR and execution is Execution.CPU:
        caps = {"streaming"}
    request = {
        (Role.LLM, Execution.CPU): FakeLLMRequest,
        (Role.TTS, Execution.CPU): FakeTTSRequest,
    }.get((role, execution))
    return ProviderSpec(
        role=role,
        name="fake" if execution is Execution.CPU else "fake_io",
        execution=execution,
        factory=factory,
        options=options,
        capabilities=frozenset(caps),
        description="test double with scripted timing (xiaozhi-testkit)",
        request_options=request,
        voice_for_language=_fake_voice if role is Role.TTS else None,
    )


def _fake_voice(options: object, language: str, voice: str | None) -> str | None:
    """The fake TTS's voice for a language: ``fake-<code>`` unless ``voice`` already
    ends in ``-<code>`` (so tests see which language's voice a sentence got).

    >>> _fake_voice(None, "zh", None), _fake_voice(None, "zh", "fake-zh")
    ('fake-zh', None)
    """
    return None if voice is not None and voice.endswith(f"-{language}") else f"fake-{language}"


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    """The fakes, as a plugin."""
    return [fake_spec(role, execution) for role, execution in _FAKES]


def fake_config(**sections: Any) -> Any:
    """A validated :class:`~xiaozhi_core.config.DeploymentConfig` on the fake providers
    (loopback, auth off, no device store), for tests. Keyword arguments deep-merge over
    the defaults, e.g.
    ``fake_config(llm={"provider": "fake", "options": {"reply": "Hi."}})``.

    >>> fake_config(server={"port": 0}).server.port
    0
    """
    from xiaozhi_core.config import _validate, merge
    from xiaozhi_core.registry import Registry

    registry = Registry()
    registry.register(__import__(__name__, fromlist=["_"]))
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "http_port": 0},
        # no device store, unless the test passes store={...} (then it is on)
        "store": {"enabled": "store" in sections},
        "vad": {"provider": "fake"},
        "asr": {"provider": "fake"},
        "llm": {"provider": "fake"},
        "tts": {"provider": "fake"},
    }
    raw = merge(raw, sections)
    return _validate(raw, registry, ["<fake_config>"])
