"""A local fake of DashScope, speaking its real wire protocols (for tests; no network).

One aiohttp app on 127.0.0.1 (random port) serves:

* ``POST /api/v1/services/aigc/text-generation/generation`` — the Generation API. With
  ``X-DashScope-SSE: enable`` it streams Server-Sent Events the way DashScope does::

      id:1
      event:result
      :HTTP_STATUS/200
      data:{"output":{"choices":[{"message":{"content":"你","role":"assistant"},
            "finish_reason":"null"}]},"usage":{...},"request_id":"..."}

  (``incremental_output``: each event carries only the new text / new tool-call
  argument characters; the last one has ``finish_reason`` ``stop`` or ``tool_calls``).
  Errors are JSON bodies ``{"code", "message", "request_id"}`` with the HTTP status, or,
  mid-stream, an ``event:error`` event.
* ``POST /api/v1/services/aigc/multimodal-generation/generation`` — Qwen-VL, one JSON
  answer ``{"output": {"choices": [{"message": {"content": [{"text": ...}]}}]}}``; user
  content parts are ``{"image": <data URL>}`` / ``{"text": ...}``, and an image whose
  bytes are not PNG/JPEG gets 400 ``InvalidParameter`` (scripted with :class:`VLTurn`).
* ``GET /api-ws/v1/inference`` — the WebSocket duplex task protocol. The client sends
  ``{"header": {"action": "run-task", "task_id", "streaming": "duplex"}, "payload":
  {"task_group": "audio", "task": "asr"|"tts", "function", "model", "parameters",
  "input"}}``; the server answers ``task-started``; then

  - ``asr`` (Paraformer real-time): binary PCM frames in, ``result-generated`` events out
    with ``payload.output.sentence = {begin_time, end_time, text, words, sentence_end}``
    (``end_time`` null and ``sentence_end`` false while the sentence is partial);
  - ``tts`` (CosyVoice): ``continue-task`` with ``payload.input.text`` in, binary PCM
    frames out (plus ``result-generated`` sentence events);

  ``finish-task`` ends the input; the server ends with ``task-finished``, or with
  ``task-failed`` (``header.error_code`` / ``header.error_message``).

Every behaviour is scriptable per test (:class:`LLMTurn`, :class:`ASRScript`,
:class:`TTSScript`) and everything received is recorded (:attr:`FakeDashScope.http`,
:attr:`FakeDashScope.ws`), including when each client connection went away.

Example:
    >>> turn = LLMTurn(text="你好呀", chunk_chars=1)
    >>> [c for c in turn.text_chunks()]
    ['你', '好', '呀']
    >>> len(tts_pcm(3, 24000))  # bytes of audio the fake speaks for 3 characters
    14400
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

GENERATION_PATH = "/api/v1/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
WS_PATH = "/api-ws/v1/inference"


def _check_vl(body: dict[str, Any]) -> str | None:
    """What DashScope refuses in a multimodal request (400 InvalidParameter)."""
    import base64

    if not body.get("model"):
        return "Model not specified"
    messages = (body.get("input") or {}).get("messages")
    if not isinstance(messages, list) or not messages:
        return "Input messages must not be empty"
    for m in messages:
        content = m.get("content")
        if not isinstance(content, list):
            return "Input should be a valid list: messages.content"
        for part in content:
            if (
                not isinstance(part, dict)
                or len(part) != 1
                or next(iter(part)) not in ("text", "image")
            ):
                return f"Invalid content part: {str(part)[:60]}"
            if "image" in part:
                head, _, data = str(part["image"]).partition(",")
                try:
                    raw = base64.b64decode(data, validate=True)
                except ValueError:
                    raw = b""
                if not head.startswith("data:image/") or not raw.startswith(
                    (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
                ):
                    return "The image format is illegal and cannot be opened."
    return None


def _rid() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------ scripts
@dataclass
class VLTurn:
    """One scripted Qwen-VL answer (or error, or a hang of ``delay`` seconds)."""

    text: str = "A red square on a gradient background."
    status: int = 200
    code: str | None = None
    message: str | None = None
    delay: float = 0.0


@dataclass
class LLMTurn:
    """What the Generation endpoint answers to one request."""

    text: str = "你好！有什么可以帮你？"
    #: Characters of text per SSE event.
    chunk_chars: int = 2
    #: Tool calls to request: ``{"id", "name", "arguments": dict | str}``; their arguments
    #: are streamed in ``arg_pieces`` pieces each. With tool calls, ``text`` comes first.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    arg_pieces: int = 3
    #: Answer with this HTTP error (JSON body) instead of a stream.
    status: int = 200
    code: str = ""
    message: str = ""
    #: After this many events: an ``event:error`` event (mid-stream failure) ...
    error_after: int | None = None
    #: ... or a data line that is not JSON ...
    malformed_after: int | None = None
    #: ... or silence until the client goes away (a hung server).
    hang_after: int | None = None
    #: Seconds between events.
    delay: float = 0.0

    def text_chunks(self) -> list[str]:
        n = max(1, self.chunk_chars)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)]


@dataclass
class ASRScript:
    """How the fake Paraformer recognises a stream."""

    #: The sentences "heard", in order.
    sentences: list[str] = field(default_factory=lambda: ["今天天气怎么样？"])
    #: Audio bytes each sentence spans (the last one ends at finish-task).
    bytes_per_sentence: int = 32000
    #: A partial result every this many audio bytes.
    partial_every: int = 6400
    #: HTTP status to refuse the WebSocket upgrade with (401, 429, 500...).
    handshake_status: int | None = None
    handshake_code: str = ""
    handshake_message: str = ""
    #: task-failed instead of task-started / after this many audio bytes.
    fail_on_start: bool = False
    fail_after_bytes: int | None = None
    error_code: str = "InvalidParameter"
    error_message: str = "task failed"
    #: Never send task-started / never answer finish-task.
    hang_on_start: bool = False
    hang_on_finish: bool = False
    #: Send a text frame that is not JSON after this many audio bytes.
    malformed_after_bytes: int | None = None


@dataclass
class TTSScript:
    """How the fake CosyVoice synthesises."""

    #: Audio per character of text, in seconds.
    seconds_per_char: float = 0.1
    #: Bytes per binary frame (odd sizes exercise sample alignment).
    frame_bytes: int = 4800
    #: Seconds between frames.
    frame_delay: float = 0.0
    handshake_status: int | None = None
    handshake_code: str = ""
    handshake_message: str = ""
    fail_on_start: bool = False
    fail_after_frames: int | None = None
    error_code: str = "InvalidParameter"
    error_message: str = "task failed"
    hang_on_start: bool = False
    hang_after_frames: int | None = None
    malformed_after_frames: int | None = None


async def eventually(condition: Any, within: float = 2.0) -> None:
    """Wait until ``condition()`` is true (polling the test's own state)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {within} s")
        await asyncio.sleep(0.005)


def tts_pcm(chars: int, sample_rate: int, seconds_per_char: float = 0.1) -> bytes:
    """The PCM16 the fake synthesises for ``chars`` characters (a deterministic ramp)."""
    n = int(round(chars * seconds_per_char * sample_rate))
    return ((np.arange(n, dtype=np.int64) * 37 % 4000) - 2000).astype("<i2").tobytes()


# ------------------------------------------------------------------------ records
@dataclass
class HTTPRecord:
    headers: dict[str, str]
    body: dict[str, Any]
    #: time.monotonic() when the server noticed the client had gone mid-stream.
    disconnected_at: float | None = None
    events_sent: int = 0
    completed: bool = False


@dataclass
class WSRecord:
    headers: dict[str, str]
    run_task: dict[str, Any] | None = None
    actions: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    audio_frames: int = 0
    texts: list[str] = field(default_factory=list)
    frames_sent: int = 0
    events_sent: list[str] = field(default_factory=list)
    #: time.monotonic() when the connection ended, and whether the client ended it
    #: before the task was over.
    closed_at: float | None = None
    client_closed_early: bool = False

    @property
    def task(self) -> str | None:
        return None if self.run_task is None else self.run_task.get("task")

    @property
    def parameters(self) -> dict[str, Any]:
        return {} if self.run_task is None else dict(self.run_task.get("parameters") or {})


# ------------------------------------------------------------------------ server
class FakeDashScope:
    """The fake server. ``await start()``, point the providers at :attr:`http_url` /
    :attr:`ws_url`, script it, then ``await stop()``."""

    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.llm_turns: deque[LLMTurn] = deque()
        self.vl_turns: deque[VLTurn] = deque()
        self.default_turn = LLMTurn()
        self.asr = ASRScript()
        self.tts = TTSScript()
        self.http: list[HTTPRecord] = []
        self.ws: list[WSRecord] = []
        self._stopping = asyncio.Event()
        self._open: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> FakeDashScope:
        app = web.Application()
        app.router.add_post(GENERATION_PATH, self._generation)
        app.router.add_post(MULTIMODAL_PATH, self._multimodal)
        app.router.add_get(WS_PATH, self._inference)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        for ws in list(self._open):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    def script_llm(self, *turns: LLMTurn) -> None:
        self.llm_turns.extend(turns)

    def ws_of(self, task: str) -> list[WSRecord]:
        return [r for r in self.ws if r.task == task]

    async def wait_closed(self, record: HTTPRecord | WSRecord, within: float = 3.0) -> float:
        """Wait until the client connection of ``record`` is gone; its time.monotonic()."""
        deadline = time.monotonic() + within
        attr = "disconnected_at" if isinstance(record, HTTPRecord) else "closed_at"
        while getattr(record, attr) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"client connection still open after {within} s")
            await asyncio.sleep(0.01)
        return float(getattr(record, attr))

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(
            {"code": code, "message": message, "request_id": _rid()}, status=status
        )

    # -- HTTP multimodal generation (Qwen-VL) ---------------------------------------
    async def _multimodal(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.http.append(HTTPRecord(headers=dict(request.headers), body=body))
        if not self._authorized(request):
            return self._error(401, "InvalidApiKey", "Invalid API-key provided.")
        problem = _check_vl(body)
        if problem:
            return self._error(400, "InvalidParameter", problem)
        turn = self.vl_turns.popleft() if self.vl_turns else VLTurn()
        if turn.delay:
            await asyncio.sleep(turn.delay)
        if turn.status != 200:
            return self._error(turn.status, turn.code or "InternalError", turn.message or "error")
        return web.json_response(
            {
                "output": {
                    "choices": [
                        {
                            "finish_reason": "stop",
                            "message": {
                                "role": "assistant",
                                "content": [{"text": turn.text}] if turn.text else [],
                            },
                        }
                    ]
                },
                "usage": {"input_tokens": 1200, "output_tokens": 12, "image_tokens": 1100},
                "request_id": _rid(),
            }
        )

    # -- HTTP generation ------------------------------------------------------------
    async def _generation(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = HTTPRecord(headers=dict(request.headers), body=body)
        self.http.append(record)
        if not self._authorized(request):
            return self._error(401, "InvalidApiKey", "Invalid API-key provided.")
        turn = self.llm_turns.popleft() if self.llm_turns else self.default_turn
        if turn.status != 200:
            return self._error(turn.status, turn.code or "InternalError", turn.message or "error")
        if request.headers.get("X-DashScope-SSE") != "enable":
            return self._error(400, "InvalidParameter", "this fake only streams")
        rid = _rid()
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream;charset=UTF-8", "X-Request-Id": rid}
        )
        await resp.prepare(request)
        events = self._llm_events(turn, body)
        for i, data in enumerate(events):
            if turn.hang_after is not None and i >= turn.hang_after:
                await self._until_gone(request, record)
                return resp
            if turn.error_after is not None and i >= turn.error_after:
                err = {
                    "code": turn.code or "InternalError",
                    "message": turn.message or "mid-stream failure",
                    "request_id": rid,
                }
                await self._send_sse(
                    resp, request, record, i + 1, "error", json.dumps(err), status=500
                )
                return resp
            if turn.malformed_after is not None and i >= turn.malformed_after:
                await self._send_sse(resp, request, record, i + 1, "result", "{not json")
                return resp
            if turn.delay and i:
                await asyncio.sleep(turn.delay)
            data["request_id"] = rid
            if not await self._send_sse(
                resp, request, record, i + 1, "result", json.dumps(data, ensure_ascii=False)
            ):
                return resp
        record.completed = True
        await resp.write_eof()
        return resp

    def _llm_events(self, turn: LLMTurn, body: dict[str, Any]) -> list[dict[str, Any]]:
        params = body.get("parameters") or {}
        offered = {t["function"]["name"] for t in params.get("tools") or []}
        calls = [c for c in turn.tool_calls if c["name"] in offered]
        deltas: list[dict[str, Any]] = [{"content": c} for c in turn.text_chunks()]
        for index, call in enumerate(calls):
            args = call.get("arguments", {})
            text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            n = max(1, turn.arg_pieces)
            size = max(1, -(-len(text) // n))
            pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
            for k, piece in enumerate(pieces):
                fn: dict[str, Any] = {"arguments": piece}
                if k == 0:
                    fn["name"] = call["name"]
                deltas.append(
                    {
                        "content": "",
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call.get("id", f"call_{index}") if k == 0 else "",
                                "type": "function",
                                "function": fn,
                            }
                        ],
                    }
                )
        events = []
        total = len(deltas)
        for i, delta in enumerate(deltas):
            last = i == total - 1
            finish = ("tool_calls" if calls else "stop") if last else "null"
            events.append(
                {
                    "output": {
                        "choices": [
                            {"message": {"role": "assistant", **delta}, "finish_reason": finish}
                        ]
                    },
                    "usage": {"input_tokens": 12, "output_tokens": i + 1, "total_tokens": 13 + i},
                }
            )
        return events

    async def _send_sse(
        self,
        resp: web.StreamResponse,
        request: web.Request,
        record: HTTPRecord,
        n: int,
        event: str,
        data: str,
        status: int = 200,
    ) -> bool:
        frame = f"id:{n}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{data}\n\n"
        try:
            await resp.write(frame.encode())
        except (ConnectionResetError, RuntimeError):
            record.disconnected_at = record.disconnected_at or time.monotonic()
            return False
        record.events_sent += 1
        if request.transport is None or request.transport.is_closing():
            record.disconnected_at = record.disconnected_at or time.monotonic()
            return False
        return True

    async def _until_gone(self, request: web.Request, record: HTTPRecord) -> None:
        while not self._stopping.is_set():
            if request.transport is None or request.transport.is_closing():
                record.disconnected_at = time.monotonic()
                return
            await asyncio.sleep(0.01)

    # -- WebSocket inference ----------------------------------------------------------
    async def _inference(self, request: web.Request) -> web.StreamResponse:
        record = WSRecord(headers=dict(request.headers))
        self.ws.append(record)
        if not self._authorized(request):
            return self._error(401, "InvalidApiKey", "Invalid API-key provided.")
        # The task kind is known only after run-task; a scripted handshake refusal
        # applies to whichever script asks for one (tests script one kind at a time).
        for script in (self.asr, self.tts):
            if script.handshake_status:
                return self._error(
                    script.handshake_status,
                    script.handshake_code or "Error",
                    script.handshake_message or "refused",
                )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._open.add(ws)
        session = _WsTask(self, ws, record)
        try:
            await session.run()
        finally:
            self._open.discard(ws)
            record.closed_at = time.monotonic()
            if not ws.closed:
                await ws.close()
        return ws


class _WsTask:
    """One WebSocket connection of the fake: run-task, then the asr or tts protocol."""

    def __init__(self, server: FakeDashScope, ws: web.WebSocketResponse, record: WSRecord) -> None:
        self.server, self.ws, self.record = server, ws, record
        self.task_id = ""
        self.finished = False  # task-finished / task-failed sent
        self.hanging = False
        # asr state
        self.sentence = 0
        self.sentence_start = 0
        self.next_partial = 0
        self.last_partial = ""
        # tts state
        self.tts_texts: asyncio.Queue[str | None] = asyncio.Queue()
        self.tts_sender: asyncio.Task[None] | None = None
        self.tts_bytes_sent = 0
        self.tts_pcm = b""

    async def event(self, name: str, payload: dict[str, Any] | None = None, **header: Any) -> None:
        msg = {
            "header": {"task_id": self.task_id, "event": name, "attributes": {}, **header},
            "payload": payload if payload is not None else {},
        }
        self.record.events_sent.append(name)
        await self.ws.send_str(json.dumps(msg, ensure_ascii=False))

    async def fail(self, code: str, message: str) -> None:
        self.finished = True
        await self.event("task-failed", error_code=code, error_message=message)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    if not await self.on_text(json.loads(msg.data)):
                        return
                elif msg.type == WSMsgType.BINARY:
                    if not await self.on_audio(msg.data):
                        return
                else:
                    break
        finally:
            if self.tts_sender is not None:
                self.tts_sender.cancel()
            if not self.finished:
                self.record.client_closed_early = True

    async def on_text(self, msg: dict[str, Any]) -> bool:
        header, payload = msg["header"], msg.get("payload") or {}
        action = header["action"]
        self.record.actions.append(action)
        if action == "run-task":
            self.task_id = header["task_id"]
            self.record.run_task = payload
            script = self.server.asr if payload.get("task") == "asr" else self.server.tts
            if script.fail_on_start:
                await self.fail(script.error_code, script.error_message)
                return True
            if script.hang_on_start:
                self.hanging = True
                return True
            await self.event("task-started")
            if payload.get("task") == "tts":
                self.tts_sender = asyncio.get_running_loop().create_task(self.tts_send())
            return True
        if self.hanging or self.finished:
            return True
        if action == "continue-task":
            text = (payload.get("input") or {}).get("text")
            if text:
                self.record.texts.append(text)
                await self.tts_texts.put(text)
            return True
        if action == "finish-task":
            if self.record.task == "tts":
                await self.tts_texts.put(None)
                return True
            return await self.asr_finish()
        raise AssertionError(f"unexpected action {action!r}")

    # -- asr ------------------------------------------------------------------------------
    def sentence_payload(self, text: str, end: bool) -> dict[str, Any]:
        begin = self.sentence_start // 32
        words = [
            {
                "begin_time": begin + 100 * i,
                "end_time": begin + 100 * (i + 1),
                "text": ch,
                "punctuation": "",
            }
            for i, ch in enumerate(text)
        ]
        return {
            "output": {
                "sentence": {
                    "begin_time": begin,
                    "end_time": (begin + 100 * len(text)) if end else None,
                    "text": text,
                    "words": words,
                    "sentence_end": end,
                    "heartbeat": False,
                }
            },
            "usage": {"duration": 1} if end else None,
        }

    async def on_audio(self, data: bytes) -> bool:
        script = self.server.asr
        rec = self.record
        if self.hanging or self.finished or rec.task != "asr":
            return True
        rec.audio.extend(data)
        rec.audio_frames += 1
        got = len(rec.audio)
        if script.fail_after_bytes is not None and got >= script.fail_after_bytes:
            await self.fail(script.error_code, script.error_message)
            return True
        if script.malformed_after_bytes is not None and got >= script.malformed_after_bytes:
            await self.ws.send_str("{not json")
            self.hanging = True
            return True
        sentences = script.sentences
        while (
            self.sentence < len(sentences) - 1
            and got >= self.sentence_start + script.bytes_per_sentence
        ):
            await self.event(
                "result-generated", self.sentence_payload(sentences[self.sentence], True)
            )
            self.sentence += 1
            self.sentence_start += script.bytes_per_sentence
            self.last_partial = ""
        if self.sentence < len(sentences) and got >= self.next_partial:
            self.next_partial = got + script.partial_every
            text = sentences[self.sentence]
            progress = min(1.0, (got - self.sentence_start) / script.bytes_per_sentence)
            partial = text[: max(1, int(len(text) * progress))]
            if partial != self.last_partial:
                self.last_partial = partial
                await self.event("result-generated", self.sentence_payload(partial, False))
        return True

    async def asr_finish(self) -> bool:
        script = self.server.asr
        if script.hang_on_finish:
            self.hanging = True
            return True
        for text in script.sentences[self.sentence :]:
            await self.event("result-generated", self.sentence_payload(text, True))
            self.sentence_start += script.bytes_per_sentence
        self.sentence = len(script.sentences)
        self.finished = True
        await self.event("task-finished", {"output": {}, "usage": None})
        return True

    # -- tts ------------------------------------------------------------------------------
    async def tts_send(self) -> None:
        script = self.server.tts
        rate = int(self.record.parameters.get("sample_rate", 22050))
        chars = 0
        while True:
            text = await self.tts_texts.get()
            if text is None:
                break
            start = len(self.tts_pcm)
            self.tts_pcm = tts_pcm(chars + len(text), rate, script.seconds_per_char)
            chars += len(text)
            pcm = self.tts_pcm[start:]
            await self.event(
                "result-generated",
                {
                    "output": {"sentence": {"index": 0, "words": []}, "type": "sentence-begin"},
                    "usage": None,
                },
            )
            for i in range(0, len(pcm), script.frame_bytes):
                n = self.record.frames_sent
                if script.fail_after_frames is not None and n >= script.fail_after_frames:
                    await self.fail(script.error_code, script.error_message)
                    return
                if script.hang_after_frames is not None and n >= script.hang_after_frames:
                    self.hanging = True
                    return
                if script.malformed_after_frames is not None and n >= script.malformed_after_frames:
                    await self.ws.send_str("{not json")
                    self.hanging = True
                    return
                if script.frame_delay and n:
                    await asyncio.sleep(script.frame_delay)
                await self.ws.send_bytes(pcm[i : i + script.frame_bytes])
                self.record.frames_sent += 1
            await self.event(
                "result-generated",
                {
                    "output": {"sentence": {"index": 0, "words": []}, "type": "sentence-end"},
                    "usage": {"characters": chars},
                },
            )
        self.finished = True
        await self.event("task-finished", {"output": {}, "usage": {"characters": chars}})
