"""Entry point of the ``xiaozhi-example`` distribution: ``echo`` (LLM) and ``sine`` (TTS).

The entry point names this module, so it must stay cheap to import: options
dataclasses and provider specs only. The implementations (and any heavy import: SDKs,
onnxruntime, model weights) live in :mod:`xiaozhi_example.echo` and
:mod:`xiaozhi_example.sine`, which the core imports only when a deployment selects the
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

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = ["EchoOptions", "SineOptions", "xiaozhi_providers"]


@dataclass(frozen=True)
class EchoOptions:
    """Options of the ``echo`` LLM (``llm.options`` in a deployment config)."""

    #: Put before the echoed words.
    prefix: str = "You said:"
    #: Pause between streamed words, in seconds (imitates a remote model's pace).
    word_delay: float = 0.0

    def __post_init__(self) -> None:
        # A ValueError here becomes a ConfigError naming the key path.
        if self.word_delay < 0:
            raise ValueError(f"word_delay {self.word_delay} must be >= 0")


@dataclass(frozen=True)
class SineOptions:
    """Options of the ``sine`` TTS (``tts.options`` in a deployment config)."""

    #: Output sample rate of the PCM16 mono stream, in Hz.
    sample_rate: int = 16000
    #: Tone frequency, in Hz.
    frequency: float = 440.0
    #: Audio produced per character of text, in seconds.
    seconds_per_char: float = 0.06
    #: Peak amplitude, 0..1 of full scale.
    amplitude: float = 0.3
    #: Length of each yielded chunk, in milliseconds.
    chunk_ms: int = 100

    def __post_init__(self) -> None:
        if not 8000 <= self.sample_rate <= 48000:
            raise ValueError(f"sample_rate {self.sample_rate} must be in 8000..48000 Hz")
        if not 0 < self.frequency < self.sample_rate / 2:
            raise ValueError(f"frequency {self.frequency} Hz must be below half the sample "
                             f"rate ({self.sample_rate // 2} Hz)")
        if not 0 < self.amplitude <= 1:
            raise ValueError(f"amplitude {self.amplitude} must be in (0, 1]")
        if self.seconds_per_char <= 0 or self.chunk_ms < 10:
            raise ValueError("seconds_per_char must be > 0 and chunk_ms >= 10")


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    """The providers of this package, described as data."""
    return [
        ProviderSpec(
            role=Role.LLM,
            name="echo",
            # io: chat() is an async generator, awaited on the event loop.
            execution=Execution.IO,
            factory="xiaozhi_example.echo:EchoLLM",
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
            factory="xiaozhi_example.sine:SineTTS",
            options=SineOptions,
            description="a sine tone whose length follows the text (template provider)",
        ),
    ]
