"""FakeDevice and ``xiaozhi simulate`` against a server that sends what no xiaozhi server
should: text frames that are not JSON objects, MCP requests with non-object parts, a
hello with malformed ``audio_params``. The device ignores the junk as the firmware does
(and records it); simulate ends with a one-line error instead of a traceback."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from xiaozhi_core.device import FakeDevice
from xiaozhi_core.errors import XiaozhiError
from xiaozhi_core.sim.driver import firmware_mcp
from xiaozhi_core.sim.simulate import SimulateOptions, simulate
from xiaozhi_core.types import JSONObject

from .conftest import write_test_wav

HELLO = {
    "type": "hello",
    "transport": "websocket",
    "session_id": "s-1",
    "audio_params": {"format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60},
}


@asynccontextmanager
async def scripted(script: Callable[[ServerConnection], Awaitable[None]]) -> AsyncIterator[str]:
    """A WebSocket server on loopback that runs ``script`` on each connection."""

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the device's hello
        await script(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/xiaozhi/v1/"


async def test_text_frames_that_are_not_json_objects_are_ignored_and_recorded() -> None:
    async def script(ws: ServerConnection) -> None:
        for junk in ("[1, 2]", "not json", '"hello"', "null"):
            await ws.send(junk)
        await ws.send(json.dumps(HELLO))
        await ws.send(json.dumps({"type": "stt", "text": "hi"}))

    async with scripted(script) as url, FakeDevice(url) as dev:
        await dev.wait_for("stt")
        assert dev.session_id == "s-1"
        assert dev.malformed == ["[1, 2]", "not json", '"hello"', "null"]
        assert dev.events() == ["hello", "stt"]


async def test_mcp_requests_with_non_object_parts_do_not_kill_the_device() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps(HELLO))
        await ws.send(json.dumps({"type": "mcp", "payload": [1]}))
        await ws.send(
            json.dumps(
                {
                    "type": "mcp",
                    "payload": {
                        "jsonrpc": "2.0",
                        "id": 7,
                        "method": "tools/call",
                        "params": {"name": "self.audio_speaker.set_volume", "arguments": [50]},
                    },
                }
            )
        )
        await ws.send(json.dumps({"type": "tts", "state": "stop"}))

    replies: list[JSONObject | None] = []
    handler = firmware_mcp()

    def mcp(payload: JSONObject) -> JSONObject | None:
        reply = handler(payload)
        replies.append(reply)
        return reply

    async with scripted(script) as url, FakeDevice(url, mcp_handler=mcp) as dev:
        await dev.wait_for("tts", "stop")
        # a payload that is not an object is not handed to the handler; the call with
        # list arguments is answered with an error (it used to raise in the reader)
        assert replies == [
            {
                "jsonrpc": "2.0",
                "id": 7,
                "error": {"message": "Unknown tool: self.audio_speaker.set_volume"},
            }
        ]
        assert dev.closed_code is None


async def test_tts_message_without_state_is_logged_not_raised() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps(HELLO))
        await ws.send(json.dumps({"type": "tts"}))
        await ws.send(json.dumps({"type": 5}))
        await ws.send(json.dumps({"type": "tts", "state": "stop"}))

    async with scripted(script) as url, FakeDevice(url) as dev:
        await dev.wait_for("tts", "stop")
        assert dev.events() == ["hello", "tts:None", "?", "tts:stop"]


@pytest.mark.parametrize(
    ("audio_params", "error"),
    [
        ([24000], "audio_params is not an object: [24000]"),
        ({"sample_rate": None}, "audio_params.sample_rate None is not an Opus rate"),
        ({"sample_rate": "16000"}, "audio_params.sample_rate '16000' is not an Opus rate"),
        ({"sample_rate": 22050}, "audio_params.sample_rate 22050 is not an Opus rate"),
    ],
)
async def test_simulate_refuses_a_hello_with_malformed_audio_params(
    tmp_path: Path, audio_params: object, error: str
) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps({**HELLO, "audio_params": audio_params}))

    wav = write_test_wav(tmp_path / "q.wav")
    async with scripted(script) as url:
        with pytest.raises(XiaozhiError) as info:
            await asyncio.wait_for(
                simulate(SimulateOptions(url=url, wav=str(wav)), out=io.StringIO()), 20
            )
    assert str(info.value).startswith(f"server hello: {error}")
    assert "\n" not in str(info.value)
