"""Entry point of the ``xiaozhi-silero`` distribution: the ``silero`` VAD provider.

Cheap to import: only the options schema and the spec live here; onnxruntime and the
model load in :class:`xiaozhi_silero.vad.SileroVAD` when a deployment selects it.

Example:
    >>> from xiaozhi_core.registry import Registry
    >>> import xiaozhi_silero.plugin
    >>> registry = Registry()
    >>> registry.register(xiaozhi_silero.plugin)
    >>> spec = registry.get("vad", "silero")
    >>> spec.execution, sorted(spec.capabilities)
    (<Execution.CPU: 'cpu'>, ['batch'])
    >>> spec.validate({"threshold": 0.6, "min_silence_ms": 500}).release_threshold
    0.35
    >>> spec.validate({"threshold": 0.3})
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: release_threshold (0.35) must not exceed threshold (0.3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = ["SileroOptions", "xiaozhi_providers"]


@dataclass(frozen=True)
class SileroOptions:
    """Options of the ``silero`` VAD provider (``vad.options`` in a deployment config).

    ``model_path`` overrides the model file; by default it is ``silero_vad/data/
    silero_vad.onnx`` from the installed ``silero-vad`` package. The other options
    are the segmentation this VAD declares to the core (``SileroVAD.segmentation``; a
    deployment's ``session.*`` settings override them);
    durations are audio time, counted in samples.
    """

    #: A silero VAD ONNX file (v5+ interface: inputs ``input``, ``state``, ``sr``).
    model_path: str | None = None
    #: A window whose speech probability reaches this starts (or resumes) speech.
    threshold: Annotated[float, at.Interval(gt=0, le=1)] = 0.5
    #: Once in speech, windows stay voiced while their probability is at least this
    #: (hysteresis; must not exceed ``threshold``).
    release_threshold: Annotated[float, at.Ge(0)] = 0.35
    #: Voiced audio needed before a start is reported (shorter blips are dropped).
    min_speech_ms: Annotated[int, at.Ge(0)] = 250
    #: Unvoiced audio that ends an utterance (shorter pauses do not split it).
    min_silence_ms: Annotated[int, at.Ge(0)] = 700
    #: Audio before the first voiced window that is included in the utterance.
    pre_roll_ms: Annotated[int, at.Ge(0)] = 300

    def __post_init__(self) -> None:
        if self.release_threshold > self.threshold:
            raise ValueError(
                f"release_threshold ({self.release_threshold}) must not exceed "
                f"threshold ({self.threshold})"
            )
        if self.model_path is not None and not self.model_path.strip():
            raise ValueError("model_path must not be empty; omit it to use the packaged model")


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            role=Role.VAD,
            name="silero",
            execution=Execution.CPU,
            factory="xiaozhi_silero.vad:SileroVAD",
            options=SileroOptions,
            capabilities=frozenset({"batch"}),
            description="Silero VAD v5 (ONNX Runtime, one thread), windows of many streams "
            "batched into one inference call",
        )
    ]
