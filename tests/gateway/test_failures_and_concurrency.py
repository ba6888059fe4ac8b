"""Provider failures, vanishing clients (nothing left behind), MCP, tools, strict order
and back-pressure under concurrency."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import weakref

import numpy as np
import pytest

from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.protocol.opus import OpusDecoder
from xiaozhi_core.testing import tone

from .conftest import speak, utterance


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    "llm",
    [
        {"provider": "fake", "options": {"fail": "LLM backend exploded"}},
        {"provider": "fake", "options": {"reply": "one two three four five six", "fail_after": 2}},
        {"provider": "fake_io", "options": {"fail": "cloud said 500"}},
    ],
)
async def test_llm_failure_ends_the_turn_with_alert_and_apology(make_server, llm):
    server = await make_server(llm=llm, session={"apology": "Sorry about that."})
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        alert = await dev.wait_for("alert", timeout=15)
        assert set(alert) >= {"status", "message", "emotion"}  # all three required
        await dev.wait_for("tts", "stop", timeout=15)
        subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
        assert "Sorry about that." in subtitles
        assert dev.audio_frames()  # the apology is spoken
        # the session keeps listening and serving
        mark = len(dev.received)
        await dev.listen("detect", text="are you ok")
        await dev.wait_for("alert", timeout=15, after=mark)
        await dev.wait_for("tts", "stop", timeout=15, after=mark)
    assert 'xiaozhi_turns_total{outcome="failed"} 2.0' in server.render_metrics().decode()


async def test_llm_timeout_is_reported_and_the_session_survives(make_server):
    server = await make_server(
        llm={"provider": "fake_io", "options": {"first_token_delay": 30}},
        server={"timeouts": {"provider": 0.5}},
    )
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        alert = await dev.wait_for("alert", timeout=10)
        assert alert["status"] == "error"
        await dev.wait_for("tts", "stop", timeout=10)
        session = next(iter(server.sessions.values()))
        assert "ProviderTimeout" in session.latencies[-1]["error"]
        # still serving: a typed query goes through the same (slow) LLM and times out again
        mark = len(dev.received)
        await dev.listen("detect", text="hello?")
        await dev.wait_for("alert", timeout=10, after=mark)


async def test_asr_and_tts_failures_are_reported(make_server):
    server = await make_server(asr={"provider": "fake", "options": {"fail": "model crashed"}})
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("alert", timeout=10)
        await dev.wait_for("tts", "stop", timeout=10)
    server2 = await make_server(tts={"provider": "fake_io", "options": {"fail": "tts down"}})
    async with FakeDevice(server2.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("alert", timeout=10)
        await dev.wait_for("tts", "stop", timeout=10)
        assert dev.messages("stt")


async def test_failure_in_one_session_does_not_touch_another(make_server):
    server = await make_server(
        llm={"provider": "fake", "options": {"reply": "Fine. Thanks.", "first_token_delay": 0.2}}
    )
    a = await FakeDevice(server.ws_url, device_id="d:a").connect()
    b = await FakeDevice(server.ws_url, device_id="d:b").connect()
    try:
        await a.send_raw(b"\x00\x00\x99")  # garbage (v1: an invalid Opus packet)
        await a.send_raw("{broken json")
        await asyncio.gather(speak(a), speak(b))
        await asyncio.gather(
            a.wait_for("tts", "stop", timeout=15), b.wait_for("tts", "stop", timeout=15)
        )
        assert not b.messages("alert")
    finally:
        await a.close()
        await b.close()


# --------------------------------------------------------------------------- vanishing
def _session_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if not t.done() and ":" in t.get_name()}


async def test_client_vanishing_mid_turn_leaves_nothing_behind(make_server):
    server = await make_server(
        llm={
            "provider": "fake",
            "options": {"reply": "A very long answer. " * 20, "token_delay": 0.01},
        }
    )
    tasks_before = _session_tasks()
    threads_before = {t.ident for t in threading.enumerate()}
    dev = await FakeDevice(server.ws_url).connect()
    await speak(dev)
    await dev.wait_for("tts", "start", timeout=15)
    await dev.wait_frames(1)
    session = next(iter(server.sessions.values()))
    ref = weakref.ref(session)
    turn_task = session.turn_task
    assert turn_task is not None and not turn_task.done()
    await dev.drop()  # TCP gone, no close frame
    for _ in range(100):
        if not server.sessions:
            break
        await asyncio.sleep(0.05)
    assert not server.sessions
    assert turn_task.done()
    await asyncio.sleep(0.2)
    del session, turn_task
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())
    assert _session_tasks() - tasks_before == set()
    # no thread per connection: only the main thread, the shared cpu pool (bounded) and
    # asyncio's resolver threads exist
    names = [t.name for t in threading.enumerate()]
    pool = [n for n in names if n.startswith("xiaozhi-cpu")]
    new = [
        t.name
        for t in threading.enumerate()
        if t.ident not in threads_before and not t.name.startswith(("xiaozhi-cpu", "asyncio_"))
    ]
    assert len(pool) <= server.executor.settings.workers and new == [], names
    # the server still serves
    async with FakeDevice(server.ws_url) as dev2:
        await dev2.listen("detect", text="still there?")
        await dev2.wait_for("stt", timeout=10)


async def test_client_vanishing_while_the_lane_is_busy(make_server):
    server = await make_server(
        vad={"provider": "fake", "options": {"delay": 0.05}},
        server={"limits": {"audio_queue_frames": 4}},
    )
    dev = await FakeDevice(server.ws_url).connect()
    await dev.listen("start", "auto")
    await dev.stream(utterance(seconds=2.0), realtime=False)
    await dev.drop()
    for _ in range(100):
        if not server.sessions:
            break
        await asyncio.sleep(0.05)
    assert not server.sessions
    await asyncio.sleep(0.3)
    assert _session_tasks() == set()


# --------------------------------------------------------------------------- MCP + tools
def mcp_device_handler(calls: list[dict]):
    tools_page1 = [
        {
            "name": "self.get_device_status",
            "description": "Device status",
            "inputSchema": {"type": "object", "properties": {}},
        }
    ]
    tools_page2 = [
        {
            "name": "self.audio_speaker.set_volume",
            "description": "Set the volume",
            "inputSchema": {
                "type": "object",
                "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
                "required": ["volume"],
            },
        }
    ]

    def handler(payload):
        calls.append(payload)
        assert isinstance(payload["id"], int), "ids must be numbers"
        assert isinstance(payload.get("params"), dict), "params must be an object"
        method = payload["method"]
        if method == "initialize":
            return {
                "jsonrpc": "2.0",
                "id": payload["id"],
                "result": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "bread-compact-wifi", "version": "1.6.0"},
                },
            }
        if method == "tools/list":
            if payload["params"].get("cursor"):
                return {"jsonrpc": "2.0", "id": payload["id"], "result": {"tools": tools_page2}}
            return {
                "jsonrpc": "2.0",
                "id": payload["id"],
                "result": {"tools": tools_page1, "nextCursor": "self.get_device_status"},
            }
        if method == "tools/call":
            if payload["params"]["name"] == "self.audio_speaker.set_volume":
                return {
                    "jsonrpc": "2.0",
                    "id": payload["id"],
                    "result": {"content": [{"type": "text", "text": "true"}], "isError": False},
                }
            return {
                "jsonrpc": "2.0",
                "id": payload["id"],
                "error": {"message": f"Unknown tool: {payload['params']['name']}"},
            }
        return None

    return handler


async def test_mcp_tools_round_trip_with_paging(make_server):
    server = await make_server(
        llm={
            "provider": "fake",
            "options": {
                "reply": "Done, the result was {tool_result}.",
                "tool_calls": [
                    {"name": "self_audio_speaker_set_volume", "arguments": {"volume": 50}}
                ],
            },
        }
    )
    calls: list[dict] = []
    dev = FakeDevice(server.ws_url, features={"mcp": True}, mcp_handler=mcp_device_handler(calls))
    async with dev:
        for _ in range(100):
            session = next(iter(server.sessions.values()))
            if len(session.tools.device) == 2:
                break
            await asyncio.sleep(0.02)
        assert [c["method"] for c in calls] == ["initialize", "tools/list", "tools/list"]
        assert calls[2]["params"]["cursor"] == "self.get_device_status"
        await dev.listen("detect", text="set the volume to fifty")
        await dev.wait_for("tts", "stop", timeout=15)
    call = calls[-1]
    assert call["method"] == "tools/call"
    assert call["params"] == {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 50}}
    subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
    assert "Done, the result was true." in subtitles
    llm = server.providers.llm.instance
    offered = {t.name for t in llm.requests[0][1]}
    assert {"self_audio_speaker_set_volume", "self_get_device_status", "get_time"} <= offered
    second = llm.requests[1][0]
    assert second[-2].role == "assistant" and second[-2].tool_calls[0].id == "call_0"
    assert second[-1].role == "tool" and second[-1].content == "true"


async def test_mcp_error_without_code_and_timeouts_reach_the_llm_as_text(make_server):
    server = await make_server(
        server={"timeouts": {"mcp": 0.5}},
        llm={
            "provider": "fake",
            "options": {
                "reply": "Result: {tool_result}",
                "tool_calls": [{"name": "self_get_device_status", "arguments": {}}],
            },
        },
    )
    calls: list[dict] = []
    async with FakeDevice(
        server.ws_url, features={"mcp": True}, mcp_handler=mcp_device_handler(calls)
    ) as dev:
        for _ in range(100):
            if len(next(iter(server.sessions.values())).tools.device) == 2:
                break
            await asyncio.sleep(0.02)
        await dev.listen("detect", text="how are you")
        await dev.wait_for("tts", "stop", timeout=15)
    tool_msg = server.providers.llm.instance.requests[1][0][-1]
    assert tool_msg.role == "tool" and "Unknown tool" in tool_msg.content


async def test_server_side_get_time_tool(make_server):
    server = await make_server(
        llm={
            "provider": "fake_io",
            "options": {
                "reply": "It is {tool_result}",
                "tool_calls": [{"name": "get_time", "arguments": {}}],
            },
        }
    )
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("detect", text="what time is it")
        await dev.wait_for("tts", "stop", timeout=15)
    tool_msg = server.providers.llm.instance.requests[1][0][-1]
    assert {"local_time", "date", "time", "weekday"} <= set(json.loads(tool_msg.content))


async def test_memory_carries_history_and_is_trimmed(make_server):
    server = await make_server(
        session={"history_chars": 40}, llm={"provider": "fake", "options": {"reply": "Okay."}}
    )
    async with FakeDevice(server.ws_url) as dev:
        for text in ("first question here", "second question here", "third question here"):
            mark = len(dev.received)
            await dev.listen("detect", text=text)
            await dev.wait_for("tts", "stop", timeout=15, after=mark)
    last = server.providers.llm.instance.requests[-1][0]
    contents = [m.content for m in last]
    assert last[0].role == "system"
    assert contents[-1] == "third question here"
    assert "second question here" in contents  # the previous turn is remembered
    assert "first question here" not in contents  # ...the oldest one trimmed


# --------------------------------------------------------------------------- order
async def test_strict_frame_order_under_concurrency(make_server):
    """Each device streams its own signal faster than real time, all at once. Decoding
    the same packets locally must give exactly the audio the server handed to ASR: a
    lost, duplicated or reordered frame would break the equality."""
    n = 12
    signals = []
    for i in range(n):
        rng = np.random.default_rng(i)
        freqs = 300 + 40 * i + 200 * rng.random(40)
        speech = np.concatenate([tone(0.06, freq=f) for f in freqs])  # 2.4 s, varying
        signals.append(
            np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(16000, np.int16)])
        )
    packets = [encode_utterance(s) for s in signals]
    expected = []
    for p in packets:
        dec = OpusDecoder(16000)
        expected.append(np.frombuffer(b"".join(dec.decode(x) for x in p), np.int16))

    server = await make_server(
        server={"limits": {"audio_queue_frames": 8}},
        session={"silence_ms": 400, "max_utterance_ms": 60000},
    )
    devices = [
        FakeDevice(server.ws_url, device_id=f"d:{i}", protocol_version=1 + i % 3) for i in range(n)
    ]
    for d in devices:
        await d.connect()
    try:
        await asyncio.gather(*(d.listen("start", "manual") for d in devices))
        await asyncio.gather(
            *(d.stream(p, realtime=False) for d, p in zip(devices, packets, strict=True))
        )
        await asyncio.gather(*(d.listen("stop") for d in devices))
        await asyncio.gather(*(d.wait_for("stt", timeout=30) for d in devices))
        sessions = {s.device.device_id: s for s in server.sessions.values()}
        for i in range(n):
            s = sessions[f"d:{i}"]
            assert s.frames_in == s.frames_processed == len(packets[i])
    finally:
        for d in devices:
            await d.close()
    heard = server.providers.asr.instance.utterances
    assert len(heard) == n
    for audio in heard:
        matches = [
            i
            for i in range(n)
            if len(audio) == len(expected[i]) // 512 * 512
            and np.array_equal(audio, expected[i][: len(audio)])
        ]
        assert len(matches) == 1, "an utterance is not the in-order decode of one device"
    assert server.hub.last_batch_streams >= 1
    assert max(server.providers.vad.instance.batch_sizes) > 1  # VAD was batched


async def test_back_pressure_loses_nothing(make_server):
    server = await make_server(
        vad={"provider": "fake", "options": {"delay": 0.03}},
        server={"limits": {"audio_queue_frames": 4}},
    )
    pkts = utterance(seconds=2.0, tail=0.6)
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "manual")
        await dev.stream(pkts, realtime=False)  # far faster than the lane
        await dev.listen("stop")
        await dev.wait_for("stt", timeout=30)
        session = next(iter(server.sessions.values()))
        assert session.frames_processed == session.frames_in == len(pkts)
    text = server.render_metrics().decode()
    backpressure = [
        line
        for line in text.splitlines()
        if line.startswith("xiaozhi_audio_lane_backpressure_total ")
    ]
    assert float(backpressure[0].split()[-1]) > 0
