"""Entry point of ``xiaozhi-espeak``: the ``espeak`` TTS provider's spec and options.

Cheap to import: libespeak-ng is loaded only when a deployment builds the provider
(``factory`` is a string).

Example:
    >>> [spec] = xiaozhi_providers()
    >>> spec.role, spec.name, spec.execution, sorted(spec.capabilities)
    (<Role.TTS: 'tts'>, 'espeak', <Execution.CPU: 'cpu'>, ['multilingual'])
    >>> spec.validate({"voice": "cmn", "sample_rate": 16000}).voice
    'cmn'
    >>> spec.validate({"sample_rate": 16000}).sample_rate
    16000
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at

from xiaozhi_core.hookspecs import hookimpl
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.types import Execution, Role

__all__ = ["EspeakOptions", "voice_for_language", "xiaozhi_providers"]

#: espeak-ng voices for a language code whose own code differs (Chinese is ``cmn``).
_VOICES = {"zh": "cmn", "en": "en-us"}
#: espeak-ng language codes → the session's language code.
_LANGUAGE_OF = {"cmn": "zh", "yue": "zh", "zh": "zh", "hak": "zh"}


def voice_for_language(options: object, language: str, voice: str | None) -> str | None:
    """The espeak voice for ``language`` (the spec's ``voice_for_language``): None when
    ``voice`` (else the options' voice) speaks it, else the language's voice (``cmn``
    for ``zh``; any other code is an espeak language code itself).

    >>> o = EspeakOptions()
    >>> voice_for_language(o, "zh", None), voice_for_language(o, "en", None)
    ('cmn', None)
    >>> voice_for_language(o, "en", "cmn"), voice_for_language(o, "zh", "yue+f2")
    ('en-us', None)
    >>> voice_for_language(o, "fr", None)
    'fr'
    """
    current = (voice or str(getattr(options, "voice", ""))).lower()
    base = current.split("+", 1)[0].split("-", 1)[0].split("/")[-1]
    if _LANGUAGE_OF.get(base, base) == language:
        return None
    return _VOICES.get(language, language)


@dataclass(frozen=True)
class EspeakOptions:
    """Options of the ``espeak`` TTS provider (``tts.options`` in a deployment config)."""

    #: espeak-ng voice: a language code ("en-us", "cmn", "yue", "fr"...), a voice name or
    #: identifier, optionally with a variant ("en-us+f3"). `python -m xiaozhi_espeak voices`.
    voice: Annotated[str, at.MinLen(1)] = "en-us"
    #: Speaking rate in words per minute (80-450).
    rate: Annotated[int, at.Interval(ge=80, le=450)] = 175
    #: Base pitch, 0-100 (50 is the voice's normal pitch).
    pitch: Annotated[int, at.Interval(ge=0, le=100)] = 50
    #: Pitch range (intonation), 0-100: 0 is monotone, 50 normal.
    pitch_range: Annotated[int, at.Interval(ge=0, le=100)] = 50
    #: Volume, 0-200 (100 is normal; above it espeak compresses and may distort).
    volume: Annotated[int, at.Interval(ge=0, le=200)] = 100
    #: Output sample rate of the PCM16 stream (espeak renders at 22050 Hz; resampled).
    sample_rate: Literal[16000, 24000] = 24000
    #: Length of each streamed chunk, in milliseconds (10-2000).
    chunk_ms: Annotated[int, at.Interval(ge=10, le=2000)] = 100
    #: Add espeak's sentence pause after each text (keeps sentences apart when the
    #: core sends a reply sentence by sentence).
    end_pause: bool = True

    def __post_init__(self) -> None:
        if not self.voice.strip():
            raise ValueError("voice: must not be empty (e.g. 'en-us' or 'cmn')")


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            role=Role.TTS,
            name="espeak",
            execution=Execution.CPU,
            factory="xiaozhi_espeak.tts:EspeakTTS",
            options=EspeakOptions,
            capabilities=frozenset({"multilingual"}),
            voice_for_language=voice_for_language,
            description="eSpeak NG formant synthesis via libespeak-ng (ctypes); ~100 "
            "languages incl. Mandarin; tiny and fast, robotic voice (GPL-3.0+)",
        )
    ]
