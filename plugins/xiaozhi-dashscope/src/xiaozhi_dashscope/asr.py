"""``paraformer``: DashScope real-time speech recognition (Paraformer), streamed.

Protocol (one WebSocket per utterance, ``/api-ws/v1/inference``): ``run-task``
(task_group ``audio``, task ``asr``, function ``recognition``, parameters ``format``,
``sample_rate``, ``language_hints``...) → ``task-started`` → binary PCM frames →
``result-generated`` events whose ``payload.output.sentence`` holds the current
sentence (``sentence_end`` false: a partial hypothesis; true: final) → ``finish-task``
→ the last finals → ``task-finished`` (or ``task-failed`` with ``error_code`` /
``error_message``).

The SDK's real-time recognition is synchronous only (its 2.0 ``Recognition`` session,
``dashscope.Client().audio.asr.recognize``; the 1.x callback class has no way to abort a
hung session). Each stream therefore runs the SDK's blocking reader in one dedicated
thread (:class:`~xiaozhi_dashscope._common.SessionThread`) whose events are handed to
the loop with ``call_soon_threadsafe``; audio frames are written by short jobs in a
small pool owned by the provider, in order, one batch at a time. ``push`` never
blocks: audio pushed before the task has started is buffered and sent once it has.

Partial results go to ``on_partial`` (on the event loop) as the utterance so far: the
finished sentences plus the current hypothesis.

    >>> join_sentences(["今天天气怎么样？", "明天呢？"])
    '今天天气怎么样？明天呢？'
    >>> join_sentences(["What time is it?", "And tomorrow?"])
    'What time is it? And tomorrow?'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import dashscope
import numpy as np

from xiaozhi_core.errors import ProviderError, ProviderTimeout
from xiaozhi_core.types import ASRResult

from ._common import SessionThread, SessionThreads, log, resolve_api_key, ws_error
from .plugin import ParaformerOptions

__all__ = ["ParaformerASR", "ParaformerStream", "join_sentences"]


def join_sentences(parts: list[str]) -> str:
    """Concatenate recognised sentences; a space only between two Latin-script ones."""
    text = ""
    for part in parts:
        if not part:
            continue
        if (
            text
            and text[-1].isascii()
            and not text[-1].isspace()
            and part[0].isascii()
            and part[0].isalnum()
        ):
            text += " "
        text += part
    return text


def _language_code(language: str) -> str:
    """``zh-CN`` → ``zh``: Paraformer's language hints are bare ISO 639 codes."""
    return language.strip().lower().replace("_", "-").split("-")[0]


def _pcm_bytes(pcm: np.ndarray) -> bytes:
    arr = np.asarray(pcm)
    if arr.dtype.kind == "f":  # tolerate float audio in [-1, 1]
        arr = np.clip(arr, -1.0, 1.0) * 32767.0
    return arr.astype("<i2", copy=False).tobytes()


class ParaformerStream:
    """One streaming recognition session (``io`` flavour: async push / finish / close)."""

    def __init__(
        self,
        owner: ParaformerASR,
        language: str | None,
        on_partial: Callable[[ASRResult], None] | None,
    ) -> None:
        o = owner.options
        self._owner, self._o = owner, o
        self._url = owner.ws_url
        self._on_partial = on_partial
        self._language = language
        hints = [_language_code(language)] if language else o.language_hints
        parameters = dict(o.parameters)
        if hints:
            parameters["language_hints"] = list(hints)
        self._finals: list[str] = []
        self._partial = ""
        self._last_reported: str | None = None
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._max_bytes = int(o.max_buffered_seconds * o.sample_rate * 2)
        self._wake = asyncio.Event()
        self._finish_requested = False
        self._closed = False
        self._error: ProviderError | None = None
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[bool] = loop.create_future()
        self._finished: asyncio.Future[bool] = loop.create_future()
        self._thread = SessionThread(
            "paraformer", on_error=self._on_thread_error, connect_timeout=o.timeout
        )
        self._rec = owner._audio.asr.recognize(
            model=o.model,
            format=o.format,
            sample_rate=o.sample_rate,
            parameters=parameters,
            ws_url=self._url,
            connector=self._thread.connector,
            timeout=o.idle_timeout,
            api_key=owner._api_key,
        )
        owner._threads.add(self._thread)
        self._thread.start(self._run)
        self._sender = loop.create_task(self._send_loop(), name=f"{self._thread.name}-send")

    # -- results ----------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The utterance recognised so far (final sentences + current partial)."""
        return join_sentences([*self._finals, self._partial])

    @property
    def task_id(self) -> str | None:
        return self._rec.request_id

    # -- the session thread (blocking SDK calls) ---------------------------------------
    def _run(self, thread: SessionThread) -> None:
        rec = self._rec
        try:
            rec.start()  # connect (through thread.connector), run-task, task-started
            thread.post(self._on_started)
            for event in rec.events():  # ends after task-finished; raises on task-failed
                if not thread.post(self._on_event, event):
                    return
        finally:
            rec.close()

    # -- loop callbacks -----------------------------------------------------------------
    def _on_started(self) -> None:
        if not self._started.done():
            self._started.set_result(True)

    def _on_event(self, event: dict[str, Any]) -> None:
        header = event.get("header") or {}
        name = header.get("event")
        if name == "task-finished":
            if not self._finished.done():
                self._finished.set_result(True)
            return
        if name != "result-generated":
            return
        payload = event.get("payload") or {}
        sentence = (payload.get("output") or {}).get("sentence")
        if not isinstance(sentence, dict) or sentence.get("heartbeat"):
            return
        text = str(sentence.get("text") or "")
        end = sentence.get("sentence_end")
        if end is None:  # older models mark the end with an end_time only
            end = sentence.get("end_time") is not None
        if end:
            if text:
                self._finals.append(text)
            self._partial = ""
        else:
            self._partial = text
        self._report_partial()

    def _report_partial(self) -> None:
        text = self.text
        if self._on_partial is None or not text or text == self._last_reported:
            return
        self._last_reported = text
        try:
            self._on_partial(ASRResult(text, final=False, language=self._language))
        except Exception:  # a consumer bug must not kill the recognition
            log.exception("paraformer: on_partial callback failed")

    def _on_thread_error(self, exc: BaseException) -> None:
        what = "recognition task" if self._started.done() else "starting the recognition task"
        timeout = self._o.idle_timeout if self._started.done() else self._o.timeout
        self._fail(ws_error("paraformer", what, exc, url=self._url, timeout=timeout))

    def _fail(self, error: ProviderError) -> None:
        if self._error is None:
            self._error = error
        for fut in (self._started, self._finished):
            if not fut.done():
                fut.set_result(False)
        self._wake.set()
        self._thread.abort()

    # -- sending ------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        o = self._o
        loop = asyncio.get_running_loop()
        done, _ = await asyncio.wait([self._started], timeout=o.timeout)
        if not done:
            self._fail(
                ProviderTimeout(
                    f"dashscope paraformer: connecting to {self._url} and starting the "
                    f"recognition task took more than {o.timeout:g} s"
                )
            )
            return
        if not self._started.result():
            return
        pool = self._owner._pool()
        try:
            while self._error is None:
                await self._wake.wait()
                self._wake.clear()
                if self._error is not None:
                    return
                if self._pending:
                    frames = list(self._pending)
                    self._pending.clear()
                    self._pending_bytes = 0
                    await loop.run_in_executor(pool, self._send_frames, frames)
                if self._finish_requested and not self._pending:
                    await loop.run_in_executor(pool, self._rec.stop)  # finish-task
                    return
        except Exception as exc:
            if self._error is not None or self._thread.aborted.is_set():
                return
            # The reader usually knows better (task-failed, server closed): let it report.
            await asyncio.wait([self._thread.done], timeout=1.0)
            self._fail(
                ws_error(
                    "paraformer",
                    "sending audio to the recognition task",
                    exc,
                    url=self._url,
                    timeout=o.idle_timeout,
                )
            )

    def _send_frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            if self._thread.aborted.is_set():
                return
            self._rec.send_audio_frame(frame)

    # -- the AsyncASRStream interface ---------------------------------------------------
    def _check(self, action: str) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ProviderError(f"dashscope paraformer: {action}() on a closed stream")
        if self._finish_requested:
            raise ProviderError(f"dashscope paraformer: {action}() after finish()")

    async def push(self, pcm: np.ndarray) -> None:
        """Queue 16 kHz mono int16 audio; it is sent in order as soon as possible."""
        self._check("push")
        data = _pcm_bytes(pcm)
        if not data:
            return
        if self._pending_bytes + len(data) > self._max_bytes:
            self._fail(
                ProviderError(
                    f"dashscope paraformer: more than {self._o.max_buffered_seconds:g} s of audio "
                    f"waiting to be sent: {self._url} is not accepting audio (connection not "
                    "ready or too slow)"
                )
            )
            raise self._error  # type: ignore[misc]
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._wake.set()

    async def finish(self) -> ASRResult:
        """End the audio, wait for the last results; the whole utterance, final."""
        o = self._o
        try:
            self._check("finish")
            self._finish_requested = True
            self._wake.set()
            await asyncio.wait([self._started], timeout=o.timeout + 1.0)
            if self._error is None and not self._started.done():
                self._fail(
                    ProviderTimeout(
                        f"dashscope paraformer: the recognition task did not start within "
                        f"{o.timeout:g} s ({self._url})"
                    )
                )
            if self._error is None:
                done, _ = await asyncio.wait([self._finished], timeout=o.timeout)
                if not done and self._error is None:
                    self._fail(
                        ProviderTimeout(
                            f"dashscope paraformer: no final result within {o.timeout:g} s after "
                            f"the end of the audio ({self._url}, task {self.task_id})"
                        )
                    )
            if self._error is not None:
                raise self._error
            return ASRResult(self.text, final=True, language=self._language)
        finally:
            await self.close()

    async def close(self) -> None:
        """Release the session; aborts the connection unless the task has finished."""
        if self._closed:
            return
        self._closed = True
        completed = self._finished.done() and self._finished.result()
        if not completed:
            self._thread.abort()
            for fut in (self._started, self._finished):
                if not fut.done():
                    fut.set_result(False)
        self._wake.set()
        if not self._sender.done():
            self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        if not completed:
            await self._thread.wait_done()  # aborted: ends at once
        self._owner._streams.discard(self)


class ParaformerASR:
    """``io`` ASR provider ``paraformer``."""

    def __init__(self, options: ParaformerOptions) -> None:
        self.options = options
        self._api_key = resolve_api_key(options.api_key, "paraformer")
        with warnings.catch_warnings():
            # The SDK flags its 2.0 audio surface as a preview (FutureWarning); the
            # version is pinned in pyproject.toml and the tests run the real code path.
            warnings.simplefilter("ignore", FutureWarning)
            client = dashscope.Client(
                api_key=self._api_key, base_url=str(dashscope.base_http_api_url)
            )
            self._audio = client.audio
        self._send_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._streams: weakref.WeakSet[ParaformerStream] = weakref.WeakSet()
        self._threads = SessionThreads()

    @property
    def ws_url(self) -> str:
        return self.options.base_websocket_url or str(dashscope.base_websocket_api_url)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._send_pool is None:
            self._send_pool = concurrent.futures.ThreadPoolExecutor(
                # Threads are made only when needed; a sender blocked on one socket (full
                # buffer) must not hold up the other sessions for long.
                max_workers=16,
                thread_name_prefix="xiaozhi-dashscope-send",
            )
        return self._send_pool

    async def open_stream(
        self, *, language: str | None = None, on_partial: Callable[[ASRResult], None] | None = None
    ) -> ParaformerStream:
        """Start a session (the connection is made in the background)."""
        stream = ParaformerStream(self, language, on_partial)
        self._streams.add(stream)
        return stream

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> ASRResult:
        """Recognise a whole utterance (streamed in ``chunk_ms`` frames)."""
        if len(pcm) == 0:
            return ASRResult("", language=language)
        stream = await self.open_stream(language=language)
        try:
            step = self.options.sample_rate * self.options.chunk_ms // 1000
            for i in range(0, len(pcm), step):
                await stream.push(pcm[i : i + step])
            return await stream.finish()
        finally:
            await stream.close()

    async def close(self) -> None:
        for stream in list(self._streams):
            await stream.close()
        await self._threads.close()
        if self._send_pool is not None:
            self._send_pool.shutdown(wait=False, cancel_futures=True)
            self._send_pool = None
