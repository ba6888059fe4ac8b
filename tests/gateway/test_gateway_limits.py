"""Auth, OTA + CORS, admission control, idle timeout, metrics and health."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from xiaozhi_core.device import FakeDevice

from .conftest import speak


def http_base(server) -> str:
    return f"http://127.0.0.1:{server.http_port}"


async def ota(server, device_id="aa:bb:cc:dd:ee:01", client_id="c-1", body=None):
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{http_base(server)}/xiaozhi/ota/",
            headers={
                "Device-Id": device_id,
                "Client-Id": client_id,
                "User-Agent": "bread-compact-wifi/1.6.0",
                "Content-Type": "application/json",
            },
            data=json.dumps(
                body
                or {
                    "application": {"name": "xiaozhi", "version": "1.6.0"},
                    "mac_address": device_id,
                }
            ),
        )
        return resp.status, await resp.json(), resp.headers


# --------------------------------------------------------------------------- OTA
async def test_ota_returns_websocket_token_and_server_time(make_server):
    server = await make_server(server={"auth": {"enabled": True, "secret": "k"}})
    status, body, headers = await ota(server)
    assert status == 200
    assert body["websocket"]["url"] == server.ws_url
    assert body["websocket"]["token"]
    assert abs(body["server_time"]["timestamp"] - time.time() * 1000) < 60_000
    assert isinstance(body["server_time"]["timezone_offset"], int)
    assert body["firmware"]["version"] == "1.6.0"  # echo: no upgrade offered
    assert "mqtt" not in body and "activation" not in body  # MUST omit mqtt
    assert headers["Access-Control-Allow-Origin"] == "*"


async def test_ota_cors_preflight(server):
    async with aiohttp.ClientSession() as http:
        resp = await http.options(
            f"{http_base(server)}/xiaozhi/ota/",
            headers={
                "Origin": "http://example.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "device-id,client-id,content-type",
            },
        )
        assert resp.status in (200, 204)
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
        for header in ("device-id", "client-id", "content-type"):
            assert header in allowed
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]


async def test_ota_bad_body_is_a_clear_400(server):
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{http_base(server)}/xiaozhi/ota/", data=b"{nope")
        assert resp.status == 400
        assert "invalid JSON" in (await resp.json())["error"]


async def test_health_and_metrics(server):
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=15)
        async with aiohttp.ClientSession() as http:
            health = await (await http.get(f"{http_base(server)}/health")).json()
            metrics = await (await http.get(f"{http_base(server)}/metrics")).text()
    assert health["status"] == "ok" and health["sessions"] == 1
    assert health["providers"]["asr"] == "fake"
    assert "xiaozhi_sessions_active 1.0" in metrics
    assert "xiaozhi_audio_frames_in_total" in metrics
    assert 'xiaozhi_turns_total{outcome="ok"} 1.0' in metrics
    assert 'xiaozhi_turn_latency_seconds_count{stage="first_frame_sent"} 1.0' in metrics
    assert "xiaozhi_audio_lane_lag_seconds_bucket" in metrics
    assert 'xiaozhi_loop_lag_seconds{stat="p99"}' in metrics


# --------------------------------------------------------------------------- auth
@pytest.mark.parametrize("use_query", [False, True])
async def test_token_from_ota_is_accepted_via_headers_or_query(make_server, use_query):
    server = await make_server(server={"auth": {"enabled": True}})
    _, body, _ = await ota(server, device_id="aa:bb:cc:dd:ee:02", client_id="c-2")
    dev = FakeDevice(
        server.ws_url,
        device_id="aa:bb:cc:dd:ee:02",
        client_id="c-2",
        token=body["websocket"]["token"],
        use_query=use_query,
    )
    async with dev:
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=15)


@pytest.mark.parametrize(
    "token,reason",
    [
        ("", "missing token"),
        ("123.bad", "does not match"),
        ("garbage", "malformed token"),
    ],
)
async def test_bad_or_missing_token_is_refused_with_a_reason(make_server, token, reason):
    server = await make_server(server={"auth": {"enabled": True}})
    with pytest.raises(InvalidStatus) as info:
        await FakeDevice(server.ws_url, token=token).connect()
    assert info.value.response.status_code == 401
    assert reason in info.value.response.body.decode()
    text = server.render_metrics().decode()
    assert 'xiaozhi_connections_total{outcome="refused_auth"} 1.0' in text
    # the server keeps serving
    _, body, _ = await ota(server)
    async with FakeDevice(
        server.ws_url,
        device_id="aa:bb:cc:dd:ee:01",
        client_id="c-1",
        token=body["websocket"]["token"],
    ):
        pass


async def test_token_of_another_device_is_refused(make_server):
    server = await make_server(server={"auth": {"enabled": True}})
    _, body, _ = await ota(server, device_id="aa:bb:cc:dd:ee:03")
    with pytest.raises(InvalidStatus):
        await FakeDevice(
            server.ws_url, device_id="aa:bb:cc:dd:ee:04", token=body["websocket"]["token"]
        ).connect()


async def test_allow_list_and_static_tokens(make_server):
    server = await make_server(
        server={
            "auth": {
                "enabled": True,
                "tokens": ["static-token"],
                "allowed_devices": ["AA:BB:CC:DD:EE:05"],
            }
        }
    )
    async with FakeDevice(server.ws_url, device_id="aa:bb:cc:dd:ee:05", token="static-token"):
        pass
    with pytest.raises(InvalidStatus) as info:
        await FakeDevice(
            server.ws_url, device_id="aa:bb:cc:dd:ee:06", token="static-token"
        ).connect()
    assert "allow-list" in info.value.response.body.decode()


async def test_auth_is_on_by_default_off_loopback():
    from xiaozhi_core.testing import fake_config

    assert fake_config(server={"host": "0.0.0.0"}).server.auth_enabled
    assert not fake_config(server={"host": "127.0.0.1"}).server.auth_enabled


# --------------------------------------------------------------------------- limits
async def test_max_sessions_refuses_new_devices_cleanly(make_server):
    server = await make_server(server={"limits": {"max_sessions": 2}})
    a = await FakeDevice(server.ws_url, device_id="d:1").connect()
    b = await FakeDevice(server.ws_url, device_id="d:2").connect()
    try:
        with pytest.raises(InvalidStatus) as info:
            await FakeDevice(server.ws_url, device_id="d:3").connect()
        assert info.value.response.status_code == 503
        assert "server full" in info.value.response.body.decode()
        # the admitted ones are unaffected
        await speak(a)
        await a.wait_for("tts", "stop", timeout=15)
    finally:
        await a.close()
        await b.close()
    await asyncio.sleep(0.2)
    async with FakeDevice(server.ws_url, device_id="d:4"):  # room again
        pass


async def test_overloaded_loop_refuses_new_devices(make_server):
    server = await make_server(server={"limits": {"max_loop_lag_ms": 200}})
    async with FakeDevice(server.ws_url, device_id="d:ok"):
        pass
    server.lag_monitor.lags.extend([0.4] * 5)  # as if the loop ran 400 ms late...
    assert server.lag_monitor.sustained_lag() == 0.4
    server.lag_monitor.sustained_lag = lambda ticks=5: 0.4  # ...and keeps doing so
    with pytest.raises(InvalidStatus) as info:
        await FakeDevice(server.ws_url, device_id="d:late").connect()
    assert info.value.response.status_code == 503
    assert "overloaded" in info.value.response.body.decode()


async def test_oversized_frame_closes_only_that_connection(make_server):
    server = await make_server(server={"limits": {"max_frame_bytes": 1000}})
    good = await FakeDevice(server.ws_url, device_id="d:good").connect()
    bad = await FakeDevice(server.ws_url, device_id="d:bad").connect()
    try:
        await bad.send_raw(b"\x00" * 5000)
        code, _ = await bad.wait_closed(timeout=5)
        assert code == 1009  # message too big
        await speak(good)
        await good.wait_for("tts", "stop", timeout=15)
    finally:
        await good.close()


async def test_idle_timeout_says_goodbye_then_closes(make_server):
    server = await make_server(
        server={"timeouts": {"idle": 1.0}}, session={"goodbye": "Bye for now."}
    )
    dev = await FakeDevice(server.ws_url).connect()
    await dev.listen("start", "auto")
    code, reason = await dev.wait_closed(timeout=10)
    assert code == 1000 and "idle" in reason
    subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
    assert subtitles == ["Bye for now."]
    assert dev.events()[-1] == "tts:stop" and dev.audio_frames()


async def test_ws_connect_with_raw_client_and_no_headers_works_when_auth_off(server):
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["transport"] == "websocket"
