"""MCP vision: the camera's photo upload, ``POST /mcp/vision/explain`` on the HTTP port.

A board with a camera offers the MCP tool ``self.camera.take_photo``. In MCP
``initialize`` the session hands the device ``capabilities.vision = {url, token}``; when
the LLM calls the tool, the device captures a JPEG and POSTs it to ``url`` exactly as the
firmware's ``Esp32Camera::Explain`` does:

* headers ``Authorization: Bearer <token>``, ``Device-Id``, ``Client-Id``,
  ``Content-Type: multipart/form-data; boundary=----ESP32_CAMERA_BOUNDARY``, chunked;
* part ``question`` (text), then part ``file`` (``filename="camera.jpg"``,
  ``Content-Type: image/jpeg``).

The answer body becomes the tool's result text: ``{"success": true, "action":
"RESPONSE", "response": <explanation>}``; failures are 4xx/5xx with ``{"success": false,
"error": <one line>}`` (the shape other clients, e.g. xiaozhi-sdk, check).

Tokens are random, one per session, valid while that session lives and at most
``server.vision.token_ttl`` seconds; the upload must come from the token's device when
it names one. Uploads larger than ``max_image_bytes`` get 413, anything that is not a
JPEG or PNG (by its bytes, not its declared type) 415.

Example:
    >>> tokens = VisionTokens(ttl=60)
    >>> token = tokens.issue("session-1", "aa:bb:cc:dd:ee:ff", now=0)
    >>> tokens.check(token, now=30)
    ('session-1', 'aa:bb:cc:dd:ee:ff')
    >>> tokens.check(token, now=61)
    Traceback (most recent call last):
    ...
    xiaozhi_core.gateway.vision.VisionRefused: token expired
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import BodyPartReader, web

if TYPE_CHECKING:
    from ..providers import BoundVision

__all__ = ["EXPLAIN_PATH", "VisionRefused", "VisionTokens", "explain_handler", "sniff_image"]

log = logging.getLogger(__name__)

EXPLAIN_PATH = "/mcp/vision/explain"


class VisionRefused(Exception):
    """Why an upload is refused (sent back as the error, one line)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Grant:
    session_id: str
    device_id: str
    expires: float


class VisionTokens:
    """Per-session upload tokens (in memory: valid only in this process)."""

    def __init__(self, ttl: float = 3600.0) -> None:
        self.ttl = ttl
        self._grants: dict[str, _Grant] = {}

    def issue(self, session_id: str, device_id: str, now: float | None = None) -> str:
        """A new token for this session (the previous one of the session stays valid)."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        token = secrets.token_urlsafe(24)
        self._grants[token] = _Grant(session_id, device_id, now + self.ttl)
        return token

    def revoke(self, session_id: str) -> None:
        """The session ended: its tokens stop working."""
        for token in [t for t, g in self._grants.items() if g.session_id == session_id]:
            del self._grants[token]

    def check(self, token: str, now: float | None = None) -> tuple[str, str]:
        """``(session_id, device_id)`` of a valid token, else :class:`VisionRefused`."""
        now = time.monotonic() if now is None else now
        grant = self._grants.get(token) if token else None
        if grant is None:
            raise VisionRefused(
                "unknown token (each session gets its own in MCP initialize)"
                if token
                else "missing token (Authorization: Bearer <token>)"
            )
        if now > grant.expires:
            del self._grants[token]
            raise VisionRefused("token expired")
        return grant.session_id, grant.device_id

    def _expire(self, now: float) -> None:
        for token in [t for t, g in self._grants.items() if now > g.expires]:
            del self._grants[token]


def sniff_image(data: bytes) -> str | None:
    """The image type by its magic bytes: ``image/jpeg``, ``image/png`` or None.

    >>> sniff_image(bytes.fromhex("ffd8ffe0")), sniff_image(b"GIF89a"), sniff_image(b"")
    ('image/jpeg', None, None)
    """
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def explain_handler(
    tokens: VisionTokens, vision: BoundVision | None, *, max_bytes: int, timeout: float
) -> Handler:
    """The aiohttp handler of :data:`EXPLAIN_PATH`."""

    def fail(status: int, message: str, request: web.Request) -> web.Response:
        log.info("vision upload from %s refused (%d): %s", request.remote, status, message)
        return web.json_response({"success": False, "error": message}, status=status)

    async def explain(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "").strip()
        token = auth[6:].strip() if auth[:6].lower() == "bearer" else auth
        try:
            session_id, device_id = tokens.check(token)
        except VisionRefused as exc:
            return fail(exc.status, str(exc), request)
        claimed = (request.headers.get("Device-Id") or "").strip().lower()
        if claimed and device_id and claimed != device_id.lower():
            return fail(403, "token belongs to another device", request)
        if request.content_length is not None and request.content_length > max_bytes + 4096:
            return fail(
                413, f"upload of {request.content_length} bytes exceeds {max_bytes} bytes", request
            )
        if request.content_type != "multipart/form-data":
            return fail(
                415, "expected multipart/form-data with fields 'question' and 'file'", request
            )
        try:
            question, image = await _read_form(request, max_bytes)
        except VisionRefused as exc:
            return fail(exc.status, str(exc), request)
        except (ValueError, AssertionError, asyncio.IncompleteReadError) as exc:
            return fail(400, f"malformed multipart body: {exc}", request)
        mime = sniff_image(image)
        if mime is None:
            return fail(415, "the file is not a JPEG or PNG image", request)
        if vision is None:
            return fail(503, "no vision provider is configured on this server", request)
        try:
            async with asyncio.timeout(timeout):
                text = await vision.explain(image, mime, question or "Describe the photo.")
        except TimeoutError:
            return fail(504, f"vision provider gave no answer within {timeout:g} s", request)
        except Exception as exc:
            log.warning(
                "session %s: vision provider failed: %s: %s", session_id, type(exc).__name__, exc
            )
            return fail(502, f"vision provider failed: {type(exc).__name__}", request)
        log.info(
            "session %s: explained a %d-byte %s (%r)", session_id, len(image), mime, question[:60]
        )
        body: dict[str, object] = {"success": True, "action": "RESPONSE", "response": text}
        return web.json_response(body)

    return explain


async def _read_form(request: web.Request, max_bytes: int) -> tuple[str, bytes]:
    """The ``question`` and ``file`` parts, reading at most ``max_bytes`` of file."""
    reader = await request.multipart()
    question, image = "", None
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise VisionRefused("nested multipart is not accepted", 400)
        name = part.name
        data = bytearray()
        limit = max_bytes if name == "file" else 4096
        while chunk := await part.read_chunk(65536):
            data += chunk
            if len(data) > limit:
                what = "image" if name == "file" else f"field {name!r}"
                raise VisionRefused(f"{what} exceeds {limit} bytes", 413)
        if name == "question":
            question = bytes(data).decode("utf-8", "replace").strip()
        elif name == "file":
            image = bytes(data)
    if image is None:
        raise VisionRefused("no 'file' part in the upload", 400)
    return question, image
