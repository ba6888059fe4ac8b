"""Entry point of ``xiaozhi-openai``: option schemas and provider specs (cheap to import).

Three ``io`` providers, all named ``openai``, speak the OpenAI HTTP API through the
official SDK's ``AsyncOpenAI`` client, so one package serves OpenAI and every
OpenAI-compatible server (DashScope compatible mode, DeepSeek, Ollama, vLLM,
llama.cpp server...) by changing ``base_url``:

* ``llm``: streamed chat completions with tool calls;
* ``asr``: transcription of a whole utterance (``/audio/transcriptions``);
* ``tts``: speech as raw 24 kHz PCM, streamed (``/audio/speech``);
* ``vision``: a photo and a question → text, a chat completion with an image part.

The SDK is imported only by the factories (``xiaozhi_openai.llm`` etc.).

Example:
    >>> from xiaozhi_core.registry import Registry
    >>> import xiaozhi_openai.plugin as plugin
    >>> registry = Registry()
    >>> registry.register(plugin)
    >>> sorted(str(s.role) for s in registry.specs() if s.name == "openai")
    ['asr', 'llm', 'tts', 'vision']
    >>> registry.get("llm", "openai").validate({"temperature": "hot"}, path="llm.options")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: llm.options.temperature: expected a number, got 'hot'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import annotated_types as at

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = [
    "DEFAULT_BASE_URL",
    "OpenAIASROptions",
    "OpenAIConnectionOptions",
    "OpenAILLMOptions",
    "OpenAITTSOptions",
    "OpenAIVisionOptions",
    "xiaozhi_providers",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


#: Seconds, more than zero.
Seconds = Annotated[float, at.Gt(0)]


@dataclass
class OpenAIConnectionOptions:
    """Options every ``openai`` provider shares: where the server is and how long to wait.

    ``max_retries`` defaults to 1. A voice assistant has a person waiting: one quick
    retry (the SDK backs off ~0.5 s) absorbs the usual transient failure — a stale
    keep-alive connection, a one-off 502/503 — while more retries only delay an error
    the user experiences as silence. Retries happen before any output was produced
    (the SDK never retries mid-stream), so they never duplicate text or audio, and
    they count against ``total_timeout`` / the first-output timeout, which bound the
    wait whatever the server's ``Retry-After`` says. Use 0 to fail fast.
    """

    #: API root. OpenAI by default; any OpenAI-compatible server works.
    base_url: str = DEFAULT_BASE_URL
    #: The API key. If unset, read from the environment variable ``api_key_env``.
    api_key: str | None = None
    #: Environment variable holding the key when ``api_key`` is unset (named in errors).
    api_key_env: str = "OPENAI_API_KEY"
    #: Seconds to establish the TCP/TLS connection.
    connect_timeout: Seconds = 5.0
    #: Longest silence, in seconds, between two reads from the server (headers included).
    read_timeout: Seconds = 30.0
    #: Longest total time, in seconds, spent waiting for the server for one request
    #: (time the caller spends between streamed items is not counted).
    total_timeout: Seconds = 60.0
    #: Retries of a failed request (connection error, 408/409/429/5xx) before any output.
    max_retries: Annotated[int, at.Ge(0)] = 1
    #: Extra JSON fields merged into every request body (vendor extensions).
    extra_body: dict[str, Any] = field(default_factory=dict)
    #: Extra HTTP headers sent with every request.
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url {self.base_url!r} must be an http(s) URL such as {DEFAULT_BASE_URL}"
            )
        if not self.api_key_env:
            raise ValueError("api_key_env must name an environment variable")


@dataclass
class OpenAILLMOptions(OpenAIConnectionOptions):
    """``llm`` ``openai``: chat completions, streamed, with tools."""

    model: str = "gpt-4o-mini"
    #: Sampling temperature (server default when unset).
    temperature: float | None = None
    #: Cap on generated tokens, sent as ``max_tokens`` (server default when unset).
    max_tokens: Annotated[int, at.Ge(1)] | None = None
    #: Seconds from the request until the first text or tool-call delta.
    first_token_timeout: Seconds = 10.0


@dataclass
class OpenAIASROptions(OpenAIConnectionOptions):
    """``asr`` ``openai``: one request per utterance (16 kHz WAV upload)."""

    #: e.g. "gpt-4o-mini-transcribe", "gpt-4o-transcribe", "whisper-1".
    model: str = "gpt-4o-mini-transcribe"
    #: ISO-639-1 code ("en", "zh"); unset lets the model detect the language.
    language: str | None = None
    #: Optional text to guide the model (names, spelling, previous sentence).
    prompt: str | None = None
    temperature: float | None = None
    total_timeout: Seconds = 30.0


@dataclass
class OpenAITTSOptions(OpenAIConnectionOptions):
    """``tts`` ``openai``: ``/audio/speech`` with ``response_format="pcm"``, streamed."""

    #: e.g. "gpt-4o-mini-tts", "tts-1", "tts-1-hd".
    model: str = "gpt-4o-mini-tts"
    #: Default voice; ``synthesize(voice=...)`` overrides it per call.
    voice: str = "alloy"
    #: 0.25 .. 4.0 (server default 1.0 when unset).
    speed: Annotated[float, at.Interval(ge=0.25, le=4.0)] | None = None
    #: Speaking style for models that accept it (not tts-1 / tts-1-hd).
    instructions: str | None = None
    #: Sample rate of the server's raw PCM. OpenAI's "pcm" is 24 kHz 16-bit mono.
    sample_rate: Annotated[int, at.Ge(8000)] = 24000
    #: Seconds from the request until the first audio bytes.
    first_chunk_timeout: Seconds = 10.0


@dataclass
class OpenAIVisionOptions(OpenAIConnectionOptions):
    """``vision`` ``openai``: one chat completion with the photo as an image part."""

    #: A model that accepts images: "gpt-4o-mini", "qwen-vl-plus" (DashScope compatible
    #: mode), "llava" / "qwen2.5vl" (Ollama), any vLLM-served VLM.
    model: str = "gpt-4o-mini"
    #: Sent as the system message; the answer is read out by the voice assistant.
    system_prompt: str = (
        "Answer the question about the photo briefly, in plain sentences "
        "without lists or markup; the answer will be spoken."
    )
    #: OpenAI's image ``detail`` ("low", "high", "auto"); unset: not sent (some
    #: compatible servers reject unknown fields).
    detail: Literal["low", "high", "auto"] | None = None
    max_tokens: Annotated[int, at.Ge(1)] | None = 300
    temperature: float | None = None
    total_timeout: Seconds = 30.0


@dataclass
class OpenAIChatRequest:
    """Per-request options a profile may set for the ``openai`` LLM (``profiles.X.llm``).

    >>> OpenAIChatRequest(temperature=3.0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be between 0 and 2, got 3.0
    """

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.temperature is not None and not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be between 0 and 2, got {self.temperature}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")


@dataclass
class OpenAISpeechRequest:
    """Per-request options a profile may set for the ``openai`` TTS (``profiles.X.tts``;
    the voice is the profile's ``voice``)."""

    model: str | None = None
    speed: float | None = None
    instructions: str | None = None

    def __post_init__(self) -> None:
        if self.speed is not None and not 0.25 <= self.speed <= 4.0:
            raise ValueError(f"speed must be between 0.25 and 4.0, got {self.speed}")


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    """The ``openai`` LLM, ASR, TTS and vision providers."""
    return [
        ProviderSpec(
            role=Role.LLM,
            name="openai",
            execution=Execution.IO,
            factory="xiaozhi_openai.llm:OpenAILLM",
            options=OpenAILLMOptions,
            capabilities=frozenset({"tools"}),
            request_options=OpenAIChatRequest,
            description="OpenAI-compatible chat completions (streamed, tool calls)",
        ),
        ProviderSpec(
            role=Role.ASR,
            name="openai",
            execution=Execution.IO,
            factory="xiaozhi_openai.asr:OpenAIASR",
            options=OpenAIASROptions,
            capabilities=frozenset({"multilingual"}),
            description="OpenAI-compatible audio transcription of whole utterances",
        ),
        ProviderSpec(
            role=Role.TTS,
            name="openai",
            execution=Execution.IO,
            factory="xiaozhi_openai.tts:OpenAITTS",
            options=OpenAITTSOptions,
            capabilities=frozenset({"multilingual"}),
            request_options=OpenAISpeechRequest,
            description="OpenAI-compatible speech, streamed as raw 24 kHz PCM",
        ),
        ProviderSpec(
            role=Role.VISION,
            name="openai",
            execution=Execution.IO,
            factory="xiaozhi_openai.vision:OpenAIVision",
            options=OpenAIVisionOptions,
            description="OpenAI-compatible vision chat (image part) explaining a photo",
        ),
    ]
