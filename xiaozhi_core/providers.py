"""Provider interfaces: what a VAD, ASR, LLM, TTS, voiceprint, vision or memory provider
must offer.

A provider package describes each provider with a :class:`ProviderSpec` (returned from
the ``xiaozhi_providers`` hook). The spec's ``execution`` decides which flavour of the
interface the provider implements:

* ``cpu``: the *work methods* listed in :data:`WORK_METHODS` are plain blocking
  functions (or generators, for streams). The core runs them only in its worker pool.
* ``io``: the same methods are coroutine functions (or async generators). The core
  awaits them on the event loop.

Everything else (``initial_state``, ``sample_rate``, ``close``...) is cheap metadata and
runs where it is called. The core checks the flavour when it builds a provider and
refuses a mismatch (see :mod:`xiaozhi_core.executor`).

Example — a complete ``cpu`` TTS provider that yields silence:

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class SilenceOptions:
    ...     sample_rate: int = 16000
    >>> class SilenceTTS:
    ...     def __init__(self, options: SilenceOptions) -> None:
    ...         self.sample_rate = options.sample_rate
    ...     def synthesize(self, text, *, voice=None):
    ...         yield b"\\x00\\x00" * (self.sample_rate // 10) * len(text.split())
    >>> spec = ProviderSpec(role="tts", name="silence", execution="cpu",
    ...                     factory=SilenceTTS, options=SilenceOptions)
    >>> tts = spec.create({"sample_rate": 24000})
    >>> len(b"".join(tts.synthesize("two words")))
    9600
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError, PluginError
from .options import validate_options
from .types import (
    ASRResult,
    Execution,
    Message,
    Recall,
    Role,
    SegmentationDefaults,
    SpeakerMatch,
    ToolCall,
    ToolSpec,
)

__all__ = [
    "ASRProvider",
    "BoundASR",
    "BoundLLM",
    "BoundMemory",
    "BoundTTS",
    "BoundVAD",
    "BoundVision",
    "BoundVoiceprint",
    "ASRCapabilities",
    "LLMCapabilities",
    "TTSCapabilities",
    "VADCapabilities",
    "ASRStream",
    "AsyncASRProvider",
    "AsyncASRStream",
    "AsyncLLMProvider",
    "AsyncMemoryProvider",
    "AsyncTTSProvider",
    "AsyncVADProvider",
    "AsyncVisionProvider",
    "AsyncVoiceprintProvider",
    "CAPABILITIES",
    "DeviceMemory",
    "LLMChunk",
    "LLMProvider",
    "MemoryCapabilities",
    "MemoryProvider",
    "SyncDeviceMemory",
    "NoOptions",
    "ProviderSpec",
    "TTSProvider",
    "VADProvider",
    "VisionProvider",
    "VoiceprintProvider",
    "WORK_METHODS",
]

#: Items of an LLM stream: text deltas, or a complete tool call request.
LLMChunk = str | ToolCall

#: A VAD's per-stream recurrent state: created by ``initial_state``, opaque to the core.
VADState = object

#: For each role, the methods the executor policy governs, and whether each returns one
#: value (``"call"``) or a stream (``"stream"``).
WORK_METHODS: dict[Role, dict[str, Literal["call", "stream"]]] = {
    Role.VAD: {"speech_probs": "call"},
    Role.ASR: {"transcribe": "call", "open_stream": "call"},
    Role.LLM: {"chat": "stream"},
    Role.TTS: {"synthesize": "stream"},
    Role.VOICEPRINT: {"embed": "call", "enroll": "call", "identify": "call", "speakers": "call"},
    Role.VISION: {"explain": "call"},
    Role.MEMORY: {"recall": "call", "consolidate": "call"},
}

#: Methods of an ASR stream session (returned by ``open_stream``), same policy as its provider.
ASR_STREAM_METHODS: dict[str, Literal["call", "stream"]] = {
    "push": "call",
    "finish": "call",
    "close": "call",
}

#: Methods a role requires; the rest of WORK_METHODS are optional, gated by capabilities.
REQUIRED_METHODS: dict[Role, tuple[str, ...]] = {
    Role.VAD: ("speech_probs", "initial_state"),
    Role.ASR: ("transcribe",),
    Role.LLM: ("chat",),
    Role.TTS: ("synthesize",),
    Role.VOICEPRINT: ("embed", "enroll", "identify", "speakers"),
    Role.VISION: ("explain",),
    Role.MEMORY: ("recall",),
}

#: Capability flags the core understands, per role. Providers may declare others.
CAPABILITIES: dict[Role, dict[str, str]] = {
    Role.VAD: {"batch": "speech_probs accepts windows of many streams in one call"},
    Role.ASR: {
        "streaming": "open_stream(): push audio as it arrives, partial + final results",
        "multilingual": "recognises more than one language",
        "batch": "transcribe_batch(pcms): several utterances in one call (Ray Serve batching)",
    },
    Role.LLM: {
        "tools": "accepts tool schemas and emits ToolCall requests",
        "options": "chat(..., options=...) takes per-request options (request_options)",
    },
    Role.TTS: {
        "multilingual": "speaks more than one language",
        "options": "synthesize(..., options=...) takes per-request options (request_options)",
    },
    Role.VOICEPRINT: {},
    Role.VISION: {},
    Role.MEMORY: {"consolidate": "consolidate() condenses a finished session"},
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]*$")


@dataclass(frozen=True)
class NoOptions:
    """The options schema of a provider that takes none."""


@dataclass(frozen=True)
class ProviderSpec:
    """A provider described as data, yielded by the ``xiaozhi_providers`` hook.

    ``factory`` is either a callable or, better, a ``"package.module:attr"`` string: the
    module is imported only when a deployment selects the provider, which keeps entry
    points cheap. It is called with one argument, the validated options object (an
    instance of ``options``, a dataclass; :class:`NoOptions` if omitted).

    >>> spec = ProviderSpec(role="vad", name="energy", execution="cpu",
    ...                     factory="xiaozhi_core.testing:EnergyVAD")
    >>> spec.role, spec.execution, spec.factory_path
    (<Role.VAD: 'vad'>, <Execution.CPU: 'cpu'>, 'xiaozhi_core.testing:EnergyVAD')
    """

    role: Role
    name: str
    execution: Execution
    factory: str | Callable[..., object]
    options: type = NoOptions
    capabilities: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    #: Per-request options (LLM ``chat``, TTS ``synthesize``): a dataclass whose fields a
    #: profile may set (e.g. ``model``, ``temperature``; ``speed``). When given, the
    #: provider gets the ``options`` capability and the core passes a validated
    #: instance as ``options=`` on requests of a profile that sets any (only then).
    request_options: type | None = None
    #: TTS: ``(options, language, voice) -> voice``, the voice to speak ``language``
    #: (a code such as ``zh``) with, given the validated options and the voice the
    #: config chose (None: the options' own). Return None when that voice already
    #: speaks the language or the provider knows no better one. Must be cheap (it runs
    #: when profiles are built, in ``plugin.py``).
    voice_for_language: Callable[[object, str, str | None], str | None] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "role", Role(self.role))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise PluginError(
                f"provider {self.name!r}: role {self.role!r} is not one of: {allowed}"
            ) from None
        try:
            object.__setattr__(self, "execution", Execution(self.execution))
        except ValueError:
            raise PluginError(
                f"provider {self.name!r}: execution {self.execution!r} must be 'io' or 'cpu'"
            ) from None
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise PluginError(
                f"provider name {self.name!r} must be lowercase letters, digits, '_' or '-'"
            )
        if not (dataclasses.is_dataclass(self.options) and isinstance(self.options, type)):
            raise PluginError(f"provider {self.name!r}: options must be a dataclass type")
        if isinstance(self.factory, str):
            if ":" not in self.factory:
                raise PluginError(
                    f"provider {self.name!r}: factory {self.factory!r} must look like "
                    "'package.module:attribute'"
                )
        elif not callable(self.factory):
            raise PluginError(f"provider {self.name!r}: factory must be callable or a string")
        caps: object = self.capabilities
        if (
            isinstance(caps, str | bytes)
            or not isinstance(caps, Iterable)
            or not all(isinstance(c, str) for c in caps)
        ):
            raise PluginError(
                f"provider {self.name!r}: capabilities must be a set of strings such as "
                f"{{'tools'}}, got {caps!r}"
            )
        if self.request_options is not None:
            if not (
                dataclasses.is_dataclass(self.request_options)
                and isinstance(self.request_options, type)
            ):
                raise PluginError(
                    f"provider {self.name!r}: request_options must be a dataclass type"
                )
            caps = {*caps, "options"}
        if self.voice_for_language is not None and not callable(self.voice_for_language):
            raise PluginError(f"provider {self.name!r}: voice_for_language must be callable")
        object.__setattr__(self, "capabilities", frozenset(caps))

    @property
    def key(self) -> tuple[Role, str]:
        return (self.role, self.name)

    @property
    def factory_path(self) -> str:
        if isinstance(self.factory, str):
            return self.factory
        return f"{self.factory.__module__}:{self.factory.__qualname__}"

    def resolve_factory(self) -> Callable[..., object]:
        """Import and return the factory (this is where heavy imports happen).

        Raises :class:`PluginError` naming the provider when the module cannot be
        imported (typically a missing dependency) or lacks the attribute.

        >>> spec = ProviderSpec(role="tts", name="nope", execution="cpu",
        ...                     factory="xiaozhi_core.testing:NoSuchTTS")
        >>> spec.resolve_factory()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xiaozhi_core.errors.PluginError: tts provider 'nope': ... has no attribute 'NoSuchTTS'
        """
        if not isinstance(self.factory, str):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        where = f"{self.role} provider {self.name!r}: factory {self.factory!r}"
        try:
            obj: object = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or whatever the module raises on import
            raise PluginError(
                f"{where}: cannot import {module_name!r}: {type(exc).__name__}: {exc} "
                "(are the provider's dependencies installed?)"
            ) from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise PluginError(
                    f"{where}: module {module_name!r} has no attribute {attr!r}"
                ) from None
        if not callable(obj):
            raise PluginError(f"{where}: {attr!r} is not callable")
        return obj

    def validate(self, options: Mapping[str, object] | None, path: str = "") -> object:
        """Validate a raw options mapping against this provider's schema."""
        return validate_options(self.options, options, path=path)

    def validate_request(
        self, options: Mapping[str, object] | None, path: str = ""
    ) -> object | None:
        """Validate a profile's per-request options against ``request_options`` (None
        when there are none to pass).

        >>> @dataclass
        ... class Req:
        ...     temperature: float | None = None
        >>> spec = ProviderSpec(role="llm", name="x", execution="io", factory="m:f",
        ...                     request_options=Req)
        >>> spec.validate_request({"temperature": 0.2}), "options" in spec.capabilities
        (Req(temperature=0.2), True)
        >>> ProviderSpec(role="llm", name="y", execution="io", factory="m:f"
        ...              ).validate_request({"model": "m"}, path="profiles.kids.llm")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xiaozhi_core.errors.ConfigError: profiles.kids.llm: llm provider 'y' takes no per-req...
        """
        if not options:
            return None
        if self.request_options is None:
            raise ConfigError(
                f"{self.role} provider {self.name!r} takes no per-request options", path=path
            )
        return validate_options(self.request_options, options, path=path)

    def create(self, options: Mapping[str, object] | None = None) -> object:
        """Validate ``options`` and build the provider (without executor enforcement;
        the core goes through :func:`xiaozhi_core.executor.bind` instead)."""
        return self.resolve_factory()(self.validate(options))


# --------------------------------------------------------------------------- VAD
class VADProvider(Protocol):
    """``cpu`` VAD: speech probabilities of 512-sample windows of many streams at once.

    ``windows`` has shape ``(n, window)`` (float32, 16 kHz); ``states[i]`` is the
    recurrent state of the stream that window ``i`` belongs to (from
    :meth:`initial_state`). Returns the probabilities, shape ``(n,)``, and the new states.
    A stream appears at most once per call; the core keeps the states between calls.
    States are returned rather than mutated so that the call works in a process pool.

    >>> from xiaozhi_core.testing import EnergyVAD
    >>> vad = EnergyVAD()
    >>> probs, states = vad.speech_probs(np.zeros((2, 512), np.float32),
    ...                                  [vad.initial_state(), vad.initial_state()])
    >>> probs.tolist()
    [0.0, 0.0]
    """

    sample_rate: int
    window: int
    #: Optional: how this VAD's probabilities are best segmented (None: core defaults).
    segmentation: SegmentationDefaults | None

    def initial_state(self) -> VADState: ...

    def speech_probs(
        self, windows: np.ndarray, states: Sequence[VADState]
    ) -> tuple[np.ndarray, list[VADState]]: ...


class AsyncVADProvider(Protocol):
    """``io`` VAD (e.g. a remote VAD service): :class:`VADProvider` with ``async`` work.

    >>> import asyncio
    >>> class RemoteVAD:
    ...     sample_rate, window = 16000, 512
    ...     def initial_state(self):
    ...         return None
    ...     async def speech_probs(self, windows, states):
    ...         await asyncio.sleep(0)  # the network round trip
    ...         return np.ones(len(windows), np.float32), list(states)
    >>> vad = RemoteVAD()
    >>> probs, _ = asyncio.run(vad.speech_probs(np.zeros((1, 512), np.float32), [None]))
    >>> probs.tolist()
    [1.0]
    """

    sample_rate: int
    window: int
    #: Optional: how this VAD's probabilities are best segmented (None: core defaults).
    segmentation: SegmentationDefaults | None

    def initial_state(self) -> VADState: ...

    async def speech_probs(
        self, windows: np.ndarray, states: Sequence[VADState]
    ) -> tuple[np.ndarray, list[VADState]]: ...


# --------------------------------------------------------------------------- ASR
class ASRStream(Protocol):
    """A streaming recognition session (``cpu`` flavour): push int16 audio, then finish.

    >>> from xiaozhi_core.testing import FakeASR
    >>> partials = []
    >>> stream = FakeASR(text="turn on the light").open_stream(on_partial=partials.append)
    >>> stream.push(np.zeros(8000, np.int16))
    >>> partials[-1]
    ASRResult(text='turn on', final=False, language=None)
    >>> stream.finish().text
    'turn on the light'
    >>> stream.close()
    """

    def push(self, pcm: np.ndarray) -> None: ...

    def finish(self) -> ASRResult: ...

    def close(self) -> None: ...


class AsyncASRStream(Protocol):
    """A streaming recognition session (``io`` flavour).

    >>> import asyncio
    >>> class CloudStream:
    ...     def __init__(self):
    ...         self.samples = 0
    ...     async def push(self, pcm):
    ...         self.samples += len(pcm)  # would send a WebSocket frame
    ...     async def finish(self):
    ...         return ASRResult(f"{self.samples} samples")
    ...     async def close(self):
    ...         pass
    >>> async def demo():
    ...     stream = CloudStream()
    ...     await stream.push(np.zeros(1600, np.int16))
    ...     return (await stream.finish()).text
    >>> asyncio.run(demo())
    '1600 samples'
    """

    async def push(self, pcm: np.ndarray) -> None: ...

    async def finish(self) -> ASRResult: ...

    async def close(self) -> None: ...


class ASRProvider(Protocol):
    """``cpu`` ASR: recognise a whole utterance of 16 kHz int16 audio.

    Providers with the ``streaming`` capability also implement ``open_stream``; partial
    hypotheses go to ``on_partial`` (the core makes it safe to call from any thread).

    >>> from xiaozhi_core.testing import FakeASR
    >>> FakeASR(text="hi there").transcribe(np.zeros(1600, np.int16)).text
    'hi there'
    """

    def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> ASRResult: ...

    def open_stream(
        self, *, language: str | None = None, on_partial: Callable[[ASRResult], None] | None = None
    ) -> ASRStream: ...


class AsyncASRProvider(Protocol):
    """``io`` ASR (cloud): :class:`ASRProvider` with ``async`` work methods.

    >>> import asyncio
    >>> from xiaozhi_core.testing import FakeAsyncASR
    >>> asyncio.run(FakeAsyncASR(text="hi").transcribe(np.zeros(1600, np.int16))).text
    'hi'
    """

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> ASRResult: ...

    async def open_stream(
        self, *, language: str | None = None, on_partial: Callable[[ASRResult], None] | None = None
    ) -> AsyncASRStream: ...


# --------------------------------------------------------------------------- LLM
class LLMProvider(Protocol):
    """``cpu`` LLM: stream a chat completion as text deltas and :class:`ToolCall` items.

    A tool call is yielded once, complete (arguments decoded). The caller runs the tool,
    appends the assistant message (with ``tool_calls``) and a ``tool`` message, and calls
    ``chat`` again. A provider whose spec has ``request_options`` also accepts
    ``options=`` (an instance of that dataclass) — only then does the core pass it.

    >>> from xiaozhi_core.testing import FakeLLM
    >>> list(FakeLLM(reply="Hi. Bye.").chat([Message("user", "hello")]))
    ['Hi.', ' Bye.']
    """

    def chat(
        self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None
    ) -> Iterator[LLMChunk]: ...


class AsyncLLMProvider(Protocol):
    """``io`` LLM: ``chat`` is an async generator.

    >>> import asyncio
    >>> from xiaozhi_core.testing import FakeAsyncLLM
    >>> async def demo():
    ...     llm = FakeAsyncLLM(reply="Hi. Bye.")
    ...     return [chunk async for chunk in llm.chat([Message("user", "hello")])]
    >>> asyncio.run(demo())
    ['Hi.', ' Bye.']
    """

    def chat(
        self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None
    ) -> AsyncIterator[LLMChunk]: ...


# --------------------------------------------------------------------------- TTS
class TTSProvider(Protocol):
    """``cpu`` TTS: stream PCM16 mono at ``sample_rate`` for one piece of text.

    With ``request_options`` in its spec it also accepts ``options=`` (see
    :class:`LLMProvider`).

    >>> from xiaozhi_core.testing import FakeTTS
    >>> tts = FakeTTS(sample_rate=16000, seconds_per_char=0.01)
    >>> sum(len(b) for b in tts.synthesize("abc")) // 2
    480
    """

    sample_rate: int

    def synthesize(self, text: str, *, voice: str | None = None) -> Iterator[bytes]: ...


class AsyncTTSProvider(Protocol):
    """``io`` TTS: ``synthesize`` is an async generator of PCM16 chunks.

    >>> import asyncio
    >>> from xiaozhi_core.testing import FakeAsyncTTS
    >>> async def demo():
    ...     tts = FakeAsyncTTS(sample_rate=16000, seconds_per_char=0.01)
    ...     return sum([len(chunk) async for chunk in tts.synthesize("abc")]) // 2
    >>> asyncio.run(demo())
    480
    """

    sample_rate: int

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]: ...


# --------------------------------------------------------------------------- Voiceprint
class VoiceprintProvider(Protocol):
    """``cpu`` speaker identification over 16 kHz int16 utterances.

    ``identify`` returns the best enrolled speaker whose similarity reaches the
    provider's threshold, else ``SpeakerMatch(None, best_score)``.

    >>> from xiaozhi_core.testing import FakeVoiceprint
    >>> vp = FakeVoiceprint()
    >>> vp.enroll("alice", np.full(1600, 1000, np.int16))
    >>> vp.identify(np.full(1600, 1000, np.int16)).name
    'alice'
    """

    def embed(self, pcm: np.ndarray) -> np.ndarray: ...

    def enroll(self, name: str, pcm: np.ndarray) -> None: ...

    def identify(self, pcm: np.ndarray) -> SpeakerMatch: ...

    def speakers(self) -> list[str]: ...


class AsyncVoiceprintProvider(Protocol):
    """``io`` speaker identification (a remote service).

    >>> import asyncio
    >>> class RemoteVoiceprint:
    ...     def __init__(self):
    ...         self.known = {}
    ...     async def embed(self, pcm):
    ...         return np.array([float(np.abs(pcm).mean())], np.float32)
    ...     async def enroll(self, name, pcm):
    ...         self.known[name] = await self.embed(pcm)
    ...     async def identify(self, pcm):
    ...         emb = await self.embed(pcm)
    ...         for name, ref in self.known.items():
    ...             if abs(float(emb[0] - ref[0])) < 1.0:
    ...                 return SpeakerMatch(name, 1.0)
    ...         return SpeakerMatch(None, 0.0)
    ...     async def speakers(self):
    ...         return sorted(self.known)
    >>> async def demo():
    ...     vp = RemoteVoiceprint()
    ...     await vp.enroll("bob", np.full(160, 500, np.int16))
    ...     return (await vp.identify(np.full(160, 500, np.int16))).name, await vp.speakers()
    >>> asyncio.run(demo())
    ('bob', ['bob'])
    """

    async def embed(self, pcm: np.ndarray) -> np.ndarray: ...

    async def enroll(self, name: str, pcm: np.ndarray) -> None: ...

    async def identify(self, pcm: np.ndarray) -> SpeakerMatch: ...

    async def speakers(self) -> list[str]: ...


# --------------------------------------------------------------------------- Vision
class VisionProvider(Protocol):
    """``cpu`` vision-language model: answer ``question`` about one image.

    ``image`` is the encoded file (JPEG from the firmware's camera, or PNG), ``mime_type``
    its type (``image/jpeg``, ``image/png``). Returns plain text for the LLM.

    >>> class Brightness:
    ...     def explain(self, image, mime_type, question):
    ...         return f"a {mime_type} of {len(image)} bytes; you asked: {question}"
    >>> Brightness().explain(bytes(3), "image/jpeg", "what is this?")
    'a image/jpeg of 3 bytes; you asked: what is this?'
    """

    def explain(self, image: bytes, mime_type: str, question: str) -> str: ...


class AsyncVisionProvider(Protocol):
    """``io`` vision-language model (a remote API): ``explain`` is a coroutine.

    >>> import asyncio
    >>> class Remote:
    ...     async def explain(self, image, mime_type, question):
    ...         return "a cat"
    >>> asyncio.run(Remote().explain(b"...", "image/png", "what animal?"))
    'a cat'
    """

    async def explain(self, image: bytes, mime_type: str, question: str) -> str: ...


# --------------------------------------------------------------------------- Memory
class DeviceMemory(Protocol):
    """What the core hands a memory provider: one device's stored conversations and
    notes, and the deployment's LLM. Reads give up after ``store.read_timeout`` and
    answer empty; ``save_note`` and ``session_history`` raise on a store failure (they
    run after a session, never inside a turn).

    ``history``/``session_history`` give ``(user text, reply)`` pairs, oldest first.

    >>> import asyncio
    >>> class Notes:   # what a test might hand a provider instead of the store
    ...     device_id, session_id = "aa:bb", "s1"
    ...     async def history(self, max_chars): return [("hi", "Hello!")]
    ...     async def session_history(self): return []
    ...     async def note(self, kind): return None
    ...     async def save_note(self, kind, text): pass
    ...     async def complete(self, messages): return "ok"
    >>> memory: DeviceMemory = Notes()
    >>> asyncio.run(memory.history(100))
    [('hi', 'Hello!')]
    """

    device_id: str
    #: The session the call is about (the one starting, or the one that ended).
    session_id: str

    async def history(self, max_chars: int) -> list[tuple[str, str]]: ...

    async def session_history(self) -> list[tuple[str, str]]: ...

    async def note(self, kind: str) -> str | None: ...

    async def save_note(self, kind: str, text: str) -> None: ...

    async def complete(self, messages: Sequence[Message]) -> str:
        """The LLM's whole answer to ``messages`` (no tools)."""
        ...


class SyncDeviceMemory(Protocol):
    """:class:`DeviceMemory` for ``cpu`` memory providers: the same calls, blocking (each
    runs on the event loop while the worker thread waits).

    >>> class Notes:
    ...     device_id, session_id = "aa:bb", "s1"
    ...     def note(self, kind): return "likes tea"
    >>> Notes().note("summary")
    'likes tea'
    """

    device_id: str
    session_id: str

    def history(self, max_chars: int) -> list[tuple[str, str]]: ...

    def session_history(self) -> list[tuple[str, str]]: ...

    def note(self, kind: str) -> str | None: ...

    def save_note(self, kind: str, text: str) -> None: ...

    def complete(self, messages: Sequence[Message]) -> str: ...


class MemoryProvider(Protocol):
    """``cpu`` memory: what to remember of a device when its session starts
    (``recall``), and, with the ``consolidate`` capability, what to keep after a
    session ended (``consolidate``; a failure is logged and never reaches a session).

    >>> class Last:
    ...     def recall(self, memory):
    ...         pairs = memory.history(200)
    ...         return Recall("", [m for u, a in pairs
    ...                            for m in (Message("user", u), Message("assistant", a))])
    >>> class Mem:
    ...     device_id, session_id = "aa:bb", "s1"
    ...     def history(self, max_chars):
    ...         return [("hi", "Hello!")]
    >>> [m.content for m in Last().recall(Mem()).history]
    ['hi', 'Hello!']
    """

    def recall(self, memory: SyncDeviceMemory) -> Recall: ...

    def consolidate(self, memory: SyncDeviceMemory) -> None: ...


class AsyncMemoryProvider(Protocol):
    """``io`` memory (the built-ins ``history`` and ``summary`` are of this flavour):
    :class:`MemoryProvider` with ``async`` calls and an async :class:`DeviceMemory`.

    >>> import asyncio
    >>> class NoteOnly:
    ...     async def recall(self, memory):
    ...         return Recall(await memory.note("summary") or "")
    ...     async def consolidate(self, memory):
    ...         await memory.save_note("summary", "talked")
    >>> class Notes:
    ...     device_id, session_id, kept = "aa:bb", "s1", {}
    ...     async def note(self, kind): return self.kept.get(kind)
    ...     async def save_note(self, kind, text): self.kept[kind] = text
    >>> async def demo():
    ...     m, notes = NoteOnly(), Notes()
    ...     await m.consolidate(notes)
    ...     return (await m.recall(notes)).notes
    >>> asyncio.run(demo())
    'talked'
    """

    async def recall(self, memory: DeviceMemory) -> Recall: ...

    async def consolidate(self, memory: DeviceMemory) -> None: ...


# --------------------------------------------------------------------------- bound
class _Bound(Protocol):
    """What every provider behind the executor policy offers besides its work methods
    (see :class:`xiaozhi_core.executor.BoundProvider`).

    >>> from xiaozhi_core.executor import Executor, bind
    >>> from xiaozhi_core.testing import FakeTTS, fake_spec
    >>> bound = bind(fake_spec("tts"), FakeTTS(), Executor())
    >>> bound.name, str(bound.execution), bound.spec.role
    ('fake', 'cpu', <Role.TTS: 'tts'>)
    """

    @property
    def spec(self) -> ProviderSpec: ...

    @property
    def name(self) -> str: ...

    @property
    def execution(self) -> Execution: ...

    #: The provider object itself (None in process mode: it lives in the workers).
    instance: object

    async def remote_attr(self, name: str) -> object: ...

    async def aclose(self) -> None: ...


class BoundVAD(_Bound, AsyncVADProvider, Protocol):
    """A VAD provider as the core holds it: :class:`AsyncVADProvider` + metadata.

    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor, ExecutorSettings, bind_vad
    >>> from xiaozhi_core.testing import EnergyVAD, fake_spec
    >>> async def demo():
    ...     executor = Executor(ExecutorSettings(cpu_workers=1))
    ...     vad: BoundVAD = bind_vad(fake_spec("vad"), EnergyVAD(), executor)
    ...     probs, _ = await vad.speech_probs(np.zeros((1, 512), np.float32),
    ...                                       [vad.initial_state()])
    ...     executor.shutdown()
    ...     return vad.name, probs.tolist()
    >>> asyncio.run(demo())
    ('fake', [0.0])
    """


class BoundASR(_Bound, AsyncASRProvider, Protocol):
    """An ASR provider as the core holds it: :class:`AsyncASRProvider` + metadata.

    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor, bind_asr
    >>> from xiaozhi_core.testing import FakeASR, fake_spec
    >>> async def demo():
    ...     executor = Executor()
    ...     asr: BoundASR = bind_asr(fake_spec("asr"), FakeASR(text="hi"), executor)
    ...     text = (await asr.transcribe(np.zeros(160, np.int16))).text
    ...     executor.shutdown()
    ...     return text
    >>> asyncio.run(demo())
    'hi'
    """


class BoundLLM(_Bound, AsyncLLMProvider, Protocol):
    """An LLM provider as the core holds it: :class:`AsyncLLMProvider` + metadata.

    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor, bind_llm
    >>> from xiaozhi_core.testing import FakeLLM, fake_spec
    >>> async def demo():
    ...     executor = Executor()
    ...     llm: BoundLLM = bind_llm(fake_spec("llm"), FakeLLM(reply="Hi."), executor)
    ...     out = [c async for c in llm.chat([Message("user", "hello")])]
    ...     executor.shutdown()
    ...     return out
    >>> asyncio.run(demo())
    ['Hi.']
    """


class BoundTTS(_Bound, AsyncTTSProvider, Protocol):
    """A TTS provider as the core holds it: :class:`AsyncTTSProvider` + metadata.

    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor, bind_tts
    >>> from xiaozhi_core.testing import FakeTTS, fake_spec
    >>> async def demo():
    ...     executor = Executor()
    ...     tts: BoundTTS = bind_tts(fake_spec("tts"),
    ...                              FakeTTS(sample_rate=16000, seconds_per_char=0.01), executor)
    ...     n = sum([len(c) async for c in tts.synthesize("abc")]) // 2
    ...     executor.shutdown()
    ...     return n
    >>> asyncio.run(demo())
    480
    """


class BoundVoiceprint(_Bound, AsyncVoiceprintProvider, Protocol):
    """A voiceprint provider as the core holds it: :class:`AsyncVoiceprintProvider` +
    metadata.

    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor, bind_voiceprint
    >>> from xiaozhi_core.testing import FakeVoiceprint, fake_spec
    >>> async def demo():
    ...     executor = Executor()
    ...     vp: BoundVoiceprint = bind_voiceprint(fake_spec("voiceprint"), FakeVoiceprint(),
    ...                                           executor)
    ...     await vp.enroll("ann", np.full(1600, 900, np.int16))
    ...     names = await vp.speakers()
    ...     executor.shutdown()
    ...     return names
    >>> asyncio.run(demo())
    ['ann']
    """


class BoundVision(_Bound, AsyncVisionProvider, Protocol):
    """A vision provider as the core holds it: :class:`AsyncVisionProvider` + metadata.

    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor, bind_vision
    >>> from xiaozhi_core.testing import fake_spec
    >>> class Sizer:
    ...     def explain(self, image, mime_type, question):
    ...         return f"{len(image)} bytes"
    >>> async def demo():
    ...     executor = Executor()
    ...     vision: BoundVision = bind_vision(fake_spec("vision"), Sizer(), executor)
    ...     text = await vision.explain(b"1234", "image/png", "size?")
    ...     executor.shutdown()
    ...     return text
    >>> asyncio.run(demo())
    '4 bytes'
    """


class BoundMemory(_Bound, Protocol):
    """A memory provider as the core holds it (work methods ``async`` whatever its
    flavour; a ``cpu`` one is handed a :class:`SyncDeviceMemory` by the core).

    >>> from xiaozhi_core.executor import Executor, bind_memory
    >>> class Nothing:
    ...     async def recall(self, memory): return Recall()
    >>> spec = ProviderSpec(role="memory", name="nothing", execution="io", factory=Nothing)
    >>> bind_memory(spec, Nothing(), Executor()).name
    'nothing'
    """

    async def recall(self, memory: object) -> Recall: ...

    async def consolidate(self, memory: object) -> None: ...


# --------------------------------------------------------------------------- capabilities
@dataclass(frozen=True)
class VADCapabilities:
    """What the core may rely on from a VAD provider.

    >>> from xiaozhi_core.testing import fake_spec
    >>> VADCapabilities.of(fake_spec("vad")).batch
    True
    """

    #: ``speech_probs`` takes windows of many streams in one call.
    batch: bool = False

    @classmethod
    def of(cls, spec: ProviderSpec) -> VADCapabilities:
        return cls(batch="batch" in spec.capabilities)


@dataclass(frozen=True)
class ASRCapabilities:
    """What the core may rely on from an ASR provider.

    >>> from xiaozhi_core.testing import fake_spec
    >>> ASRCapabilities.of(fake_spec("asr")).streaming
    True
    """

    #: ``open_stream`` with partial results.
    streaming: bool = False
    #: Recognises more than one language.
    multilingual: bool = False

    @classmethod
    def of(cls, spec: ProviderSpec) -> ASRCapabilities:
        caps = spec.capabilities
        return cls(streaming="streaming" in caps, multilingual="multilingual" in caps)


@dataclass(frozen=True)
class LLMCapabilities:
    """What the core may rely on from an LLM provider.

    >>> from xiaozhi_core.testing import fake_spec
    >>> LLMCapabilities.of(fake_spec("llm")).tools
    True
    """

    #: Accepts tool schemas and emits ToolCall items.
    tools: bool = False
    #: ``chat(..., options=...)``: per-request options (the spec's ``request_options``).
    options: bool = False

    @classmethod
    def of(cls, spec: ProviderSpec) -> LLMCapabilities:
        return cls(tools="tools" in spec.capabilities, options="options" in spec.capabilities)


@dataclass(frozen=True)
class TTSCapabilities:
    """What the core may rely on from a TTS provider.

    >>> from xiaozhi_core.testing import fake_spec
    >>> TTSCapabilities.of(fake_spec("tts")).multilingual
    True
    >>> TTSCapabilities.of(fake_spec("tts", "io")).multilingual
    False
    """

    #: Speaks more than one language.
    multilingual: bool = False
    #: ``synthesize(..., options=...)``: per-request options (``request_options``).
    options: bool = False

    @classmethod
    def of(cls, spec: ProviderSpec) -> TTSCapabilities:
        return cls(
            multilingual="multilingual" in spec.capabilities, options="options" in spec.capabilities
        )


@dataclass(frozen=True)
class MemoryCapabilities:
    """What the core may rely on from a memory provider.

    >>> MemoryCapabilities.of(ProviderSpec(role="memory", name="m", execution="io",
    ...                                    factory="m:f", capabilities={"consolidate"}))
    MemoryCapabilities(consolidate=True)
    """

    #: ``consolidate()`` is worth calling after every session.
    consolidate: bool = False

    @classmethod
    def of(cls, spec: ProviderSpec) -> MemoryCapabilities:
        return cls(consolidate="consolidate" in spec.capabilities)


@runtime_checkable
class Closable(Protocol):
    """Providers may define ``close()`` (sync or async); the core calls it at shutdown.

    >>> class WithClient:
    ...     def close(self):
    ...         print("client closed")
    >>> isinstance(WithClient(), Closable), isinstance(object(), Closable)
    (True, False)
    """

    def close(self) -> object: ...
