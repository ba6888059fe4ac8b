"""A camera board for :class:`~xiaozhi_core.device.FakeDevice`: the firmware's
``self.camera.take_photo`` MCP tool and its photo upload (``Esp32Camera::Explain``).

:func:`camera_mcp` extends :func:`~xiaozhi_core.sim.driver.firmware_mcp`: it remembers the
``capabilities.vision`` URL and token from ``initialize``, lists the photo tool, and on
``tools/call`` uploads ``photo`` byte for byte as the firmware does (chunked multipart,
boundary ``----ESP32_CAMERA_BOUNDARY``, part ``question`` then part ``file`` named
``camera.jpg``, headers ``Device-Id``, ``Client-Id``, ``Authorization: Bearer``); the
server's answer body is the tool result, and a non-200 answer an MCP error ("Failed to
upload photo"), as on the device.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .driver import firmware_mcp

__all__ = ["BOUNDARY", "TAKE_PHOTO", "camera_mcp", "upload_photo"]

BOUNDARY = "----ESP32_CAMERA_BOUNDARY"
TAKE_PHOTO = {
    "name": "self.camera.take_photo",
    "description": "Always remember you have a camera. If the user asks you to see something, "
    "use this tool to take a photo and then explain it.\nArgs:\n  `question`: "
    "The question that you want to ask about the photo.\nReturn:\n  A JSON "
    "object that provides the photo information.",
    "inputSchema": {
        "type": "object",
        "properties": {"question": {"type": "string"}},
        "required": ["question"],
    },
}


async def upload_photo(
    url: str,
    token: str,
    device_id: str,
    client_id: str,
    question: str,
    photo: bytes,
    mime: str = "image/jpeg",
) -> tuple[int, str]:
    """POST ``photo`` as the firmware does; ``(status, body)``."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="question"\r\n\r\n'
        f'{question}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="camera.jpg"\r\nContent-Type: {mime}\r\n\r\n'
    ).encode()

    async def body() -> AsyncIterator[bytes]:  # chunked, like the JPEG encoder's queue
        yield head
        for i in range(0, len(photo), 4096):
            yield photo[i : i + 4096]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    headers = {
        "Device-Id": device_id,
        "Client-Id": client_id,
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body(), headers=headers) as resp,
    ):
        return resp.status, await resp.text()


def camera_mcp(photo: bytes, device_id: str, client_id: str, mime: str = "image/jpeg") -> Any:
    """An MCP handler (coroutine) of a camera board that shows ``photo``.

    ``handler.vision`` holds the last ``capabilities.vision``; ``handler.uploads`` the
    ``(status, body)`` of every upload.
    """
    base = firmware_mcp()
    vision: dict[str, str] = {}
    uploads: list[tuple[int, str]] = []

    async def handle(payload: dict[str, Any]) -> dict[str, Any] | None:
        rid, method = payload.get("id"), payload.get("method")
        params = payload.get("params") if isinstance(payload.get("params"), dict) else {}
        if method == "initialize":
            caps = params.get("capabilities") if isinstance(params, dict) else None
            offered = caps.get("vision") if isinstance(caps, dict) else None
            if isinstance(offered, dict) and isinstance(offered.get("url"), str):
                vision.clear()
                vision.update(url=offered["url"], token=str(offered.get("token") or ""))
        if method == "tools/list" and isinstance(rid, int):
            reply: dict[str, Any] | None = base(payload)
            assert reply is not None
            reply["result"]["tools"] = [*reply["result"]["tools"], TAKE_PHOTO]
            return reply
        if (
            method == "tools/call"
            and isinstance(params, dict)
            and params.get("name") == TAKE_PHOTO["name"]
        ):
            question = str((params.get("arguments") or {}).get("question", ""))
            if not vision.get("url"):
                return {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"message": "Image explain URL or token is not set"},
                }
            status, text = await upload_photo(
                vision["url"], vision["token"], device_id, client_id, question, photo, mime
            )
            uploads.append((status, text))
            if status != 200:
                return {"jsonrpc": "2.0", "id": rid, "error": {"message": "Failed to upload photo"}}
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "result": {"content": [{"type": "text", "text": text}], "isError": False},
            }
        answer: dict[str, Any] | None = base(payload)
        return answer

    handle.vision = vision  # type: ignore[attr-defined]
    handle.uploads = uploads  # type: ignore[attr-defined]
    return handle
