"""Entry point of the ``xiaozhi-voiceprint`` distribution (cheap to import: no numpy model).

It declares one ``cpu`` voiceprint provider, ``resemblyzer``: speaker embeddings from
Resemblyzer's pretrained GE2E speaker encoder, computed in numpy.

    >>> [(s.role.value, s.name, s.execution.value) for s in xiaozhi_providers()]
    [('voiceprint', 'resemblyzer', 'cpu')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = ["ResemblyzerOptions", "xiaozhi_providers"]


@dataclass
class ResemblyzerOptions:
    """Options of the ``resemblyzer`` voiceprint provider.

    >>> [spec] = xiaozhi_providers()
    >>> spec.validate({"threshold": 1.5}, path="voiceprint.options")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: voiceprint.options.threshold: must be in 0.0..1.0, got 1.5
    """

    #: Minimum cosine similarity between an utterance and an enrolled voice for
    #: ``identify`` to name that speaker; below it the speaker is unknown.
    threshold: Annotated[float, at.Interval(ge=0.0, le=1.0)] = 0.80
    #: Where enrolled voices are kept (one JSON file per speaker). Default:
    #: ``$XDG_DATA_HOME/xiaozhi/voiceprints`` (``~/.local/share/xiaozhi/voiceprints``).
    store_dir: str | None = None
    #: The encoder checkpoint. Default: ``pretrained.pt`` of the installed ``resemblyzer``.
    weights_path: str | None = None
    #: Drop pauses longer than ~0.25 s (and trailing silence) before embedding, as
    #: Resemblyzer's preprocessing does.
    trim_silence: bool = True
    #: Seconds of speech (after trimming) an utterance needs; shorter ones are refused.
    min_seconds: Annotated[float, at.Gt(0)] = 1.0


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            role=Role.VOICEPRINT,
            name="resemblyzer",
            execution=Execution.CPU,
            factory="xiaozhi_voiceprint.voiceprint:ResemblyzerVoiceprint",
            options=ResemblyzerOptions,
            description="speaker embeddings from Resemblyzer's GE2E encoder, in numpy "
            "(weights from the resemblyzer package; no torch)",
        )
    ]
