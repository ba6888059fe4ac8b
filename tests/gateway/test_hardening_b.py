"""Regression tests for issue 9 (hardening), the items that live in the session, the turn
and the command line: a vanished client ends its turn like a cancellation, clean closes
look clean, start-up failures are one line."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xiaozhi_core.device import FakeDevice

from .conftest import utterance
from .test_hardening import no_tracebacks


def outcomes(server) -> dict[str, float]:
    out = {}
    for line in server.render_metrics().decode().splitlines():
        if line.startswith("xiaozhi_turns_total{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


# ------------------------------------------------------------------ item 9
async def test_client_vanishing_mid_reply_is_a_disconnected_turn_not_a_failure(make_server, caplog):
    """The device drops TCP while its reply streams, and the session's receive loop is
    busy (a full audio lane behind a slow VAD), so the turn's next send is the first to
    see the connection gone: that must end the turn like a cancellation."""
    caplog.set_level(logging.DEBUG, logger="xiaozhi_core")
    server = await make_server(
        vad={"provider": "fake", "options": {"delay": 0.05}},
        tts={"provider": "fake", "options": {"seconds_per_char": 0.2}},
        server={"limits": {"audio_queue_frames": 8, "max_loop_lag_ms": 0}},
    )
    dev = FakeDevice(server.ws_url)
    await dev.connect()
    await dev.listen("detect", text="tell me a story")
    await dev.wait_frames(1, timeout=10)
    await dev.listen("start", "manual")
    packets = utterance(seconds=2.0)[:40]
    flood = asyncio.ensure_future(dev.stream(packets, realtime=False))
    await asyncio.sleep(0.3)  # the lane is full: the receive loop waits on it
    await dev.drop()
    flood.cancel()
    for _ in range(300):
        if not server.sessions:
            break
        await asyncio.sleep(0.1)
    assert not server.sessions
    got = outcomes(server)
    assert got.get("disconnected") == 1.0, got
    assert "failed" not in got
    no_tracebacks(caplog)
    assert not [r for r in caplog.records if "apology" in r.getMessage()]
    assert any("connection closed during the reply" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ item 15
async def test_clean_closes_are_logged_as_clean(server, caplog):
    """The firmware ends a session by closing TCP without a close frame; a browser sends
    a close frame. Neither is an abnormal closure (1006) in the log."""
    caplog.set_level(logging.INFO, logger="xiaozhi_core")

    async def closed_lines(n: int) -> list[str]:
        for _ in range(100):
            lines = [
                r.getMessage()
                for r in caplog.records
                if r.name == "xiaozhi_core.gateway.server"
                and r.getMessage().startswith("WebSocket of ")
            ]
            if len(lines) >= n:
                return lines
            await asyncio.sleep(0.05)
        raise AssertionError(f"no close logged: {lines}")

    dev = FakeDevice(server.ws_url)
    await dev.connect()
    assert dev.ws is not None
    dev.ws.transport.close()  # FIN, no close frame: what the firmware does
    first = (await closed_lines(1))[0]
    async with FakeDevice(server.ws_url):
        pass  # a close frame (1000)
    second = (await closed_lines(2))[1]
    assert "1006" not in first and first.endswith("device hung up"), first
    assert second.endswith("closed by the device (code 1000)"), second
    no_tracebacks(caplog)


# ------------------------------------------------------------------ item 12
@pytest.mark.parametrize(
    "flags,names",
    [
        (["--port", "{taken}", "--http-port", "0"], ["127.0.0.1:{taken}", "--port"]),
        (["--port", "0", "--http-port", "{taken}"], ["127.0.0.1:{taken}", "--http-port"]),
        (["--host", "203.0.113.7", "--port", "0"], ["203.0.113.7", "--host"]),
        # one process (no supervisor): the server itself binds
        (
            ["--workers", "1", "--port", "{taken}", "--http-port", "0"],
            ["127.0.0.1:{taken}", "--port"],
        ),
        (
            ["--workers", "1", "--port", "0", "--http-port", "{taken}"],
            ["127.0.0.1:{taken}", "--http-port"],
        ),
    ],
)
def test_start_up_failures_are_one_line(tmp_path: Path, flags: list[str], names: list[str]) -> None:
    config = tmp_path / "fake.yaml"
    config.write_text(
        "vad: {provider: fake}\nasr: {provider: fake}\nllm: {provider: fake}\n"
        "tts: {provider: fake}\n"
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = str(holder.getsockname()[1])
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "xiaozhi_core",
                "serve",
                "-c",
                str(config),
                "--no-local",
                *[f.format(taken=taken) for f in flags],
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("xiaozhi: error: cannot listen for ")
    for name in names:
        assert name.format(taken=taken) in lines[0]


# ------------------------------------------------------------------ item 16
class BlockingLLM:
    """An ``io`` LLM whose async code makes a blocking call (the bug being reported)."""

    def __init__(self, options: object) -> None:
        self.options = options

    async def chat(self, messages, tools=None):
        time.sleep(0.3)  # noqa: ASYNC251 - blocks the event loop, on purpose
        yield "Fine, thanks."


async def test_blocking_call_in_an_io_provider_is_blamed_on_the_provider(caplog):
    from xiaozhi_core.config import ProviderChoice
    from xiaozhi_core.gateway import XiaozhiServer
    from xiaozhi_core.providers import NoOptions, ProviderSpec
    from xiaozhi_core.testing import fake_config

    config = fake_config(server={"limits": {"max_loop_lag_ms": 0}})
    spec = ProviderSpec(role="llm", name="blocking", execution="io", factory=BlockingLLM)
    config.llm = ProviderChoice("blocking", spec, NoOptions())
    server = await XiaozhiServer.create(config)
    await server.start(port=0, http_port=0)
    try:
        async with FakeDevice(server.ws_url) as dev:
            await dev.listen("detect", text="how are you")
            await dev.wait_for("tts", "stop", timeout=15)
    finally:
        await server.stop()
    names = [name for name, seconds in server.lag_monitor.slow if seconds >= 0.25]
    assert names == ["llm provider 'blocking' chat()"], server.lag_monitor.slow
    line = next(r.getMessage() for r in caplog.records if "slow loop callback" in r.getMessage())
    assert "llm provider 'blocking' chat() held the event loop" in line
    assert "Turn._think" in line  # the task it ran in, as context


# ------------------------------------------------------------------ item 3
async def test_audio_faster_than_real_time_is_dropped_and_a_flood_closed(make_server):
    server = await make_server()
    neighbour = FakeDevice(server.ws_url, device_id="aa:bb:cc:00:00:01")
    flooder = FakeDevice(server.ws_url, device_id="aa:bb:cc:00:00:02")
    await neighbour.connect()
    await flooder.connect()
    await flooder.listen("start", "realtime")
    flood = utterance(seconds=2.0) * 15  # ~45 s of audio, sent at once
    t0 = asyncio.get_running_loop().time()
    flooding = asyncio.ensure_future(flooder.stream(flood, realtime=False))
    await neighbour.listen("start", "auto")
    await neighbour.stream(utterance(), realtime=True)  # a real-time device
    await neighbour.wait_for("tts", "stop", timeout=15)
    code, reason = await flooder.wait_closed(timeout=15)
    elapsed = asyncio.get_running_loop().time() - t0
    flooding.cancel()
    assert (code, reason) == (1008, "audio faster than real time")
    assert any(m["type"] == "alert" for m in flooder.messages())
    text = server.render_metrics().decode()
    dropped = float(
        next(
            ln.split()[-1]
            for ln in text.splitlines()
            if ln.startswith("xiaozhi_audio_frames_dropped_total ")
        )
    )
    assert dropped > 50
    # what reached the lane is bounded by the burst plus 1.5 x real time
    frames_in = float(
        next(
            ln.split()[-1]
            for ln in text.splitlines()
            if ln.startswith("xiaozhi_audio_frames_in_total ")
        )
    )
    accepted_ms = (frames_in - len(utterance())) * 60
    assert accepted_ms <= 5000 + 1500 * elapsed + 60
    assert neighbour.closed_code is None
    await neighbour.close()


# ------------------------------------------------------------------ item 2
async def squatter(server, source: str = "127.0.0.1"):
    """A WebSocket connection that never says hello."""
    from websockets.asyncio.client import connect

    return await connect(
        server.ws_url, compression=None, ping_interval=None, local_addr=(source, 0)
    )


async def test_silent_connections_cannot_lock_out_devices(make_server):
    server = await make_server(
        server={
            "limits": {
                "max_sessions": 2,
                "max_loop_lag_ms": 0,
                "max_pending_handshakes": 3,
                "max_pending_per_peer": 2,
            }
        }
    )
    # max_sessions silent connections (from two addresses) do not take session slots
    held = [
        await squatter(server, "127.0.0.2"),
        await squatter(server, "127.0.0.2"),
        await squatter(server, "127.0.0.3"),
    ]
    # a third from the same address is refused: per-peer budget of pending handshakes
    from websockets.exceptions import InvalidStatus

    try:
        await squatter(server, "127.0.0.2")
        raise AssertionError("a third pending connection from one address was admitted")
    except InvalidStatus as exc:
        assert exc.response.status_code == 503
    # the handshake budget is full: a real device still gets in (the oldest silent
    # connection is closed to make room) and talks
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("detect", text="hello")
        await dev.wait_for("tts", "stop", timeout=15)
        async with FakeDevice(server.ws_url, device_id="aa:bb:cc:00:00:09") as dev2:
            await dev2.listen("detect", text="hello")
            await dev2.wait_for("tts", "stop", timeout=15)
    await asyncio.sleep(0.3)
    closed = [ws for ws in held if ws.close_code is not None]
    assert closed and closed[0] is held[0]
    assert held[0].close_code == 1013
    text = server.render_metrics().decode()
    assert 'xiaozhi_connections_total{outcome="evicted_pending"}' in text
    assert 'xiaozhi_connections_total{outcome="refused_peer"} 1.0' in text
    for ws in held:
        await ws.close()


async def test_a_device_answered_hello_holds_its_slot(make_server):
    """The slot is taken before the server's hello goes out: of two connections that
    passed the upgrade while the server had room, the one whose hello finds it full is
    closed 1013 *without* a hello answer (it once got the answer and then the close, so a
    device could believe it was in; with workers, a 4th session looked admitted)."""
    import json

    from websockets.exceptions import ConnectionClosed

    server = await make_server(server={"limits": {"max_sessions": 1, "max_loop_lag_ms": 0}})
    first, second = await squatter(server), await squatter(server)  # both past the upgrade
    hello = json.dumps({"type": "hello", "version": 1, "transport": "websocket"})
    await first.send(hello)
    answer = json.loads(await asyncio.wait_for(first.recv(), 5))
    assert answer["type"] == "hello" and answer["session_id"]
    await second.send(hello)
    got = []
    try:
        async with asyncio.timeout(5):
            async for message in second:
                got.append(message)
    except ConnectionClosed:
        pass
    assert got == [], got
    assert second.close_code == 1013 and second.close_reason == "server full"
    assert 'xiaozhi_connections_total{outcome="refused_full"} 1.0' in (
        server.render_metrics().decode()
    )
    # the admitted one is served
    await first.send(json.dumps({"type": "listen", "state": "detect", "text": "hello"}))
    states = []
    async with asyncio.timeout(15):
        while "stop" not in states:
            message = await first.recv()
            if isinstance(message, str) and json.loads(message).get("type") == "tts":
                states.append(json.loads(message)["state"])
    assert states[0] == "start", states
    await first.close()


async def test_ota_is_rate_limited_per_address(make_server):
    import aiohttp

    server = await make_server(
        server={"auth": {"enabled": True}, "http": {"ota_burst": 3, "ota_per_minute": 6}}
    )
    url = f"http://127.0.0.1:{server.http_port}/xiaozhi/ota/"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(5):
            resp = await http.post(url, headers={"Device-Id": f"aa:bb:cc:00:00:{i:02x}"}, json={})
            statuses.append(resp.status)
            if resp.status == 429:
                assert resp.headers["Retry-After"] == "10"
    assert statuses == [200, 200, 200, 429, 429]
    assert (
        'xiaozhi_http_client_errors_total{kind="ota_rate_limited"} 2.0'
        in server.render_metrics().decode()
    )


# ------------------------------------------------------------------ item 11
async def test_a_device_that_stops_reading_loses_its_turn_within_seconds(make_server):
    from websockets.asyncio.client import connect

    long_reply = "This is a long story about a small robot who wanted to see the sea. " * 6
    server = await make_server(
        server={"limits": {"send_stall_s": 2.0, "max_loop_lag_ms": 0}},
        llm={"provider": "fake", "options": {"reply": long_reply, "token_delay": 0.01}},
        tts={"provider": "fake", "options": {"seconds_per_char": 0.1}},
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a small device window
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    ws = await connect(server.ws_url, sock=sock, compression=None, ping_interval=None)
    await ws.send(
        '{"type":"hello","version":1,"transport":"websocket",'
        '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,'
        '"frame_duration":60}}'
    )
    await ws.recv()
    await ws.send('{"type":"listen","state":"detect","text":"tell me a long story"}')
    while not isinstance(await ws.recv(), bytes):  # the reply has started
        pass
    ws.transport.pause_reading()  # ... and the device stops reading
    t0 = asyncio.get_running_loop().time()
    for _ in range(400):
        if not server.sessions:
            break
        await asyncio.sleep(0.05)
    waited = asyncio.get_running_loop().time() - t0
    assert not server.sessions, "the session of a device that stopped reading is still open"
    assert waited < 15  # the reply is ~40 s long; keep-alive would take ~40 s
    text = server.render_metrics().decode()
    assert 'xiaozhi_turns_total{outcome="disconnected"} 1.0' in text
    llm = server.providers.llm.instance
    assert llm.requests  # it was called, then cancelled
    ws.transport.abort()
