"""MCP vision end to end: a camera board (FakeDevice + the firmware's take_photo tool and
upload) gets capabilities.vision in initialize, the LLM calls the tool, the device POSTs a
real JPEG to the explain URL, the vision provider answers, the answer is the tool result
and is spoken. Plus the endpoint's refusals: no/foreign/expired token, another device,
oversized, not an image, no provider."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from xiaozhi_testkit.images import jpeg, png

from xiaozhi_core.device import FakeDevice
from xiaozhi_core.sim.camera import camera_mcp, upload_photo

MAC = "aa:bb:cc:dd:ee:ff"
LLM = {
    "provider": "fake",
    "options": {
        "reply": "Here is what I see. {tool_result}",
        "tool_calls": [
            {
                "name": "self_camera_take_photo",
                "arguments": {"question": "What fruit is on the table?"},
            }
        ],
    },
}


async def camera_session(server, photo: bytes, mime: str = "image/jpeg") -> tuple[Any, Any]:
    handler = camera_mcp(photo, MAC, "cam-1", mime)
    dev = FakeDevice(
        server.ws_url, device_id=MAC, client_id="cam-1", features={"mcp": True}, mcp_handler=handler
    )
    await dev.connect()
    for _ in range(200):
        session = next(iter(server.sessions.values()))
        if session.tools.device:
            break
        await asyncio.sleep(0.02)
    return dev, handler


async def test_take_photo_round_trip_reaches_the_llm_and_is_spoken(make_server):
    server = await make_server(vision={"provider": "fake"}, llm=LLM)
    photo = jpeg(96, 64)
    dev, handler = await camera_session(server, photo)
    try:
        assert handler.vision["url"] == f"http://127.0.0.1:{server.http_port}/mcp/vision/explain"
        assert len(handler.vision["token"]) >= 32
        await dev.listen("detect", text="what do you see")
        await dev.wait_for("tts", "stop", timeout=15)
    finally:
        await dev.close()
    vision = server.providers.vision.instance
    assert vision.calls == [(photo, "image/jpeg", "What fruit is on the table?")]
    assert handler.uploads[0][0] == 200
    tool_msg = server.providers.llm.instance.requests[1][0][-1]
    assert tool_msg.role == "tool"
    assert json.loads(tool_msg.content) == {
        "success": True,
        "action": "RESPONSE",
        "response": f"The photo (image/jpeg, {len(photo)} bytes) shows a red apple.",
    }
    spoken = " ".join(m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start")
    assert "red apple" in spoken and dev.audio_frames()


async def test_png_is_accepted_too(make_server):
    server = await make_server(vision={"provider": "fake"}, llm=LLM)
    dev, handler = await camera_session(server, png(), "image/png")
    try:
        status, body = await upload_photo(
            handler.vision["url"],
            handler.vision["token"],
            MAC,
            "cam-1",
            "colour?",
            png(),
            "image/png",
        )
    finally:
        await dev.close()
    assert status == 200 and "image/png" in json.loads(body)["response"]


async def test_without_a_provider_initialize_still_has_an_explicit_vision(make_server):
    server = await make_server(llm=LLM)
    dev, handler = await camera_session(server, jpeg())
    try:
        assert handler.vision == {"url": "", "token": ""}  # firmware/xiaozhi-sdk accept it
        await dev.listen("detect", text="what do you see")
        await dev.wait_for("tts", "stop", timeout=15)
    finally:
        await dev.close()
    tool_msg = server.providers.llm.instance.requests[1][0][-1]
    assert "explain URL or token is not set" in tool_msg.content


async def post(
    url: str,
    token: str | None,
    body: bytes,
    *,
    device: str = MAC,
    content_type: str = "multipart/form-data; boundary=B",
) -> tuple[int, dict]:
    headers = {"Device-Id": device, "Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


def form(image: bytes, question: str = "what?") -> bytes:
    return (
        b'--B\r\nContent-Disposition: form-data; name="question"\r\n\r\n'
        + question.encode()
        + b'\r\n--B\r\nContent-Disposition: form-data; name="file";'
        b' filename="camera.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + image + b"\r\n--B--\r\n"
    )


@pytest.fixture
async def granted(make_server):
    server = await make_server(
        vision={"provider": "fake"}, server={"vision": {"max_image_bytes": 20_000}}
    )
    dev, handler = await camera_session(server, jpeg())
    yield server, dev, handler.vision["url"], handler.vision["token"]
    await dev.close()


async def test_valid_upload_is_answered(granted):
    server, dev, url, token = granted
    status, body = await post(url, token, form(jpeg()))
    assert status == 200 and body["success"] is True


@pytest.mark.parametrize(
    "token,status,message",
    [
        (None, 401, "missing token"),
        ("", 401, "missing token"),
        ("forged-token-000000000000000000", 401, "unknown token"),
    ],
)
async def test_missing_or_foreign_token_is_refused(granted, token, status, message):
    server, dev, url, _ = granted
    code, body = await post(url, token, form(jpeg()))
    assert (code, body["success"]) == (status, False) and message in body["error"]
    assert server.providers.vision.instance.calls == []


async def test_token_of_another_device_and_of_an_ended_session_are_refused(granted):
    server, dev, url, token = granted
    code, body = await post(url, token, form(jpeg()), device="11:22:33:44:55:66")
    assert code == 403 and "another device" in body["error"]
    await dev.close()
    for _ in range(100):
        if not server.sessions:
            break
        await asyncio.sleep(0.02)
    code, body = await post(url, token, form(jpeg()))
    assert code == 401 and "unknown token" in body["error"]


async def test_expired_token_is_refused(make_server):
    server = await make_server(vision={"provider": "fake"}, server={"vision": {"token_ttl": 0.2}})
    dev, handler = await camera_session(server, jpeg())
    try:
        await asyncio.sleep(0.3)
        code, body = await post(handler.vision["url"], handler.vision["token"], form(jpeg()))
    finally:
        await dev.close()
    assert code == 401 and body["error"] == "token expired"


@pytest.mark.parametrize(
    "body,content_type,status,message",
    [
        (form(jpeg(320, 240, quality=2) * 10), None, 413, "exceeds"),
        (form(b"GIF89a" + bytes(100)), None, 415, "not a JPEG or PNG"),
        (form(b"just some text"), None, 415, "not a JPEG or PNG"),
        (jpeg(), "image/jpeg", 415, "expected multipart/form-data"),
        (
            b'--B\r\nContent-Disposition: form-data; name="question"\r\n\r\nq\r\n--B--\r\n',
            None,
            400,
            "no 'file' part",
        ),
    ],
)
async def test_bad_uploads_get_4xx(granted, body, content_type, status, message):
    server, dev, url, token = granted
    kw = {"content_type": content_type} if content_type else {}
    code, answer = await post(url, token, body, **kw)
    assert code == status and message in answer["error"]
    assert server.providers.vision.instance.calls == []


async def test_no_provider_answers_503_with_a_valid_token(make_server):
    server = await make_server(llm=LLM)
    dev, _ = await camera_session(server, jpeg())
    try:
        token = server.vision_tokens.issue("s", MAC)
        url = f"http://127.0.0.1:{server.http_port}/mcp/vision/explain"
        code, body = await post(url, token, form(jpeg()))
    finally:
        await dev.close()
    assert code == 503 and "no vision provider" in body["error"]


async def test_oversized_chunked_upload_is_cut_off_while_reading(granted):
    server, dev, url, token = granted
    big = jpeg(320, 240, quality=2) * 10  # no Content-Length: chunked
    status, body = await upload_photo(url, token, MAC, "cam-1", "q", big)
    assert status == 413 and "image exceeds 20000 bytes" in json.loads(body)["error"]
