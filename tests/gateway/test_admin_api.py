"""The operator API over real HTTP: auth (token, open loopback, no token), every route
against a real SQLite store and a live FakeDevice session, errors as JSON, the OpenAPI
document against the router, the console's static files and their headers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from xiaozhi_core.config import AdminSettings
from xiaozhi_core.device import FakeDevice
from xiaozhi_core.errors import ConfigError
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.gateway.admin import API_PREFIX, check_admin
from xiaozhi_core.gateway.openapi import openapi_document
from xiaozhi_core.store import Store

from .conftest import ServerFactory, speak

TOKEN = "test-admin-token-0123456789"
DEVICE = "aa:bb:cc:00:00:01"


@pytest.fixture
async def admin_server(make_server: ServerFactory, tmp_path: Path) -> tuple[XiaozhiServer, Store]:
    """A server with the admin API and the device store it opened from ``store:``."""
    server = await make_server(
        server={"admin": {"token": TOKEN}},
        store={"data_dir": str(tmp_path / "data"), "flush_interval": 0.05},
    )
    assert server.store is not None
    return server, server.store


def _url(server: XiaozhiServer, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"


async def _call(
    server: XiaozhiServer, method: str, path: str, token: str | None = TOKEN, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, _url(server, API_PREFIX + path), headers=headers, **kw) as resp,
    ):
        body = await resp.json(content_type=None)
        return resp.status, body, dict(resp.headers)


# ------------------------------------------------------------------ auth
def test_check_admin_rules() -> None:
    s = AdminSettings(token=TOKEN)
    assert check_admin(s, f"Bearer {TOKEN}", "203.0.113.9") is None
    assert check_admin(s, f"bearer {TOKEN}", "::1") is None
    assert check_admin(s, f"Bearer {TOKEN}x", "127.0.0.1") == "wrong admin token"
    assert check_admin(s, f"Basic {TOKEN}", "127.0.0.1") is not None
    assert check_admin(s, "Bearer ", "127.0.0.1") is not None
    # open: loopback without a token, but never a remote client
    opened = AdminSettings(token=TOKEN, open=True)
    assert check_admin(opened, None, "127.0.0.1") is None
    assert check_admin(opened, None, "203.0.113.9") is not None
    assert check_admin(AdminSettings(open=True), None, "::1") is None
    assert check_admin(AdminSettings(open=True), "Bearer anything", "10.0.0.2") is not None


def test_short_admin_token_is_a_config_error() -> None:
    from xiaozhi_core.testing import fake_config

    with pytest.raises(ConfigError, match=r"server\.admin\.token: must be at least 16"):
        fake_config(server={"admin": {"token": "abc"}})


@pytest.mark.parametrize(
    "path",
    [
        "/sessions",
        "/devices",
        f"/devices/{DEVICE}",
        f"/devices/{DEVICE}/turns",
        "/stats",
        "/profiles",
        "/nowhere",
    ],
)
async def test_every_route_refuses_without_the_token(admin_server: Any, path: str) -> None:
    server, _ = admin_server
    for token in (None, "wrong-token-0123456789"):
        status, body, headers = await _call(server, "GET", path, token=token)
        assert status == 401, (path, token, body)
        assert set(body) == {"error"} and body["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
    for method, p in (("PUT", f"/devices/{DEVICE}"), ("POST", "/reload")):
        status, body, _ = await _call(server, method, p, token=None, json={"profile": None})
        assert status == 401, (method, p)


async def test_no_token_configured_refuses_loopback_too(make_server: ServerFactory) -> None:
    server = await make_server()
    status, body, _ = await _call(server, "GET", "/sessions", token="anything-at-all-123")
    assert status == 401
    assert "no server.admin.token" in body["error"]


async def test_open_lets_loopback_in(make_server: ServerFactory) -> None:
    server = await make_server(server={"admin": {"open": True}})
    status, body, _ = await _call(server, "GET", "/sessions", token=None)
    assert status == 200 and body == {"count": 0, "sessions": []}


async def test_token_from_the_environment(
    make_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xiaozhi_core.testing
    from xiaozhi_core.config import load_config
    from xiaozhi_core.registry import Registry

    monkeypatch.setenv("XIAOZHI_TEST_ADMIN", TOKEN)
    path = tmp_path / "c.yaml"
    path.write_text(
        "server: {admin: {token: '${XIAOZHI_TEST_ADMIN}'}}\n"
        "vad: {provider: fake}\nasr: {provider: fake}\n"
        "llm: {provider: fake}\ntts: {provider: fake}\n"
    )
    registry = Registry()
    registry.register(xiaozhi_core.testing)
    assert load_config([path], registry).server.admin.token == TOKEN


# ------------------------------------------------------------------ routes
async def test_sessions_show_a_live_device(admin_server: Any) -> None:
    server, _ = admin_server
    async with FakeDevice(server.ws_url, device_id=DEVICE) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop")
        status, body, headers = await _call(server, "GET", "/sessions")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert body["count"] == 1
        s = body["sessions"][0]
        assert s["device_id"] == DEVICE and s["transport"] == "websocket"
        assert s["session_id"] == dev.session_id
        assert s["state"] in ("idle", "listening")
        assert s["turns"] == 1 and s["last_turn"]["first_frame_sent_ms"] > 0
        assert s["lane"]["frames_in"] > 0 and s["lane"]["frames_lost"] == 0
        assert s["lane"]["lag_max_ms"] >= s["lane"]["lag_ms"] >= 0
    for _ in range(100):
        if not server.sessions:
            break
        await asyncio.sleep(0.02)
    status, body, _ = await _call(server, "GET", "/sessions")
    assert body == {"count": 0, "sessions": []}


async def test_devices_turns_and_profile(admin_server: Any) -> None:
    server, store = admin_server
    store.device_seen(DEVICE, client_id="c-1", board="bread-compact-wifi", firmware="1.6.2")
    store.session_started("s-1", DEVICE, transport="websocket")
    for n in range(1, 6):
        store.turn_recorded(
            session_id="s-1",
            device_id=DEVICE,
            turn=n,
            kind="voice",
            outcome="ok" if n != 3 else "failed",
            text=f"question {n}",
            reply=f"answer {n}",
            latency={"asr_final_ms": 100.0 * n, "first_frame_sent_ms": 300.0 * n},
            error="LLM timed out" if n == 3 else None,
        )
    assert await store.flush()

    status, body, _ = await _call(server, "GET", "/devices")
    assert status == 200 and body["count"] == 1
    d = body["devices"][0]
    assert (d["device_id"], d["board"], d["firmware"], d["profile"], d["online"]) == (
        DEVICE,
        "bread-compact-wifi",
        "1.6.2",
        None,
        False,
    )

    status, body, _ = await _call(server, "GET", f"/devices/{DEVICE}")
    assert status == 200 and body["device"]["client_id"] == "c-1"
    assert [s["id"] for s in body["sessions"]] == ["s-1"] and body["online"] == []

    status, body, _ = await _call(server, "GET", "/devices/ff:ff:ff:ff:ff:ff")
    assert status == 404 and "unknown device" in body["error"]

    # paging: newest first, two per page
    status, page1, _ = await _call(server, "GET", f"/devices/{DEVICE}/turns?limit=2")
    assert status == 200 and [t["turn_no"] for t in page1["turns"]] == [5, 4]
    status, page2, _ = await _call(
        server, "GET", f"/devices/{DEVICE}/turns?limit=2&before={page1['next_before']}"
    )
    assert [t["turn_no"] for t in page2["turns"]] == [3, 2]
    failed = page2["turns"][0]
    assert (failed["outcome"], failed["error"], failed["text"]) == (
        "failed",
        "LLM timed out",
        "question 3",
    )
    status, page3, _ = await _call(
        server, "GET", f"/devices/{DEVICE}/turns?limit=2&before={page2['next_before']}"
    )
    assert [t["turn_no"] for t in page3["turns"]] == [1] and page3["next_before"] is None
    assert page3["turns"][0]["latency"] == {"asr_final_ms": 100.0, "first_frame_sent_ms": 300.0}
    for bad in ("limit=0", "limit=201", "limit=x", "before=-1"):
        status, body, _ = await _call(server, "GET", f"/devices/{DEVICE}/turns?{bad}")
        assert status == 400 and "query parameter" in body["error"], bad

    # profile: bad bodies, unknown device, set, back to default
    for bad in ({"profile": 3}, {"profile": ""}, {"name": "x"}, {"profile": "a", "x": 1}, []):
        status, body, _ = await _call(server, "PUT", f"/devices/{DEVICE}", json=bad)
        assert status == 400 and body["error"], bad
    status, body, _ = await _call(server, "PUT", f"/devices/{DEVICE}", data=b"{nope")
    assert status == 400 and body["error"].startswith("invalid JSON body")
    status, body, _ = await _call(server, "PUT", "/devices/ff:ff", json={"profile": None})
    assert status == 404
    status, body, _ = await _call(
        server, "PUT", f"/devices/{DEVICE}", json={"profile": "no-such-profile"}
    )
    assert status == 400 and "no-such-profile" in body["error"]  # the server knows its profiles
    status, body, _ = await _call(server, "PUT", f"/devices/{DEVICE}", json={"profile": None})
    assert status == 200 and body["device"]["profile"] is None
    assert (await store.get_device(DEVICE)).profile is None


async def test_stats_samples(admin_server: Any) -> None:
    server, _ = admin_server
    async with FakeDevice(server.ws_url, device_id=DEVICE) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop")
        # close one interval by hand (the server closes one every 10 s)
        window = server.metrics.window
        window.close(1.0e9, len(server.sessions), list(server.lag_monitor.lags))
        status, body, _ = await _call(server, "GET", "/stats")
    assert status == 200 and body["interval_s"] == 10.0 and body["span_s"] == 3600.0
    assert body["samples"][-1]["sessions"] == 1
    # the server's own sampler may have closed an interval (on a 10-s boundary) during
    # the turn: look at every sample
    every = body["samples"] + [body["current"]]
    assert sum(s["turns"] for s in every) == 1
    assert any((s["ttfa_p50_ms"] or 0) > 0 for s in every)
    assert any(s["lane_lag_max_ms"] is not None for s in every)
    assert any(s["loop_lag_max_ms"] is not None for s in every)
    assert body["current"]["turns"] == 0


async def test_reload_without_config_files_is_refused(admin_server: Any) -> None:
    server, _ = admin_server
    status, body, _ = await _call(server, "POST", "/reload")
    # started from no file: nothing to reload, refused with the reason
    assert status == 422 and body["applied"] is False
    assert "not started from config files" in body["errors"][0]


async def test_unknown_api_path_and_store_missing(make_server: ServerFactory) -> None:
    server = await make_server(server={"admin": {"token": TOKEN}})
    status, body, _ = await _call(server, "GET", "/nowhere")
    assert status == 404 and "openapi.json" in body["error"]
    assert server.store is None  # the tests' servers have no store unless given one
    status, body, _ = await _call(server, "GET", "/devices")
    assert status == 503 and "no device store" in body["error"]


# ------------------------------------------------------------------ document + console
async def test_openapi_matches_the_router(admin_server: Any) -> None:
    server, _ = admin_server
    status, doc, _ = await _call(server, "GET", "/openapi.json", token=None)
    assert status == 200 and doc == openapi_document()
    routes: set[tuple[str, str]] = set()
    assert server._http is not None
    for route in server._http.runner.app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if path.startswith(API_PREFIX) and "{tail" not in path and route.method != "HEAD":
            routes.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    # every $ref resolves
    text = str(doc)
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text
    import re

    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in doc["components"]["schemas"]
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    for _, path in documented:
        assert path.removeprefix(API_PREFIX) in docs, path


async def test_console_files(admin_server: Any) -> None:
    server, _ = admin_server
    async with aiohttp.ClientSession() as http:
        async with http.get(_url(server, "/console"), allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/console/"
        async with http.get(_url(server, "/console/")) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "Access-Control-Allow-Origin" not in resp.headers
            assert 'src="console.js"' in await resp.text()
        for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
            async with http.get(_url(server, f"/console/{name}")) as resp:
                assert resp.status == 200 and resp.content_type == kind
        for bad in ("/console/nope.js", "/console/..%2Fhttp.py", "/console/%2e%2e/admin.py"):
            async with http.get(_url(server, bad)) as resp:
                assert resp.status == 404, bad
        # the API sends no CORS headers and answers no preflight (OTA still does)
        async with http.options(_url(server, API_PREFIX + "/sessions")) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.options(_url(server, "/xiaozhi/ota/")) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
