"""Entry point of the ``edge_tts`` plugin: the ``edge`` TTS provider's options and spec.

Cheap to import: neither edge-tts, aiohttp nor PyAV is imported here; the factory is
named as a string and loads only when a deployment selects ``tts.provider: edge``.

Example:
    >>> [spec] = xiaozhi_providers()
    >>> spec.role, spec.name, spec.execution
    (<Role.TTS: 'tts'>, 'edge', <Execution.IO: 'io'>)
    >>> spec.validate({"voice": "zh-CN-XiaoxiaoNeural", "sample_rate": 16000}).voice
    'zh-CN-XiaoxiaoNeural'
    >>> spec.validate({"rate": "10%"}, path="tts.options")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: tts.options: edge: rate '10%' must look like '+10%' or...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at

from xiaozhi_core.hookspecs import hookimpl
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.types import Execution, Role

__all__ = ["LANGUAGE_VOICES", "EdgeTTSOptions", "voice_for_language", "xiaozhi_providers"]

# The shapes edge-tts accepts (it checks them again; these give config-time errors).
_PERCENT = re.compile(r"^[+-]\d+%$")
_HERTZ = re.compile(r"^[+-]\d+Hz$")
#: Short names ("en-US-AriaNeural", "zh-CN-liaoning-XiaobeiNeural") or the long form
#: edge-tts also takes ("Microsoft Server Speech Text to Speech Voice (en-US, AriaNeural)").
_VOICE = re.compile(
    r"^([a-z]{2,}-[A-Z]{2,}-.+Neural|Microsoft Server Speech Text to Speech Voice \(.+,.+\))$"
)


def voice_problem(voice: str) -> str | None:
    """Why ``voice`` cannot be an Edge voice name, or None if it looks like one.

    >>> voice_problem("zh-CN-YunxiNeural") is None
    True
    >>> voice_problem("aria")
    "voice 'aria' is not an Edge voice name such as 'en-US-AriaNeural' or 'zh-CN-XiaoxiaoNeural'"
    """
    if _VOICE.match(voice):
        return None
    return (
        f"voice {voice!r} is not an Edge voice name such as 'en-US-AriaNeural' or "
        "'zh-CN-XiaoxiaoNeural'"
    )


#: The voice for a language when the configured one does not speak it.
LANGUAGE_VOICES = {
    "zh": "zh-CN-XiaoxiaoNeural",
    "en": "en-US-AriaNeural",
    "ja": "ja-JP-NanamiNeural",
    "ko": "ko-KR-SunHiNeural",
    "fr": "fr-FR-DeniseNeural",
    "de": "de-DE-KatjaNeural",
    "es": "es-ES-ElviraNeural",
}


def _locale_language(voice: str) -> str:
    """``zh-CN-XiaoxiaoNeural`` → ``zh``; the long form's ``(en-US, AriaNeural)`` → ``en``."""
    m = re.search(r"\(([a-z]{2,})-", voice)
    return m[1] if m else voice.split("-", 1)[0].lower()


def voice_for_language(options: object, language: str, voice: str | None) -> str | None:
    """The Edge voice for ``language`` (the spec's ``voice_for_language``): None when
    ``voice`` (else the options' voice) is already of that language, else a native one.
    A multilingual English voice reads Chinese with an accent, so Chinese gets a
    Chinese voice.

    >>> o = EdgeTTSOptions()
    >>> voice_for_language(o, "zh", None), voice_for_language(o, "en", None)
    ('zh-CN-XiaoxiaoNeural', None)
    >>> voice_for_language(o, "zh", "zh-CN-YunxiNeural") is None
    True
    >>> voice_for_language(o, "en", "zh-CN-YunxiNeural"), voice_for_language(o, "xx", None)
    ('en-US-AriaNeural', None)
    """
    current = voice or str(getattr(options, "voice", ""))
    if _locale_language(current) == language:
        return None
    return LANGUAGE_VOICES.get(language)


@dataclass
class EdgeTTSOptions:
    """``tts.options`` of provider ``edge``."""

    #: Voice short name. Multilingual voices read text in any language they support;
    #: Chinese: zh-CN-XiaoxiaoNeural, zh-CN-YunxiNeural... (``edge-tts --list-voices``).
    voice: str = "en-US-EmmaMultilingualNeural"
    #: Speaking rate relative to normal, "+0%", "+20%", "-10%".
    rate: str = "+0%"
    #: Volume relative to normal, "+0%", "-50%".
    volume: str = "+0%"
    #: Pitch shift, "+0Hz", "+5Hz", "-10Hz".
    pitch: str = "+0Hz"
    #: PCM16 mono rate of the output (Edge sends 24 kHz MP3; 16000 is resampled).
    sample_rate: Literal[16000, 24000] = 24000
    #: Seconds allowed to open the TCP (and TLS) connection.
    connect_timeout: Annotated[float, at.Gt(0)] = 10.0
    #: Seconds the service may stay silent: after connecting until the first message,
    #: and between messages. A stalled stream raises ProviderTimeout.
    receive_timeout: Annotated[float, at.Gt(0)] = 10.0
    #: HTTP proxy for the WebSocket, e.g. "http://proxy:3128". Unset: the WSS_PROXY and
    #: NO_PROXY environment variables (aiohttp picks proxies by URL scheme, so
    #: HTTPS_PROXY does not apply to wss://).
    proxy: str | None = None
    #: WebSocket URL of the read-aloud service (a relay, or a test server). Unset:
    #: edge-tts's own wss://speech.platform.bing.com/.../edge/v1 URL.
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if problem := voice_problem(self.voice):
            raise ValueError(f"edge: {problem} (list them with `edge-tts --list-voices`)")
        for name in ("rate", "volume"):
            value = getattr(self, name)
            if not _PERCENT.match(value):
                raise ValueError(
                    f"edge: {name} {value!r} must look like '+10%' or '-25%' (a signed percentage)"
                )
        if not _HERTZ.match(self.pitch):
            raise ValueError(f"edge: pitch {self.pitch!r} must look like '+5Hz' or '-10Hz'")
        if self.proxy is not None and not self.proxy.startswith(("http://", "https://")):
            raise ValueError(f"edge: proxy {self.proxy!r} must be an http:// or https:// URL")
        if self.endpoint is not None and not self.endpoint.startswith(("ws://", "wss://")):
            raise ValueError(f"edge: endpoint {self.endpoint!r} must be a ws:// or wss:// URL")


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    """The ``edge`` TTS provider (``io``: synthesis happens on Microsoft's servers)."""
    return [
        ProviderSpec(
            role=Role.TTS,
            name="edge",
            execution=Execution.IO,
            factory="xiaozhi_edge_tts.tts:EdgeTTS",
            options=EdgeTTSOptions,
            capabilities=frozenset({"multilingual"}),
            voice_for_language=voice_for_language,
            description="Microsoft Edge read-aloud voices via edge-tts (WebSocket, MP3 "
            "decoded in-process by PyAV), no API key",
        ),
    ]
