"""Entry point of the ``dashscope`` plugin: option schemas and provider specs.

Cheap to import (no SDK): the factories are named as strings, so the DashScope SDK
loads only when a deployment selects one of these providers.

Example:
    >>> specs = {s.name: s for s in xiaozhi_providers()}
    >>> sorted(specs)
    ['cosyvoice', 'paraformer', 'qwen', 'qwen_vl']
    >>> specs["paraformer"].execution, sorted(specs["paraformer"].capabilities)
    (<Execution.IO: 'io'>, ['multilingual', 'streaming'])
    >>> specs["qwen"].validate({"model": "qwen-turbo"}, path="llm.options").model
    'qwen-turbo'
    >>> specs["cosyvoice"].validate({"sample_rate": 44000}, path="tts.options")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: tts.options.sample_rate: ...44000... is not allowed; ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import annotated_types as at

from xiaozhi_core.hookspecs import hookimpl
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.types import Execution, Role

__all__ = [
    "CosyVoiceOptions",
    "ParaformerOptions",
    "QwenOptions",
    "QwenVLOptions",
    "xiaozhi_providers",
]


@dataclass
class QwenOptions:
    """``llm.options`` of provider ``qwen`` (DashScope Generation API, streamed)."""

    #: Any DashScope text-generation model: qwen-turbo, qwen-plus, qwen-max, qwen3-*...
    model: str = "qwen-plus"
    #: API key; when unset, the ``DASHSCOPE_API_KEY`` environment variable.
    api_key: str | None = None
    #: HTTP API root; unset = the SDK default (``https://dashscope.aliyuncs.com/api/v1``,
    #: or ``DASHSCOPE_HTTP_BASE_URL``). International: ``https://dashscope-intl.aliyuncs.com/api/v1``.
    base_http_url: str | None = None
    temperature: Annotated[float, at.Interval(ge=0, lt=2)] | None = None
    top_p: Annotated[float, at.Interval(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, at.Ge(1)] | None = None
    #: Let Qwen search the web (costs extra; slower first token).
    enable_search: bool = False
    #: Qwen3 hybrid models: think before answering (slow for voice; null = model default).
    enable_thinking: bool | None = None
    #: Seconds without any data from the server (connect, first token, between chunks).
    timeout: Annotated[float, at.Gt(0)] = 30.0
    #: Extra Generation parameters passed as they are (e.g. ``{seed: 1, stop: ["。"]}``).
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParaformerOptions:
    """``asr.options`` of provider ``paraformer`` (real-time recognition over WebSocket)."""

    #: paraformer-realtime-v2 (zh, en, ja, yue, ko, de, fr, ru), paraformer-realtime-v1 (zh),
    #: fun-asr-realtime...; 16 kHz models only (the core's audio is 16 kHz).
    model: str = "paraformer-realtime-v2"
    api_key: str | None = None
    #: WebSocket endpoint; unset = the SDK default (``wss://dashscope.aliyuncs.com/api-ws/v1/inference``,
    #: or ``DASHSCOPE_WEBSOCKET_BASE_URL``). International: ``wss://dashscope-intl.aliyuncs.com/api-ws/v1/inference``.
    base_websocket_url: str | None = None
    #: The audio sent: 16 kHz mono PCM16 (what the core delivers).
    sample_rate: Literal[16000] = 16000
    format: Literal["pcm"] = "pcm"
    #: Languages to expect (paraformer-realtime-v2), e.g. ``[zh, en]``; a ``language``
    #: passed by the core for one utterance replaces them.
    language_hints: list[str] | None = None
    #: Seconds allowed to connect and start the task, and, after ``finish()``, to get
    #: the final result.
    timeout: Annotated[float, at.Gt(0)] = 10.0
    #: Seconds a stream may go without any message from the server before it is
    #: declared dead (the user may be silent for a while: keep it generous).
    idle_timeout: Annotated[float, at.Gt(0)] = 60.0
    #: Frame size used by ``transcribe()`` (the service recommends ~100 ms).
    chunk_ms: Annotated[int, at.Ge(1)] = 100
    #: Most audio buffered while the connection is not ready or the server lags.
    max_buffered_seconds: Annotated[float, at.Gt(0)] = 30.0
    #: Extra task parameters passed as they are (e.g. ``{vocabulary_id: ...,
    #: disfluency_removal_enabled: true, max_sentence_silence: 800}``).
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class CosyVoiceOptions:
    """``tts.options`` of provider ``cosyvoice`` (streaming synthesis over WebSocket)."""

    #: cosyvoice-v2 (voices ``*_v2``), cosyvoice-v1 (voices without suffix), cosyvoice-v3...
    model: str = "cosyvoice-v2"
    #: Voice of the model, e.g. longxiaochun_v2 (cosyvoice-v2), longxiaochun (cosyvoice-v1).
    voice: str = "longxiaochun_v2"
    #: PCM16 mono output rate (the rates CosyVoice offers for PCM).
    sample_rate: Literal[8000, 16000, 22050, 24000, 44100, 48000] = 24000
    #: 0..100
    volume: Annotated[int, at.Interval(ge=0, le=100)] = 50
    #: Speech rate and pitch, 0.5..2.0.
    rate: Annotated[float, at.Interval(ge=0.5, le=2.0)] = 1.0
    pitch: Annotated[float, at.Interval(ge=0.5, le=2.0)] = 1.0
    api_key: str | None = None
    base_websocket_url: str | None = None
    #: Seconds allowed to connect and start, to get the first audio, and between chunks.
    timeout: Annotated[float, at.Gt(0)] = 10.0
    #: Audio chunks the receiving thread may hold ahead of the consumer.
    buffer_chunks: Annotated[int, at.Ge(1)] = 32
    #: Extra task parameters passed as they are (e.g. ``{language_hints: [zh]}``).
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class QwenVLOptions:
    """``vision.options`` of provider ``qwen_vl`` (DashScope multimodal generation)."""

    #: qwen-vl-plus, qwen-vl-max, qwen2.5-vl-*, qwen3-vl-*...
    model: str = "qwen-vl-plus"
    api_key: str | None = None
    #: HTTP API root; unset: ``https://dashscope.aliyuncs.com/api/v1``. International:
    #: ``https://dashscope-intl.aliyuncs.com/api/v1``.
    base_http_url: str | None = None
    #: Sent as the system message; the answer is read out by the voice assistant.
    system_prompt: str = (
        "Answer the question about the photo briefly, in plain sentences "
        "without lists or markup; the answer will be spoken."
    )
    max_tokens: Annotated[int, at.Ge(1)] | None = 300
    temperature: Annotated[float, at.Interval(ge=0, lt=2)] | None = None
    #: Seconds for the whole request (the device waits: keep server.timeouts.mcp above).
    timeout: Annotated[float, at.Gt(0)] = 30.0
    #: Extra generation parameters passed as they are (e.g. ``{vl_high_resolution_images:
    #: true}``).
    parameters: dict[str, Any] = field(default_factory=dict)


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    """The four DashScope providers (all ``io``: the work is on Alibaba's servers)."""
    return [
        ProviderSpec(
            role=Role.LLM,
            name="qwen",
            execution=Execution.IO,
            factory="xiaozhi_dashscope.llm:QwenLLM",
            options=QwenOptions,
            capabilities=frozenset({"tools"}),
            description="Qwen chat via DashScope's Generation API (streamed, tool calls)",
        ),
        ProviderSpec(
            role=Role.ASR,
            name="paraformer",
            execution=Execution.IO,
            factory="xiaozhi_dashscope.asr:ParaformerASR",
            options=ParaformerOptions,
            capabilities=frozenset({"streaming", "multilingual"}),
            description="DashScope Paraformer real-time recognition (WebSocket, partials)",
        ),
        ProviderSpec(
            role=Role.TTS,
            name="cosyvoice",
            execution=Execution.IO,
            factory="xiaozhi_dashscope.tts:CosyVoiceTTS",
            options=CosyVoiceOptions,
            capabilities=frozenset({"multilingual"}),
            description="DashScope CosyVoice streaming synthesis (WebSocket, PCM16)",
        ),
        ProviderSpec(
            role=Role.VISION,
            name="qwen_vl",
            execution=Execution.IO,
            factory="xiaozhi_dashscope.vision:QwenVL",
            options=QwenVLOptions,
            description="Qwen-VL via DashScope's multimodal generation API (photo + question)",
        ),
    ]
