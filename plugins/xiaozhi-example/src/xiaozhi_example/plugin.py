"""Entry point of the ``xiaozhi-example`` distribution: ``echo`` (LLM) and ``sine`` (TTS).

The entry point names this module, so it must stay cheap to import: options
dataclasses and provider specs only. The implementations (and any heavy import: SDKs,
onnxruntime, model weights) live in :mod:`xiaozhi_example.llm` and
:mod:`xiaozhi_example.tts`, which the core imports only when a deployment selects the
provider, because the factories are given as ``"module:attr"`` strings.

Example:
    >>> from xiaozhi_core.registry import Registry
    >>> import xiaozhi_example.plugin
    >>> registry = Registry()
    >>> registry.register(xiaozhi_example.plugin)
    >>> [(str(s.role), s.name, str(s.execution)) for s in registry.specs()]
    [('llm', 'echo', 'io'), ('tts', 'sine', 'cpu')]
    >>> registry.get("tts", "sine").validate({"frequency": 880}).frequency
    880.0
    >>> registry.get("tts", "sine").validate({"frequency": 9000}, path="tts.options")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: tts.options: frequency 9000.0 Hz must be below half ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = ["EchoOptions", "SineOptions", "xiaozhi_providers"]


@dataclass(frozen=True)
class EchoOptions:
    """Options of the ``echo`` LLM (``llm.options`` in a deployment config)."""

    #: Put before the echoed words.
    prefix: str = "You said:"
    # Ranges are annotated_types constraints: checked when a config is validated, listed
    # in the JSON Schema and docs/configuration.md, and cheap to import.
    #: Pause between streamed words, in seconds (imitates a remote model's pace).
    word_delay: Annotated[float, at.Ge(0)] = 0.0


@dataclass(frozen=True)
class SineOptions:
    """Options of the ``sine`` TTS (``tts.options`` in a deployment config)."""

    #: Output sample rate of the PCM16 mono stream, in Hz.
    sample_rate: Annotated[int, at.Interval(ge=8000, le=48000)] = 16000
    #: Tone frequency, in Hz.
    frequency: Annotated[float, at.Gt(0)] = 440.0
    #: Audio produced per character of text, in seconds.
    seconds_per_char: Annotated[float, at.Gt(0)] = 0.06
    #: Peak amplitude, 0..1 of full scale.
    amplitude: Annotated[float, at.Interval(gt=0, le=1)] = 0.3
    #: Length of each yielded chunk, in milliseconds.
    chunk_ms: Annotated[int, at.Ge(10)] = 100

    def __post_init__(self) -> None:
        # What types cannot say (a relation between two options) is checked here; a
        # ValueError becomes a ConfigError naming the key path.
        if self.frequency >= self.sample_rate / 2:
            raise ValueError(
                f"frequency {self.frequency} Hz must be below half the sample "
                f"rate ({self.sample_rate // 2} Hz)"
            )


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    """The providers of this package, described as data."""
    return [
        ProviderSpec(
            role=Role.LLM,
            name="echo",
            # io: chat() is an async generator, awaited on the event loop.
            execution=Execution.IO,
            factory="xiaozhi_example.llm:EchoLLM",
            options=EchoOptions,
            capabilities=frozenset({"tools"}),
            description="echoes the last user message word by word; calls get_time when "
            "asked for the time (template provider)",
        ),
        ProviderSpec(
            role=Role.TTS,
            name="sine",
            # cpu: synthesize() is a plain generator, run in the core's worker pool.
            execution=Execution.CPU,
            factory="xiaozhi_example.tts:SineTTS",
            options=SineOptions,
            description="a sine tone whose length follows the text (template provider)",
        ),
    ]
