"""``asr`` ``openai``: transcription of a whole utterance (``POST /audio/transcriptions``).

The 16 kHz int16 utterance is wrapped in a WAV file in memory and uploaded.
"""

from __future__ import annotations

import io
import json
import wave

import numpy as np
import openai

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.types import ASRResult

from ._common import Budget, make_client, map_error
from .plugin import OpenAIASROptions

__all__ = ["SAMPLE_RATE", "OpenAIASR", "normalize_language", "pcm_to_wav"]

#: Rate of the audio the core hands to ASR providers.
SAMPLE_RATE = 16000


def pcm_to_wav(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono 16-bit WAV file bytes of ``pcm`` (int16; float in [-1, 1] is converted).

    >>> wav = pcm_to_wav(np.zeros(1600, np.int16))
    >>> wav[:4], wav[8:12], len(wav) - 44
    (b'RIFF', b'WAVE', 3200)
    """
    samples = np.asarray(pcm)
    if samples.ndim != 1:
        samples = samples.reshape(-1)
    if np.issubdtype(samples.dtype, np.floating):
        samples = np.clip(samples, -1.0, 1.0) * 32767.0
    samples = samples.astype("<i2", copy=False)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def normalize_language(language: str | None) -> str | None:
    """The ISO-639-1 code the API expects.

    >>> normalize_language("zh-CN"), normalize_language("EN_us"), normalize_language(None)
    ('zh', 'en', None)
    """
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].lower() or None


class OpenAIASR:
    """Transcribes utterances with an OpenAI-compatible ``/audio/transcriptions``."""

    def __init__(self, options: OpenAIASROptions) -> None:
        self.options = options
        self.client, self.target = make_client(options, "asr", options.model)

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> ASRResult:
        lang = normalize_language(language or self.options.language)
        if len(pcm) == 0:
            return ASRResult("", language=lang)
        o = self.options
        params: dict[str, object] = {
            "file": ("utterance.wav", pcm_to_wav(pcm), "audio/wav"),
            "model": o.model,
            "response_format": "json",
        }
        if lang:
            params["language"] = lang
        if o.prompt:
            params["prompt"] = o.prompt
        if o.temperature is not None:
            params["temperature"] = o.temperature
        if o.extra_body:
            params["extra_body"] = dict(o.extra_body)
        budget = Budget(self.target, "transcription", o.total_timeout)
        try:
            result = await budget.step(self.client.audio.transcriptions.create(**params))  # type: ignore[call-overload]
        except (openai.OpenAIError, json.JSONDecodeError, OSError) as exc:
            raise map_error(exc, self.target, "transcription") from exc
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise ProviderError(
                f"{self.target.label}: transcription failed: the reply has no 'text' field "
                f"({str(result)[:200]!r}); is base_url an OpenAI-compatible API?"
            )
        return ASRResult(text.strip(), final=True, language=lang)

    async def close(self) -> None:
        await self.client.close()
