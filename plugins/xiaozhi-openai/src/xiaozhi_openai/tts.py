"""``tts`` ``openai``: ``POST /audio/speech`` with ``response_format="pcm"``, streamed.

OpenAI's ``pcm`` format is raw signed 16-bit little-endian mono at 24 kHz, sent as a
chunked body; chunks are yielded as they arrive (re-aligned to whole samples).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai

from xiaozhi_core.errors import ProviderError

from ._common import Budget, _httpx, close_quietly, make_client, map_error
from .plugin import OpenAISpeechRequest, OpenAITTSOptions

__all__ = ["OpenAITTS"]

log = logging.getLogger("xiaozhi_openai.tts")

#: Content types that mean the server sent an encoded file, not raw PCM.
_NOT_PCM = ("json", "text/", "mpeg", "mp3", "wav", "ogg", "opus", "aac", "flac", "webm")


class OpenAITTS:
    """Streams speech from an OpenAI-compatible ``/audio/speech`` as PCM16 chunks."""

    def __init__(self, options: OpenAITTSOptions) -> None:
        self.options = options
        self.sample_rate = options.sample_rate
        self.client, self.target = make_client(options, "tts", options.model)

    def _params(
        self, text: str, voice: str | None, request: OpenAISpeechRequest | None = None
    ) -> dict[str, Any]:
        o = self.options
        r = request or OpenAISpeechRequest()
        params: dict[str, Any] = {
            "model": r.model or o.model,
            "voice": voice or o.voice,
            "input": text,
            "response_format": "pcm",
        }
        speed = r.speed if r.speed is not None else o.speed
        if speed is not None:
            params["speed"] = speed
        if r.instructions or o.instructions:
            params["instructions"] = r.instructions or o.instructions
        if o.extra_body:
            params["extra_body"] = dict(o.extra_body)
        return params

    async def synthesize(
        self, text: str, *, voice: str | None = None, options: OpenAISpeechRequest | None = None
    ) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        label = self.target.label
        budget = Budget(
            self.target,
            "speech",
            self.options.total_timeout,
            self.options.first_chunk_timeout,
            "first_chunk_timeout",
        )
        request = self.client.audio.speech.with_streaming_response.create(
            **self._params(text, voice, options)
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                response = await budget.step(stack.enter_async_context(request))
                content_type = response.headers.get("content-type", "").lower()
                if any(marker in content_type for marker in _NOT_PCM):
                    raise ProviderError(
                        f"{label}: speech failed: the server sent {content_type!r} instead of "
                        "raw PCM; it does not support response_format 'pcm'"
                    )
                chunks = response.iter_bytes()
                stack.push_async_callback(close_quietly, chunks)
                carry = b""
                while True:
                    try:
                        data = await budget.step(chunks.__anext__())
                    except StopAsyncIteration:
                        break
                    if not data:
                        continue
                    budget.got_first()
                    data = carry + data
                    cut = len(data) & ~1  # whole 16-bit samples only
                    carry = data[cut:]
                    if cut:
                        yield data[:cut]
                if carry:
                    log.warning("%s: the audio ended with half a sample; dropped it", label)
                if budget.first_at is None:
                    raise ProviderError(
                        f"{label}: speech failed: the server sent no audio for {text[:40]!r}"
                    )
            except (openai.OpenAIError, _httpx.HTTPError, OSError) as exc:
                raise map_error(exc, self.target, "speech") from exc
        log.debug("%s: first audio after %.3f s", label, budget.first_at or 0.0)

    async def close(self) -> None:
        await self.client.close()
