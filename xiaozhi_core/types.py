"""Plain data types shared by the core and every provider.

Nothing here imports anything heavy; plugins may import this module from their entry
point at no cost.

Audio conventions (all providers):

* microphone audio handed to VAD / ASR / voiceprint is **16 kHz mono**;
* VAD windows are ``float32`` in ``[-1, 1]``, 512 samples each;
* ASR and voiceprint receive ``int16`` numpy arrays;
* TTS yields ``bytes`` of signed 16-bit little-endian mono PCM at the provider's
  declared ``sample_rate``.

Example:
    >>> from xiaozhi_core.types import Message, ToolCall, ToolSpec
    >>> Message(role="user", content="What time is it?").role
    'user'
    >>> ToolCall(id="call_1", name="get_time", arguments={}).name
    'get_time'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ASRResult",
    "Execution",
    "JSONObject",
    "JSONValue",
    "Message",
    "Recall",
    "Role",
    "SegmentationDefaults",
    "SpeakerMatch",
    "ToolCall",
    "ToolSpec",
]


#: A JSON value as ``json.loads`` returns it (device messages, MCP payloads, schemas).
JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]
#: A JSON object.
JSONObject = dict[str, JSONValue]


class Role(enum.StrEnum):
    """The roles a provider can fill: the five of the voice pipeline, ``vision`` (image +
    question → text, for the camera of boards that have one) and ``memory`` (what a
    device's conversations leave for its next session).

    >>> Role("asr") is Role.ASR
    True
    """

    VAD = "vad"
    ASR = "asr"
    LLM = "llm"
    TTS = "tts"
    VOICEPRINT = "voiceprint"
    VISION = "vision"
    MEMORY = "memory"


class Execution(enum.StrEnum):
    """How the core must run a provider's work methods.

    * ``IO``: coroutine functions / async generators, awaited on the event loop.
    * ``CPU``: plain blocking functions / generators, run only in the shared worker pool.

    >>> Execution("cpu") is Execution.CPU
    True
    """

    IO = "io"
    CPU = "cpu"


@dataclass(frozen=True)
class ToolSpec:
    """A function the LLM may call. ``parameters`` is a JSON Schema object.

    >>> ToolSpec("get_time", "Current time", {"type": "object", "properties": {}}).name
    'get_time'
    """

    name: str
    description: str
    parameters: JSONObject = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """A function call requested by the LLM. ``arguments`` is the decoded JSON object.

    >>> ToolCall("c1", "set_volume", {"volume": 50}).arguments["volume"]
    50
    """

    id: str
    name: str
    arguments: JSONObject


@dataclass
class Message:
    """One entry of a chat history (OpenAI-style roles).

    ``tool_calls`` is set on assistant messages that requested calls; ``tool_call_id``
    on the ``tool`` message that carries a call's result.

    >>> Message("tool", "12:00", tool_call_id="c1").tool_call_id
    'c1'
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ASRResult:
    """A recognised utterance (or a partial hypothesis when ``final`` is False).

    >>> ASRResult("hello world").final
    True
    """

    text: str
    final: bool = True
    language: str | None = None


@dataclass(frozen=True)
class SpeakerMatch:
    """The outcome of speaker identification. ``name`` is None for an unknown speaker.

    >>> SpeakerMatch(None, 0.31).known
    False
    """

    name: str | None
    score: float

    @property
    def known(self) -> bool:
        return self.name is not None


@dataclass(frozen=True)
class SegmentationDefaults:
    """How a VAD provider's probabilities are best cut into utterances.

    A VAD provider declares these as its ``segmentation`` attribute (each ``None``: use
    the core's default); a deployment's ``session.*`` settings override them.

    >>> SegmentationDefaults(threshold=0.6, silence_ms=500).silence_ms
    500
    """

    #: Speech starts when a window's probability reaches this.
    threshold: float | None = None
    #: Speech continues while the probability stays at or above this (hysteresis).
    release_threshold: float | None = None
    #: Unvoiced audio that ends an utterance.
    silence_ms: int | None = None
    #: Voiced audio needed to confirm speech (shorter blips are ignored).
    min_speech_ms: int | None = None
    #: Audio kept before the detected start.
    pre_roll_ms: int | None = None


@dataclass(frozen=True)
class Recall:
    """What a memory provider remembers of a device when a session starts.

    ``notes`` is added to the system prompt; ``history`` (whole user/assistant
    exchanges, oldest first) seeds the session's conversation history.

    >>> r = Recall("The user is called Ann.", [Message("user", "hi"), Message("assistant", "Hi!")])
    >>> r.notes, len(r.history)
    ('The user is called Ann.', 2)
    """

    notes: str = ""
    history: list[Message] = field(default_factory=list)
