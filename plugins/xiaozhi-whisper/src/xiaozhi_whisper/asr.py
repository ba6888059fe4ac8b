"""The Whisper ASR provider: faster-whisper on CTranslate2, CPU only, offline.

One :class:`WhisperASR` per process, shared by every session. Concurrency: the core runs
``transcribe`` from several pool threads at once. faster-whisper keeps no per-call state
on the model object, and CTranslate2's compute methods are thread-safe and release the
GIL; they dispatch each call to one of ``num_workers`` model replicas (weights shared on
CPU), so with ``num_workers`` equal to the pool size the calls run truly in parallel,
each on ``cpu_threads`` threads, and with fewer workers they queue inside CTranslate2.

Decoding is tuned for short voice-assistant turns: greedy (``beam_size`` 1) at
temperature 0 without the temperature fallback (bounded, deterministic latency), no
timestamps, and no conditioning on previous text (each utterance stands alone).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

# Before faster-whisper imports huggingface_hub (and, for vad_filter, onnxruntime). The
# model is always given as a local directory, so nothing would be fetched anyway.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.types import ASRResult

from ._chinese import tidy_chinese
from ._models import resolve_model_dir
from .plugin import WhisperOptions, normalize_language

__all__ = ["MIN_SAMPLES", "SAMPLE_RATE", "WhisperASR"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: Shorter utterances (0.1 s) hold no word: they return an empty text without inference.
MIN_SAMPLES = SAMPLE_RATE // 10
_WHO = "whisper ASR"


class WhisperASR:
    """``cpu`` ASR provider (factory of the ``whisper`` and ``whisper_multilingual`` specs).

    Attributes useful to operators: ``model_dir`` (what was loaded), ``multilingual``,
    ``languages`` and ``load_seconds``.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, options: WhisperOptions | None = None) -> None:
        self.options = options = options or WhisperOptions()
        self.model_dir, self.model_label = resolve_model_dir(
            options.model, options.model_path, options.cache_dir
        )
        supported = ctranslate2.get_supported_compute_types("cpu")
        if (
            options.compute_type not in ("default", "auto")
            and options.compute_type not in supported
        ):
            raise ProviderError(
                f"{_WHO}: compute_type {options.compute_type!r} is not supported by this CPU; "
                f"supported: {', '.join(sorted(supported))}"
            )
        t0 = time.perf_counter()
        try:
            self._model: WhisperModel | None = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type=options.compute_type,
                cpu_threads=options.cpu_threads,
                num_workers=options.num_workers,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ProviderError(
                f"{_WHO}: cannot load the CTranslate2 Whisper model in {self.model_dir}: {exc}"
            ) from exc
        self.load_seconds = time.perf_counter() - t0
        self.multilingual: bool = bool(self._model.model.is_multilingual)
        self.languages: frozenset[str] = frozenset(self._model.supported_languages)
        if options.require_multilingual and not self.multilingual:
            raise ProviderError(
                f"{_WHO}: {self.model_label} is English-only, but provider "
                "'whisper_multilingual' promises several languages; use model: base, or "
                "provider 'whisper' for an English-only model"
            )
        if options.language is not None:
            self._check_language(options.language)
        self._close_lock = threading.Lock()
        #: Per-call languages an English-only model was asked for (warned about once).
        self._ignored: set[str] = set()
        log.info(
            "%s: loaded %s in %.2f s (compute_type=%s, cpu_threads=%d, num_workers=%d)",
            _WHO,
            self.model_label,
            self.load_seconds,
            options.compute_type,
            options.cpu_threads,
            options.num_workers,
        )

    # ------------------------------------------------------------------ helpers
    def _check_language(self, language: str) -> str:
        if language in self.languages:
            return language
        if not self.multilingual:
            raise ProviderError(
                f"{_WHO}: language {language!r} was requested, but {self.model_label} is "
                "English-only; use model: base (provider whisper_multilingual) for it"
            )
        raise ProviderError(
            f"{_WHO}: language {language!r} is not one Whisper knows; use an ISO 639-1 code "
            f"such as {', '.join(sorted(self.languages)[:8])}, …, or none to detect it"
        )

    def _language(self, language: str | None) -> str | None:
        """The language to decode in (None: detect), from the call, else the options."""
        if language is not None:
            try:
                language = normalize_language(language)
            except ValueError as exc:
                raise ProviderError(f"{_WHO}: {exc}") from None
            if language is not None and not self.multilingual and language != "en":
                # A session language (e.g. a profile's ``zh``) reaching an English-only
                # model: decode English as configured rather than fail every turn.
                if language not in self._ignored:
                    self._ignored.add(language)
                    log.warning(
                        "%s: %s is English-only; the session's language %r is ignored",
                        _WHO,
                        self.model_label,
                        language,
                    )
                language = None
        language = language or self.options.language
        if language is None:
            return None if self.multilingual else "en"
        return self._check_language(language)

    @staticmethod
    def _audio(pcm: Any) -> np.ndarray:
        """int16 16 kHz mono samples as float32 in [-1, 1), or a precise ProviderError."""
        if not isinstance(pcm, np.ndarray):
            raise ProviderError(
                f"{_WHO}: transcribe() expects a numpy int16 array of 16 kHz mono samples, "
                f"got {type(pcm).__name__}"
            )
        if pcm.dtype != np.int16:
            raise ProviderError(
                f"{_WHO}: transcribe() expects int16 samples, got dtype {pcm.dtype}; convert "
                "float audio in [-1, 1] with (x * 32767).astype(np.int16)"
            )
        if pcm.ndim != 1:
            raise ProviderError(
                f"{_WHO}: transcribe() expects a 1-D array of mono samples, got shape "
                f"{pcm.shape}; pass one channel (e.g. pcm[:, 0]) at 16 kHz"
            )
        return pcm.astype(np.float32) / 32768.0

    # ------------------------------------------------------------------ work
    def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> ASRResult:
        """Recognise one utterance (blocking; the core runs it in its worker pool)."""
        audio = self._audio(pcm)
        lang = self._language(language)
        model = self._model
        if model is None:
            raise ProviderError(f"{_WHO}: transcribe() called after close()")
        if audio.size < MIN_SAMPLES:
            return ASRResult("", language=lang)
        o = self.options
        try:
            segments, info = model.transcribe(
                audio,
                language=lang,
                beam_size=o.beam_size,
                best_of=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                initial_prompt=o.initial_prompt,
                vad_filter=o.vad_filter,
            )
            # The segments are a lazy generator: decode here, in this worker thread.
            text = "".join(segment.text for segment in segments)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError on bad state
            raise ProviderError(f"{_WHO}: transcription failed: {exc}") from exc
        return ASRResult(self._tidy(text, info.language), language=info.language)

    def _tidy(self, text: str, language: str | None) -> str:
        text = " ".join(text.split())
        if self.options.chinese_punctuation and language == "zh":
            text = tidy_chinese(text)
        return text

    def transcribe_batch(
        self, pcms: list[np.ndarray], *, language: str | None = None
    ) -> list[ASRResult]:
        """Recognise several utterances in one encoder + decoder pass (blocking).

        Used by Ray Serve's request batching (the ``batch`` capability): concurrent
        utterances of different devices share the forward passes. Utterances longer than
        one 30 s window, too short, or of unknown language (multilingual model without a
        language) go through :meth:`transcribe` one by one. Greedy/beam settings are the
        same as :meth:`transcribe`'s, without its temperature fallback.
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        if model is None:
            raise ProviderError(f"{_WHO}: transcribe_batch() called after close()")
        lang = self._language(language)
        audios = [self._audio(p) for p in pcms]
        out: list[ASRResult | None] = [None] * len(audios)
        window = model.feature_extractor.n_samples
        batch = [
            i for i, a in enumerate(audios) if MIN_SAMPLES <= a.size <= window and lang is not None
        ]
        for i in range(len(audios)):
            if i not in batch:
                out[i] = self.transcribe(pcms[i], language=language)
        if batch:
            o = self.options
            try:
                features = np.stack(
                    [pad_or_trim(model.feature_extractor(audios[i])) for i in batch]
                )
                tokenizer = Tokenizer(
                    model.hf_tokenizer,
                    model.model.is_multilingual,
                    task="transcribe",
                    language=lang,
                )
                prompt = model.get_prompt(
                    tokenizer,
                    previous_tokens=(
                        tokenizer.encode(" " + o.initial_prompt.strip()) if o.initial_prompt else []
                    ),
                    without_timestamps=True,
                )
                results = model.model.generate(
                    model.encode(features),
                    [list(prompt) for _ in batch],
                    beam_size=o.beam_size,
                    max_length=model.max_length,
                    suppress_blank=True,
                    suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
                )
            except Exception as exc:
                raise ProviderError(f"{_WHO}: batched transcription failed: {exc}") from exc
            for i, result in zip(batch, results, strict=True):
                ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
                out[i] = ASRResult(self._tidy(tokenizer.decode(ids), lang), language=lang)
        return [r for r in out if r is not None]

    def close(self) -> None:
        """Drop the model (its memory is freed when the last running call returns)."""
        with self._close_lock:
            self._model = None
