"""A local fake of the OpenAI HTTP API (aiohttp, 127.0.0.1, random port) for tests.

It speaks the real wire format, so the real SDK can be pointed at it with
``base_url=server.base_url``:

* ``POST /v1/chat/completions`` — ``stream: true``: ``text/event-stream`` of
  ``data: {chat.completion.chunk}`` events ending with ``data: [DONE]``; tool calls are
  streamed as OpenAI streams them (a first delta with ``index``, ``id``, ``type`` and
  the function ``name`` with empty ``arguments``, then deltas carrying argument
  fragments, then an empty delta with ``finish_reason: "tool_calls"``). Without
  ``stream`` it answers one ``chat.completion`` JSON object.
  User messages may carry content parts (``text``, ``image_url`` with a base64
  ``data:`` URL); an image that is not a real PNG/JPEG/GIF/WebP gets OpenAI's 400.
* ``POST /v1/audio/transcriptions`` — multipart upload → ``{"text": ...}``.
* ``POST /v1/audio/speech`` — chunked raw PCM body (24 kHz s16le mono).

Errors use OpenAI's JSON shape ``{"error": {"message", "type", "param", "code"}}``;
requests without the expected ``Authorization: Bearer <api_key>`` get OpenAI's 401.

Replies are scripted per endpoint (a queue; when it is empty a default reply is used):
:class:`ChatReply`, :class:`SpeechReply`, :class:`TranscriptionReply`,
:class:`ErrorReply` (any status) and :class:`Hang` (never answers). Every request is
recorded in :attr:`FakeOpenAI.requests`, and streams the client abandons are counted
in :attr:`FakeOpenAI.aborted` (the server saw the connection close mid-stream).

Example:
    >>> import asyncio, json, urllib.request
    >>> async def demo():
    ...     async with FakeOpenAI(api_key=None) as server:
    ...         server.script_chat(ChatReply("Hi there"))
    ...         body = json.dumps({"model": "m", "stream": True,
    ...                            "messages": [{"role": "user", "content": "hi"}]}).encode()
    ...         req = urllib.request.Request(server.base_url + "/chat/completions", body,
    ...                                      {"Content-Type": "application/json"})
    ...         raw = await asyncio.to_thread(lambda: urllib.request.urlopen(req).read())
    ...         return raw.decode().splitlines()[-2:]
    >>> asyncio.run(demo())
    ['data: [DONE]', '']
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "ChatReply",
    "ErrorReply",
    "FakeOpenAI",
    "Hang",
    "Recorded",
    "SpeechReply",
    "TranscriptionReply",
    "error_body",
    "speech_pcm",
]


# --------------------------------------------------------------------------- scripts
@dataclass
class ChatReply:
    """One scripted chat completion."""

    #: Reply text, streamed word by word (unless ``pieces`` is given).
    text: str = ""
    #: Explicit content deltas.
    pieces: list[str] | None = None
    #: ``{"name": ..., "arguments": dict | str, "id": optional}``; ``arguments`` given
    #: as a string is sent verbatim (to script malformed JSON).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: Argument fragments are this many characters long.
    fragment: int = 7
    #: Default: "tool_calls" if there are tool calls, else "stop".
    finish_reason: str | None = None
    #: Seconds before the first content chunk (the role chunk goes out at once).
    first_delay: float = 0.0
    #: Seconds between chunks.
    delay: float = 0.0
    #: After this many chunks, stop sending (keep the connection open: a hung stream).
    stall_after: int | None = None
    #: ``data:`` payloads sent verbatim instead of the scripted chunks (malformed streams).
    raw_events: list[str] | None = None
    #: Sent as ``data: {"error": ...}`` after the content (a mid-stream error event).
    error_event: dict[str, Any] | None = None
    #: Whether to end with ``data: [DONE]``.
    done: bool = True


@dataclass
class SpeechReply:
    #: PCM to send; default: a tone as long as ``len(input) * seconds_per_char``.
    pcm: bytes | None = None
    seconds_per_char: float = 0.02
    chunk_bytes: int = 4800
    first_delay: float = 0.0
    delay: float = 0.0
    content_type: str = "audio/pcm"
    stall_after: int | None = None


@dataclass
class TranscriptionReply:
    text: str = "hello world"
    delay: float = 0.0


@dataclass
class ErrorReply:
    status: int
    message: str = "error"
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def rate_limit(cls) -> ErrorReply:
        return cls(
            429,
            "Rate limit reached for gpt-4o-mini in organization org-fake on tokens "
            "per min (TPM): Limit 200000, Used 199800, Requested 900. Please try again "
            "in 210ms.",
            "tokens",
            "rate_limit_exceeded",
        )

    @classmethod
    def quota(cls) -> ErrorReply:
        return cls(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )

    @classmethod
    def server_error(cls, status: int = 500) -> ErrorReply:
        return cls(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )


@dataclass
class Hang:
    """Accept the request and never answer (until the client gives up)."""


@dataclass
class Recorded:
    """One request as the server received it."""

    path: str
    #: Case-insensitive, as HTTP headers are.
    headers: CIMultiDict[str]
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


def error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error JSON.

    >>> error_body("bad", "invalid_request_error")["error"]["type"]
    'invalid_request_error'
    """
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def speech_pcm(seconds: float, sample_rate: int = 24000, freq: float = 220.0) -> bytes:
    """A deterministic tone as s16le bytes (what the fake speaks).

    >>> len(speech_pcm(0.01))
    480
    """
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


class _Gone(Exception):
    """The client closed the connection."""


# --------------------------------------------------------------------------- server
class FakeOpenAI:
    """The fake server. ``api_key=None`` accepts any (or no) key."""

    def __init__(self, api_key: str | None = "sk-test-key") -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.chat_replies: deque[ChatReply | ErrorReply | Hang] = deque()
        self.speech_replies: deque[SpeechReply | ErrorReply | Hang] = deque()
        self.transcription_replies: deque[TranscriptionReply | ErrorReply | Hang] = deque()
        #: Responses the client abandoned before they were complete (connection closed).
        self.aborted = 0
        #: Chunks (SSE events / PCM chunks) written per streamed response, in order.
        self.chunks_sent: list[int] = []
        self._aborted_event = asyncio.Event()
        self._request_event = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> FakeOpenAI:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting ------------------------------------------------------------------
    def script_chat(self, *replies: ChatReply | ErrorReply | Hang) -> None:
        self.chat_replies.extend(replies)

    def script_speech(self, *replies: SpeechReply | ErrorReply | Hang) -> None:
        self.speech_replies.extend(replies)

    def script_transcription(self, *replies: TranscriptionReply | ErrorReply | Hang) -> None:
        self.transcription_replies.extend(replies)

    async def wait_aborted(self, count: int = 1, within: float = 2.0) -> None:
        """Wait until ``count`` responses were abandoned by the client."""
        async with asyncio.timeout(within):
            while self.aborted < count:
                self._aborted_event.clear()
                await self._aborted_event.wait()

    async def wait_requests(self, count: int = 1, within: float = 2.0) -> None:
        """Wait until ``count`` requests were received."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self._request_event.clear()
                await self._request_event.wait()

    def _record(self, recorded: Recorded) -> None:
        self.requests.append(recorded)
        self._request_event.set()

    # -- helpers --------------------------------------------------------------------
    def _record_abort(self) -> None:
        self.aborted += 1
        self._aborted_event.set()

    @staticmethod
    def _gone(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def _sleep(self, request: web.Request, seconds: float) -> None:
        """Sleep, but notice promptly when the client hangs up."""
        end = time.monotonic() + seconds
        while True:
            if self._gone(request):
                raise _Gone
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.005))

    async def _hang(self, request: web.Request) -> None:
        """Wait until the client hangs up (raises :class:`_Gone`) or the server closes."""
        while not self._closing:
            await self._sleep(request, 0.01)

    async def _write(self, request: web.Request, resp: web.StreamResponse, data: bytes) -> None:
        if self._gone(request):
            raise _Gone
        try:
            await resp.write(data)
        except (ConnectionError, RuntimeError) as exc:
            raise _Gone from exc

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", "openai-processing-ms": "12"}

    def _error(self, reply: ErrorReply) -> web.Response:
        return web.json_response(
            error_body(reply.message, reply.type, reply.code, reply.param),
            status=reply.status,
            headers={**self._headers(), **reply.headers},
        )

    def _bad_request(self, message: str, param: str | None = None) -> web.Response:
        return self._error(ErrorReply(400, message, "invalid_request_error", None, param))

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return self._error(
                ErrorReply(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                    "or as the password field (with blank username) if you're accessing the API "
                    "from your browser and are prompted for a username.",
                    "invalid_request_error",
                )
            )
        key = header[7:].strip()
        if key != self.api_key:
            masked = key[:3] + "*" * 10 + key[-4:] if len(key) > 8 else key
            return self._error(
                ErrorReply(
                    401,
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                )
            )
        return None

    async def _streamed(
        self,
        request: web.Request,
        content_type: str,
        chunks: list[bytes],
        first_delay: float,
        delay: float,
        stall_after: int | None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type, **self._headers()})
        resp.enable_chunked_encoding()
        sent = 0
        self.chunks_sent.append(0)
        slot = len(self.chunks_sent) - 1
        try:
            await resp.prepare(request)
            for i, chunk in enumerate(chunks):
                if stall_after is not None and i >= stall_after:
                    await self._hang(request)
                    return resp
                wait = first_delay if i == 1 else delay
                if i > 0 and wait:
                    await self._sleep(request, wait)
                await self._write(request, resp, chunk)
                sent += 1
                self.chunks_sent[slot] = sent
            await resp.write_eof()
        except _Gone:
            self._record_abort()
        except asyncio.CancelledError:  # aiohttp cancelled the handler: client is gone
            self._record_abort()
            raise
        return resp

    # -- chat -----------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._bad_request("We could not parse the JSON body of your request.")
        self._record(Recorded(request.path, CIMultiDict(request.headers), json=body))
        if (err := self._auth_error(request)) is not None:
            return err
        if problem := _check_chat(body):
            return self._bad_request(*problem)
        reply = self.chat_replies.popleft() if self.chat_replies else ChatReply("Hello!")
        if isinstance(reply, ErrorReply):
            return self._error(reply)
        if isinstance(reply, Hang):
            try:
                await self._hang(request)
            except _Gone:
                self._record_abort()
            return web.Response(status=503)
        model = body["model"]
        if not body.get("stream"):
            return web.json_response(_completion(reply, model), headers=self._headers())
        if reply.raw_events is not None:
            events = [f"data: {e}\n\n".encode() for e in reply.raw_events]
        else:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = [
                f"data: {json.dumps(c)}\n\n".encode() for c in _chunks(reply, model, include_usage)
            ]
            if reply.done:
                events.append(b"data: [DONE]\n\n")
        return await self._streamed(
            request,
            "text/event-stream; charset=utf-8",
            events,
            reply.first_delay,
            reply.delay,
            reply.stall_after,
        )

    # -- speech ---------------------------------------------------------------------
    async def _speech(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._bad_request("We could not parse the JSON body of your request.")
        self._record(Recorded(request.path, CIMultiDict(request.headers), json=body))
        if (err := self._auth_error(request)) is not None:
            return err
        for name in ("model", "input", "voice"):
            if not body.get(name):
                return self._bad_request(f"Missing required parameter: '{name}'.", name)
        if len(body["input"]) > 4096:
            return self._bad_request(
                "string too long. Expected a string with maximum length "
                f"4096, but got a string with length {len(body['input'])} "
                "instead.",
                "input",
            )
        if body.get("response_format", "mp3") != "pcm":
            return self._bad_request(
                "this fake server only produces response_format 'pcm'", "response_format"
            )
        reply = self.speech_replies.popleft() if self.speech_replies else SpeechReply()
        if isinstance(reply, ErrorReply):
            return self._error(reply)
        if isinstance(reply, Hang):
            try:
                await self._hang(request)
            except _Gone:
                self._record_abort()
            return web.Response(status=503)
        pcm = (
            reply.pcm
            if reply.pcm is not None
            else speech_pcm(len(body["input"]) * reply.seconds_per_char)
        )
        step = max(1, reply.chunk_bytes)
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        if reply.first_delay:
            try:
                await self._sleep(request, reply.first_delay)
            except _Gone:
                self._record_abort()
                return web.Response()
        return await self._streamed(
            request, reply.content_type, chunks, reply.delay, reply.delay, reply.stall_after
        )

    # -- transcriptions ---------------------------------------------------------------
    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        form: dict[str, str] = {}
        files: dict[str, tuple[str, str, bytes]] = {}
        post = await request.post()
        for key, value in post.items():
            if isinstance(value, web.FileField):
                files[key] = (value.filename, value.content_type, value.file.read())
            else:
                form[key] = str(value)
        self._record(Recorded(request.path, CIMultiDict(request.headers), form=form, files=files))
        if (err := self._auth_error(request)) is not None:
            return err
        if "file" not in files:
            return self._bad_request("Missing required parameter: 'file'.", "file")
        if not form.get("model"):
            return self._bad_request("Missing required parameter: 'model'.", "model")
        name = files["file"][0]
        if not name.lower().endswith(
            (".flac", ".m4a", ".mp3", ".mp4", ".mpeg", ".mpga", ".oga", ".ogg", ".wav", ".webm")
        ):
            return self._bad_request(
                "Invalid file format. Supported formats: ['flac', 'm4a', "
                "'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
                "file",
            )
        reply = (
            self.transcription_replies.popleft()
            if self.transcription_replies
            else TranscriptionReply()
        )
        if isinstance(reply, ErrorReply):
            return self._error(reply)
        if isinstance(reply, Hang):
            try:
                await self._hang(request)
            except _Gone:
                self._record_abort()
            return web.Response(status=503)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        result: dict[str, Any] = {"text": reply.text}
        if form["model"] != "whisper-1":
            result["usage"] = {
                "type": "tokens",
                "input_tokens": 20,
                "output_tokens": 5,
                "total_tokens": 25,
            }
        return web.json_response(result, headers=self._headers())


# --------------------------------------------------------------------------- chat wire format
def _check_chat(body: dict[str, Any]) -> tuple[str, str | None] | None:
    """The checks OpenAI applies that the provider could get wrong (400 otherwise)."""
    if not body.get("model"):
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "[] is too short - 'messages'", "messages"
    if "tools" in body and not body["tools"]:
        return "[] is too short - 'tools'", "tools"
    for t in body.get("tools") or []:
        if t.get("type") != "function" or not (t.get("function") or {}).get("name"):
            return "Missing required parameter: 'tools[0].function.name'.", "tools"
    open_ids: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            for c in m["tool_calls"]:
                if c.get("type") != "function" or not isinstance(
                    c.get("function", {}).get("arguments"), str
                ):
                    return (
                        f"Invalid type for 'messages[{i}].tool_calls': arguments must be a string"
                    ), f"messages[{i}].tool_calls"
            open_ids = {c["id"] for c in m["tool_calls"]}
        elif role == "tool":
            if m.get("tool_call_id") not in open_ids:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                ), f"messages.[{i}].role"
        elif role == "user" and isinstance(m.get("content"), list):
            if problem := _check_parts(m["content"], i):
                return problem
            open_ids = set()
        elif role not in ("system", "user", "assistant", "developer"):
            return (
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                "'user', 'tool', 'function', and 'developer'.",
                f"messages[{i}].role",
            )
        else:
            open_ids = set()
    return None


def _check_parts(parts: list[Any], i: int) -> tuple[str, str | None] | None:
    """Content parts as OpenAI checks them: text parts, and image parts whose ``data:``
    URL holds a real PNG/JPEG/GIF/WebP (by its bytes)."""
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind != "image_url":
            return (
                f"Invalid value: '{kind}'. Supported values are: 'text', 'image_url', "
                "'input_audio', 'refusal', 'audio', and 'file'.",
                f"messages[{i}].content[{j}].type",
            )
        url = (part.get("image_url") or {}).get("url", "")
        head, _, data = url.partition(",")
        if not (head.startswith("data:image/") and head.endswith(";base64")):
            return (
                "Invalid 'image_url': expected a base64-encoded data URL with an image MIME type",
                f"messages[{i}].content[{j}].image_url.url",
            )
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            return "Invalid base64 image_url.", f"messages[{i}].content[{j}].image_url.url"
        if (
            not raw.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8"))
            and raw[8:12] != b"WEBP"
        ):
            return (
                "You uploaded an unsupported image. Please make sure your image is below 20 "
                "MB in size and is of one the following formats: ['png', 'jpeg', 'gif', "
                "'webp'].",
                None,
            )
    return None


def _arguments_text(call: dict[str, Any]) -> str:
    args = call.get("arguments", {})
    return args if isinstance(args, str) else json.dumps(args)


def _chunks(reply: ChatReply, model: str, include_usage: bool) -> list[dict[str, Any]]:
    cid = f"chatcmpl-{uuid.uuid4().hex[:29]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    out: list[dict[str, Any]] = []
    pieces = (
        reply.pieces
        if reply.pieces is not None
        else ([w if i == 0 else " " + w for i, w in enumerate(reply.text.split())])
    )
    if pieces or not reply.tool_calls:
        out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        out.extend(chunk({"content": p}) for p in pieces)
    for index, call in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        if not out:
            out.append(
                chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})
            )
        else:
            out.append(chunk({"tool_calls": [head]}))
        text = _arguments_text(call)
        for i in range(0, len(text), max(1, reply.fragment)):
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": text[i : i + reply.fragment]},
                            }
                        ]
                    }
                )
            )
    if reply.error_event is not None:
        out.append({"error": reply.error_event})
        return out
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    out.append(chunk({}, finish))
    if include_usage:
        usage = chunk({})
        usage["choices"] = []
        usage["usage"] = {
            "prompt_tokens": 10,
            "completion_tokens": len(out),
            "total_tokens": 10 + len(out),
        }
        out.append(usage)
    return out


def _completion(reply: ChatReply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text or None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": c["name"], "arguments": _arguments_text(c)},
            }
            for c in reply.tool_calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake0001",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason
                or ("tool_calls" if reply.tool_calls else "stop"),
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def wav_samples(data: bytes) -> tuple[int, int, int, np.ndarray]:
    """``(channels, sample_width, rate, int16 samples)`` of WAV bytes (raises if invalid).

    >>> import wave
    >>> buf = io.BytesIO()
    >>> with wave.open(buf, "wb") as w:
    ...     w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
    ...     w.writeframes(b"\\x01\\x00" * 4)
    >>> wav_samples(buf.getvalue())[:3]
    (1, 2, 16000)
    """
    import wave

    with contextlib.closing(wave.open(io.BytesIO(data), "rb")) as w:
        frames = w.readframes(w.getnframes())
        return (w.getnchannels(), w.getsampwidth(), w.getframerate(), np.frombuffer(frames, "<i2"))
