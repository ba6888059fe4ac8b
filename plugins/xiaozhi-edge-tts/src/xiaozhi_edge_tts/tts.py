"""``edge``: Microsoft Edge read-aloud voices through edge-tts, streamed as PCM16.

One synthesis (per sentence, as the core calls it):

1. ``edge_tts.Communicate`` opens a WebSocket to the read-aloud service, sends the
   ``speech.config`` message (output format ``audio-24khz-48kbitrate-mono-mp3``) and
   the SSML (voice, rate, volume, pitch); the service answers ``turn.start``, binary
   ``Path:audio`` messages carrying MP3, ``audio.metadata`` boundaries and ``turn.end``.
2. A *pump* task iterates ``Communicate.stream()`` and queues the MP3 chunks.
3. :meth:`EdgeTTS.synthesize` takes them from the queue, decodes them in-process as
   they arrive (:mod:`._mp3`, PyAV) and yields PCM16LE mono at :attr:`sample_rate`.

Why a pump task: the provider, not edge-tts, owns the timing and the socket. edge-tts's
``receive_timeout`` only covers the HTTP upgrade, so a server that goes silent after
it would hang forever; here a watchdog bounds every wait. And when the consumer stops
(barge-in: the core closes this generator) or is cancelled, the synthesis's own
connector is closed first, which drops the socket at once, then the pump is cancelled:
no close handshake to wait for, nothing left running.

Decoding runs on the event loop: it costs about 1.5 ms of CPU per second of audio
(README, ``benchmarks/bench_decode.py``), less than a thread hand-off would save.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import edge_tts
from edge_tts.constants import WSS_URL

from xiaozhi_core.errors import ProviderError, ProviderTimeout

from ._endpoint import SynthesisConnector, public_url, route
from ._errors import stream_error
from ._mp3 import Mp3DecodeError, Mp3Decoder
from .plugin import EdgeTTSOptions, voice_problem

__all__ = ["EdgeTTS"]

log = logging.getLogger("xiaozhi_edge_tts")

_END = object()
_PROGRESS = object()  # a metadata message: the service is alive, no audio in it


@dataclass
class _Failure:
    exc: BaseException


class _Synthesis:
    """The live parts of one ``synthesize`` call: edge-tts's pump task and its socket."""

    def __init__(
        self, communicate: edge_tts.Communicate, connector: SynthesisConnector, endpoint: str | None
    ) -> None:
        self.communicate = communicate
        self.connector = connector
        self.queue: asyncio.Queue[Any] = asyncio.Queue()  # MP3 is ~6 kB/s: no bound needed
        self.task = asyncio.create_task(self._pump(endpoint), name="edge-tts-stream")

    async def _pump(self, endpoint: str | None) -> None:
        try:
            route(endpoint)  # this task's context only
            async for chunk in self.communicate.stream():
                if chunk["type"] == "audio":
                    self.queue.put_nowait(chunk["data"])
                else:
                    self.queue.put_nowait(_PROGRESS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, who maps it
            self.queue.put_nowait(_Failure(exc))
        else:
            self.queue.put_nowait(_END)

    def turn_completed(self) -> bool:
        """False when the service closed the socket before ``turn.end``.

        edge-tts ends its stream quietly when the WebSocket closes, with or without
        ``turn.end``; it only zeroes ``chunk_audio_bytes`` on ``turn.end``.
        """
        return not self.communicate.state.get("chunk_audio_bytes", 0)

    async def abort(self, reason: ProviderError | None = None) -> None:
        """Drop the socket now, then stop the pump (never waits on the network).

        ``reason``: what the consumer, if it still waits, gets instead of audio.
        """
        if self.task.done():
            await self.connector.shutdown()  # its sockets are closed already
            return
        if reason is not None:
            self.queue.put_nowait(_Failure(reason))
        # shutdown() closes the sockets synchronously, before its first await: even a
        # consumer cancelled again right here leaves no socket open.
        await self.connector.shutdown()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class EdgeTTS:
    """``io`` TTS provider ``edge``: yields PCM16LE mono at :attr:`sample_rate`."""

    def __init__(self, options: EdgeTTSOptions) -> None:
        self.options = options
        self.sample_rate = options.sample_rate
        self.url = public_url(options.endpoint or WSS_URL)
        self._live: set[_Synthesis] = set()
        # Let edge-tts check the defaults now (its voice/rate/pitch rules), not per call.
        self._communicate("check", options.voice)

    def _communicate(
        self, text: str, voice: str, connector: SynthesisConnector | None = None
    ) -> edge_tts.Communicate:
        o = self.options
        if problem := voice_problem(voice):
            raise ProviderError(f"edge: {problem} (list them with `edge-tts --list-voices`)")
        try:
            return edge_tts.Communicate(
                text,
                voice,
                rate=o.rate,
                volume=o.volume,
                pitch=o.pitch,
                proxy=o.proxy,
                # Whole seconds, as edge-tts wants. They bound the TCP connect and the
                # HTTP upgrade's response; after the upgrade only the watchdog in
                # _next() bounds the waits.
                connect_timeout=math.ceil(o.connect_timeout),
                receive_timeout=math.ceil(o.receive_timeout),
                connector=connector,
            )
        except (TypeError, ValueError) as exc:
            raise ProviderError(
                f"edge: edge-tts refused voice {voice!r} / rate {o.rate!r} / "
                f"volume {o.volume!r} / pitch {o.pitch!r}: {exc}"
            ) from exc

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        """Stream the speech of ``text`` as the service sends it."""
        if not text.strip():
            return
        o = self.options
        voice = voice or o.voice
        connector = SynthesisConnector(o.endpoint)
        try:
            communicate = self._communicate(text, voice, connector)
        except ProviderError:
            await connector.shutdown()
            raise
        synthesis = _Synthesis(communicate, connector, o.endpoint)
        self._live.add(synthesis)
        decoder = Mp3Decoder(self.sample_rate)
        try:
            while True:
                item = await self._next(synthesis, decoder, voice)
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise stream_error(
                        item.exc,
                        url=self.url,
                        voice=voice,
                        connect_timeout=o.connect_timeout,
                        receive_timeout=o.receive_timeout,
                    ) from item.exc
                if item is _PROGRESS:
                    continue
                try:
                    pcm = decoder.feed(item)
                except Mp3DecodeError as exc:
                    raise stream_error(exc, url=self.url, voice=voice) from exc
                if pcm:
                    yield pcm
            if not synthesis.turn_completed():
                seconds = decoder.samples_out / self.sample_rate
                raise ProviderError(
                    f"edge: {self.url} closed the connection before the end of the turn "
                    f"(no turn.end): the audio is cut after {seconds:.2f} s; retry"
                )
            try:
                tail = decoder.flush()
            except Mp3DecodeError as exc:
                raise stream_error(exc, url=self.url, voice=voice) from exc
            if tail:
                yield tail
        finally:
            self._live.discard(synthesis)
            await synthesis.abort()

    async def _next(self, synthesis: _Synthesis, decoder: Mp3Decoder, voice: str) -> Any:
        """The pump's next item, within the timeout of the current phase."""
        o = self.options
        started = decoder.bytes_in > 0
        # Before the first audio the wait includes connecting.
        limit = o.receive_timeout if started else o.connect_timeout + o.receive_timeout
        try:
            async with asyncio.timeout(limit):
                return await synthesis.queue.get()
        except TimeoutError:
            pass
        if started:
            raise ProviderTimeout(
                f"edge: the audio stream from {self.url} stalled: nothing received for "
                f"{o.receive_timeout:g} s after {decoder.samples_out / self.sample_rate:.2f} s "
                f"of audio (receive_timeout)"
            ) from None
        if not synthesis.connector.connected:
            raise ProviderTimeout(
                f"edge: could not connect to {self.url} within {limit:g} s "
                "(connect_timeout + receive_timeout); check network access, the proxy "
                "option or WSS_PROXY"
            ) from None
        raise ProviderTimeout(
            f"edge: {self.url} accepted the connection but sent no audio within {limit:g} s "
            f"(voice {voice}; connect_timeout + receive_timeout)"
        ) from None

    async def close(self) -> None:
        """Abort the syntheses still running (their consumers see the socket drop)."""
        for synthesis in list(self._live):
            await synthesis.abort(
                ProviderError(
                    "edge: the provider was closed during the synthesis (server shutting down)"
                )
            )
