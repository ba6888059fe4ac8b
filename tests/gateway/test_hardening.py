"""Regression tests for issue 9 (hardening): every bad input an outsider can send gets a
4xx or a clean close and no traceback, and nobody can hold the HTTP port.

Each test reproduces one finding of the fuzz run with raw sockets against a real server,
as a hostile client would, and then checks the server still serves a real device.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time

import pytest

from xiaozhi_core.device import FakeDevice

from .conftest import speak

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR and no traceback anywhere in the log."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [(r.name, r.getMessage()[:200]) for r in bad]


async def exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[int, bytes]:
    """Send raw bytes, return (status, whole response up to EOF or timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        deadline = time.monotonic() + wait
        while b"\r\n\r\n" not in out:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not chunk:
                break
            out += chunk
        status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else 0
        return status, out
    finally:
        writer.close()


async def upgrade(server, extra: str = "", path: str = "/xiaozhi/v1/") -> int:
    head = UPGRADE.format(path=path) + extra + "\r\n"
    status, _ = await exchange(server.port, head.encode("latin-1"))
    return status


async def post(port: int, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
    head = (
        b"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n" % len(body)
    )
    status, out = await exchange(port, head + headers + b"\r\n" + body)
    return status, out


async def still_serves(server) -> None:
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("detect", text="still there?")
        await dev.wait_for("tts", "stop", timeout=15)


# ------------------------------------------------------------------ item 4: WS upgrade
@pytest.mark.parametrize("header", ["Device-Id", "Client-Id", "Protocol-Version", "Authorization"])
async def test_duplicate_identity_header_is_a_400_not_a_500(server, caplog, header):
    status = await upgrade(server, f"{header}: 1\r\n{header}: 2\r\n")
    assert status == 400
    no_tracebacks(caplog)
    assert (
        'xiaozhi_connections_total{outcome="refused_bad_request"} 1.0'
        in server.render_metrics().decode()
    )


async def test_unparsable_request_path_is_a_400(server, caplog):
    assert await upgrade(server, path="//[/xiaozhi/v1/") == 400
    no_tracebacks(caplog)
    await still_serves(server)


@pytest.mark.parametrize(
    "extra,path",
    [
        ("Authorization: Bearer " + "1" * 5000 + ".x\r\n", "/xiaozhi/v1/"),  # int digit limit
        ("", "/xiaozhi/v1/?authorization=Bearer%20%C2%B2.x"),  # '²'.isdigit()
        ("", "/xiaozhi/v1/?authorization=Bearer%201.%C3%A9"),  # non-ASCII sig
        ("Authorization: Bearer 1.\xc3\xa9\r\n", "/xiaozhi/v1/"),  # raw header bytes
    ],
)
async def test_malformed_tokens_are_a_401_not_a_500(make_server, caplog, extra, path):
    server = await make_server(server={"auth": {"enabled": True}})
    sep = "&" if "?" in path else "?"
    status = await upgrade(
        server,
        extra + "Device-Id: aa:bb\r\nClient-Id: c\r\n",
        path=path if "authorization" in path else path,
    )
    assert status == 401
    status = await upgrade(server, extra, path=f"{path}{sep}device-id=aa:bb&client-id=c")
    assert status == 401
    no_tracebacks(caplog)


# ------------------------------------------------------------------ item 5: OTA
@pytest.mark.parametrize(
    "body,headers,error",
    [
        (b"[" * 100_000, b"", b"nested too deeply"),
        (b'{"mac_address": 5}', b"", b"mac_address must be a string"),
        (b'{"uuid": ["x"]}', b"", b"uuid must be a string"),
        (b'{"a": 1}', b"Content-Encoding: gzip\r\n", b"Content-Encoding"),
        (b"{}", b"Device-Id: a\r\nDevice-Id: b\r\n", b"sent 2 times"),
    ],
)
async def test_ota_bad_input_is_a_400_not_a_500(server, caplog, body, headers, error):
    status, out = await post(server.http_port, body, headers)
    assert status == 400, out[:300]
    assert error in out
    no_tracebacks(caplog)


async def test_ota_unprintable_device_id_with_auth_on_is_a_400(make_server, caplog):
    server = await make_server(server={"auth": {"enabled": True}})
    status, out = await post(server.http_port, b"{}", b"Device-Id: \xff\xfe\r\n")
    assert status == 400 and b"Device-Id" in out
    status, out = await post(server.http_port, b"{}", b"Device-Id: aa:bb:cc:dd:ee:01\r\n")
    assert status == 200 and json.loads(out.split(b"\r\n\r\n", 1)[1])["websocket"]["token"]
    no_tracebacks(caplog)


# ------------------------------------------------------------------ items 6, 7: text frames
async def test_deeply_nested_json_is_answered_like_other_malformed_json(server, caplog):
    async with FakeDevice(server.ws_url) as dev:
        await dev.send_raw("[" * 1000 + "]" * 1000)
        await dev.send_raw('{"type": ' * 5000)
        await dev.listen("detect", text="are you alive?")
        await dev.wait_for("tts", "stop", timeout=15)
        assert dev.closed_code is None
    assert 'xiaozhi_frame_errors_total{kind="json"} 2.0' in server.render_metrics().decode()
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
    no_tracebacks(caplog)


async def test_lone_surrogate_in_typed_text_is_sanitised_not_fatal(server, caplog):
    async with FakeDevice(server.ws_url) as dev:
        await dev.send_raw('{"type":"listen","state":"detect","text":"hi \\ud800 there"}')
        stt = await dev.wait_for("stt", timeout=10)
        assert stt["text"] == "hi \ufffd there"
        await dev.wait_for("tts", "stop", timeout=15)
        assert dev.closed_code is None
        # a proper pair still arrives whole
        await dev.send_raw('{"type":"listen","state":"detect","text":"\\ud83d\\ude00 ok"}')
        after = len(dev.received)
        stt = await dev.wait_for("stt", timeout=10, after=after)
        assert stt["text"] == "\U0001f600 ok"
    no_tracebacks(caplog)


# ------------------------------------------------------------------ item 8: MCP
@pytest.mark.parametrize("tools", [5, None, "x"])
async def test_bad_mcp_tools_field_is_one_warning_naming_device_and_field(
    make_server, caplog, tools
):
    server = await make_server()

    def handler(payload):
        if payload["method"] == "initialize":
            return {"jsonrpc": "2.0", "id": payload["id"], "result": {"serverInfo": 7}}
        return {"jsonrpc": "2.0", "id": payload["id"], "result": {"tools": tools}}

    dev = FakeDevice(
        server.ws_url, device_id="aa:bb:cc:00:00:08", features={"mcp": True}, mcp_handler=handler
    )
    async with dev:
        for _ in range(200):
            if any("MCP setup failed" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        await dev.listen("detect", text="hello")
        await dev.wait_for("tts", "stop", timeout=15)
    gc.collect()
    await asyncio.sleep(0)
    warnings = [r.getMessage() for r in caplog.records if "MCP setup failed" in r.getMessage()]
    assert len(warnings) == 1
    assert "aa:bb:cc:00:00:08" in warnings[0] and "result.tools" in warnings[0]
    assert "\n" not in warnings[0]
    no_tracebacks(caplog)


# ------------------------------------------------------------------ item 10: log amplification
async def test_device_values_are_clipped_in_the_log(server, caplog):
    caplog.set_level(logging.DEBUG)
    dev = FakeDevice(server.ws_url, send_hello=False)
    async with dev:
        await dev.send_json(
            {
                "type": "hello",
                "version": 1,
                "transport": "websocket",
                "audio_params": {"format": "x" * 60_000, "sample_rate": 16000},
            }
        )
        await dev.wait_for("hello", timeout=10)
        await dev.send_json({"type": "y" * 60_000})
        await dev.send_json({"type": "abort", "reason": "z" * 60_000})
        await dev.send_json({"type": "listen", "state": "w" * 60_000})
        await dev.listen("detect", text="ok")
        await dev.wait_for("tts", "stop", timeout=15)
    longest = max(len(r.getMessage()) for r in caplog.records)
    assert longest < 1000
    assert any("unsupported" in r.getMessage() for r in caplog.records)


async def test_malformed_frames_are_rate_limited_in_the_log_and_counted(server, caplog):
    caplog.set_level(logging.INFO)
    async with FakeDevice(server.ws_url) as dev:
        for _ in range(200):
            await dev.send_raw("{nope")
        await dev.listen("detect", text="ok")
        await dev.wait_for("tts", "stop", timeout=15)
    lines = [r for r in caplog.records if "ignored text frame" in r.getMessage()]
    assert 1 <= len(lines) <= 10
    text = server.render_metrics().decode()
    assert 'xiaozhi_frame_errors_total{kind="json"} 200.0' in text
    suppressed = [
        ln
        for ln in text.splitlines()
        if ln.startswith('xiaozhi_log_lines_suppressed_total{kind="bad_frame"}')
    ]
    assert suppressed and float(suppressed[0].split()[-1]) >= 190


@pytest.mark.parametrize(
    "request_line",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /xiaozhi/ota/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ],
)
async def test_malformed_http_requests_are_counted_not_logged(server, caplog, request_line):
    for _ in range(3):
        status, _ = await exchange(server.http_port, request_line)
        assert status in (0, 400, 404, 405, 505)
    no_tracebacks(caplog)
    assert (
        'xiaozhi_http_client_errors_total{kind="bad_request"} 3.0'
        in server.render_metrics().decode()
    )


async def test_ota_upload_abandoned_mid_body_logs_no_traceback(server, caplog):
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(b'POST /xiaozhi/ota/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"a')
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()
    await asyncio.sleep(0.3)
    no_tracebacks(caplog)
    assert (
        'xiaozhi_http_client_errors_total{kind="abandoned_body"} 3.0'
        in server.render_metrics().decode()
    )


# ------------------------------------------------------------------ item 1: HTTP starvation
async def test_half_sent_http_requests_are_closed_after_the_header_timeout(make_server, caplog):
    server = await make_server(server={"http": {"header_timeout": 1.0, "keepalive_timeout": 30}})
    conns = []
    for _ in range(60):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(b"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: x\r\n")
        conns.append((reader, writer))
    t0 = time.monotonic()
    for reader, _ in conns:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    assert time.monotonic() - t0 < 4
    for _, writer in conns:
        writer.close()
    assert (
        'xiaozhi_http_client_errors_total{kind="header_timeout"} 60.0'
        in server.render_metrics().decode()
    )
    no_tracebacks(caplog)


async def test_slow_body_gets_408_and_idle_keepalive_is_closed(make_server, caplog):
    server = await make_server(server={"http": {"body_timeout": 0.5, "keepalive_timeout": 1.0}})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(b"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()
    # a kept-alive connection that goes idle is closed after keepalive_timeout
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    rest = await asyncio.wait_for(reader.read(), 5)
    while rest:
        rest = await asyncio.wait_for(reader.read(), 5)
    assert 0.5 < time.monotonic() - t0 < 3.5
    writer.close()
    no_tracebacks(caplog)


async def test_http_connection_cap(make_server, caplog):
    server = await make_server(server={"http": {"max_connections": 5, "header_timeout": 30}})
    held = [await asyncio.open_connection("127.0.0.1", server.http_port) for _ in range(5)]
    await asyncio.sleep(0.1)
    status, out = await exchange(server.http_port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 503 and b"too many HTTP connections" in out
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.2)
    status, _ = await exchange(
        server.http_port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    assert (
        'xiaozhi_http_client_errors_total{kind="over_connection_cap"} 1.0'
        in server.render_metrics().decode()
    )
    no_tracebacks(caplog)
    await speak_once(server)


async def speak_once(server) -> None:
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=15)


async def test_mcp_error_reply_during_a_failed_send_is_not_left_unretrieved():
    """Found by the fuzzer: an (unsolicited, guessed-id) error reply lands while the
    request is still being sent, and the send then fails (the connection closed): the
    reply's future was never awaited and asyncio logged "Future exception was never
    retrieved" at ERROR when it was collected."""
    from xiaozhi_core.session.mcp import MCPClient

    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    sent: list[dict] = []
    gate = asyncio.Event()

    async def send(payload: dict) -> None:  # a slow send that then fails
        sent.append(payload)
        await gate.wait()
        raise ConnectionError("closed")

    client = MCPClient(send, timeout=5)
    task = asyncio.ensure_future(client.request("tools/list"))
    await asyncio.sleep(0)  # the request is being sent
    client.handle({"jsonrpc": "2.0", "id": sent[0]["id"], "error": {"message": "nope"}})
    gate.set()  # ... and the connection closes
    with contextlib.suppress(ConnectionError):
        await task
    del task
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert not reported, reported
