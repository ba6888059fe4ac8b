"""``cosyvoice``: DashScope CosyVoice speech synthesis, streamed as PCM16.

Protocol (one WebSocket per text, ``/api-ws/v1/inference``): ``run-task`` (task_group
``audio``, task ``tts``, function ``SpeechSynthesizer``; parameters ``voice``,
``format: pcm``, ``sample_rate``, ``volume``, ``rate``, ``pitch``) → ``task-started`` →
``continue-task`` carrying the text → ``finish-task`` → binary audio frames (and
``result-generated`` sentence events) → ``task-finished`` (or ``task-failed``).

The SDK's WebSocket synthesis is synchronous only (its 2.0 ``SynthesisSession``,
``dashscope.Client().audio.tts.connect``), so each ``synthesize`` runs it in one
dedicated thread (:class:`~xiaozhi_dashscope._common.SessionThread`) that hands the
audio to the loop through a bounded queue: when the consumer is slow the thread stops
reading the socket (back-pressure), and when the consumer leaves (barge-in) or is
cancelled, the socket is aborted and the thread ends at once.

Frames from the server may split a sample; chunks are re-aligned so every yielded
chunk holds whole 16-bit samples:

    >>> _Aligner().feed(b"\\x01\\x02\\x03"), _Aligner().feed(b"")
    (b'\\x01\\x02', b'')
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass

import dashscope

from xiaozhi_core.errors import ProviderError, ProviderTimeout

from ._common import SessionThread, SessionThreads, log, resolve_api_key, ws_error
from .plugin import CosyVoiceOptions

__all__ = ["CosyVoiceTTS"]

_END = object()


@dataclass
class _Failure:
    error: ProviderError


class _Aligner:
    """Keeps a trailing odd byte for the next chunk."""

    def __init__(self) -> None:
        self.carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.carry + chunk
        cut = len(data) - len(data) % 2
        self.carry = data[cut:]
        return data[:cut]


class CosyVoiceTTS:
    """``io`` TTS provider ``cosyvoice``: yields PCM16LE mono at :attr:`sample_rate`."""

    def __init__(self, options: CosyVoiceOptions) -> None:
        self.options = options
        self.sample_rate = options.sample_rate
        self._api_key = resolve_api_key(options.api_key, "cosyvoice")
        with warnings.catch_warnings():
            # The SDK flags its 2.0 audio surface as a preview (FutureWarning); the
            # version is pinned in pyproject.toml and the tests run the real code path.
            warnings.simplefilter("ignore", FutureWarning)
            client = dashscope.Client(
                api_key=self._api_key, base_url=str(dashscope.base_http_api_url)
            )
            self._audio = client.audio
        self._threads = SessionThreads()

    @property
    def ws_url(self) -> str:
        return self.options.base_websocket_url or str(dashscope.base_websocket_api_url)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        """Stream the speech of ``text`` as it is synthesised."""
        if not text.strip():
            return
        o = self.options
        url = self.ws_url

        def on_error(exc: BaseException) -> None:
            error = ws_error("cosyvoice", "synthesis task", exc, url=url, timeout=o.timeout)
            thread.queue.put_nowait(_Failure(error))

        thread = SessionThread(
            "cosyvoice", on_error=on_error, connect_timeout=o.timeout, buffer=o.buffer_chunks
        )
        session = self._audio.tts.connect(
            model=o.model,
            voice=voice or o.voice,
            format="pcm",
            sample_rate=o.sample_rate,
            volume=o.volume,
            rate=o.rate,
            pitch=o.pitch,
            parameters=dict(o.parameters) or None,
            ws_url=url,
            connector=thread.connector,
            # The loop-side watchdog below is authoritative; the socket timeout only
            # guarantees the thread ends even if the loop went away.
            timeout=o.timeout + 1.0,
            api_key=self._api_key,
        )

        def run(t: SessionThread) -> None:
            try:
                session.start()  # connect, run-task, task-started
                session.send_text(text)  # continue-task
                session.stop()  # finish-task
                for chunk in session.audio_chunks():  # until task-finished
                    if not t.put(chunk):
                        return
                t.put(_END)
            finally:
                session.close()

        self._threads.add(thread)
        thread.start(run)
        aligner = _Aligner()
        completed = got_audio = False
        try:
            while True:
                try:
                    async with asyncio.timeout(o.timeout):
                        item = await thread.queue.get()
                except TimeoutError:
                    phase = "between audio chunks" if got_audio else "before the first audio"
                    raise ProviderTimeout(
                        f"dashscope cosyvoice: nothing from {url} for {o.timeout:g} s "
                        f"{phase} (model {o.model}, voice {voice or o.voice})"
                    ) from None
                if isinstance(item, _Failure):
                    raise item.error
                thread.taken()
                if item is _END:
                    break
                chunk = aligner.feed(item)
                if chunk:
                    got_audio = True
                    yield chunk
            completed = True
            if aligner.carry:
                log.warning("cosyvoice: dropped a trailing odd byte of audio")
        finally:
            if not completed:
                thread.abort()  # barge-in, cancellation, timeout or failure
                await thread.wait_done()  # ends at once

    async def close(self) -> None:
        await self._threads.close()
