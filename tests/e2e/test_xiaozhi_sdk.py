"""The third-party client library ``xiaozhi-sdk`` (PyPI), installed in a throw-away venv,
against this server: its MCP handshake completes (it reads capabilities.vision
unconditionally) and the tool it registers is called by the LLM.

Before the server offered ``capabilities.vision`` the SDK's handler failed on it
(``KeyError: 'vision'``), never answered ``initialize`` and the server's MCP set-up
timed out."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xiaozhi_core.config import merge
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.testing import fake_config

pytestmark = pytest.mark.slow

SDK = "xiaozhi-sdk==0.5.1"

CLIENT = textwrap.dedent("""
    import asyncio, json, sys
    from xiaozhi_sdk import XiaoZhiWebsocket

    ws_url, ota_url = sys.argv[1], sys.argv[2]
    calls, events = [], []

    def add(arguments):
        calls.append(arguments)
        return {"sum": arguments["a"] + arguments["b"]}, False

    TOOL = {"name": "calc.add", "description": "Add two integers",
            "inputSchema": {"type": "object", "properties": {
                "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
            "tool_func": add}

    async def main():
        done = asyncio.Event()

        async def on_message(message):
            events.append(message)
            if message.get("type") == "tts" and message.get("state") == "stop":
                done.set()

        client = XiaoZhiWebsocket(on_message, url=ws_url, ota_url=ota_url)
        await client.set_mcp_tool([TOOL])
        assert await client.init_connection("aa:bb:cc:dd:ee:42")
        await asyncio.sleep(1.5)                 # the server's MCP set-up
        await client.send_text("what is two plus three")
        await asyncio.wait_for(done.wait(), 30)
        await client.close()
        print(json.dumps({"calls": calls, "explain_url": client.explain_url,
                          "subtitles": [e["text"] for e in events
                                        if e.get("type") == "tts"
                                        and e.get("state") == "sentence_start"]}))

    asyncio.run(main())
""")


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("xiaozhi-sdk-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", SDK],
        check=True,
        timeout=900,
    )
    return python


async def test_xiaozhi_sdk_completes_mcp_and_its_tool_is_called(sdk_python):
    server = await XiaozhiServer.create(
        fake_config(
            **merge(
                {"server": {"limits": {"max_loop_lag_ms": 0}}},
                {
                    "llm": {
                        "provider": "fake",
                        "options": {
                            "reply": "The sum is {tool_result}.",
                            "tool_calls": [{"name": "calc_add", "arguments": {"a": 2, "b": 3}}],
                        },
                    }
                },
            )
        )
    )
    await server.start(port=0, http_port=0)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(sdk_python),
            "-c",
            CLIENT,
            server.ws_url,
            server.ota_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await server.stop()
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["calls"] == [{"a": 2, "b": 3}]
    assert result["explain_url"] == ""  # no vision provider: explicit ""
    assert any("5" in s for s in result["subtitles"]), result
    tool_msg = server.providers.llm.instance.requests[1][0][-1]
    assert tool_msg.role == "tool" and json.loads(tool_msg.content) == {"sum": 5}
