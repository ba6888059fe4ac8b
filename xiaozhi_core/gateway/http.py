"""The HTTP side (aiohttp): OTA / bootstrap, health and metrics.

``websockets`` cannot answer POST, so OTA lives on its own port (``server.http_port``).
The OTA endpoint answers browsers' CORS preflight and returns the WebSocket URL, a token
and the server time; it never returns ``mqtt`` (the device would prefer it) nor
``activation``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from .auth import Authenticator

__all__ = ["HttpHost", "make_app"]


class HttpHost(Protocol):
    """What the HTTP side needs from the server (the WebSocket side implements it)."""

    auth: Authenticator

    def ws_url_for(self, request_host: str | None) -> str:
        """The WebSocket URL to hand a device that reached us as ``request_host``."""
        ...

    def health(self) -> dict[str, object]:
        """The body of ``GET /health``."""
        ...

    def render_metrics(self) -> bytes:
        """``GET /metrics`` in the Prometheus text format."""
        ...

    async def health_report(self) -> dict[str, Any]:
        """What ``GET /health`` answers (a worker: for every worker)."""
        ...

    async def metrics_report(self) -> bytes:
        """What ``GET /metrics`` answers (a worker: merged over every worker)."""
        ...

log = logging.getLogger(__name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Device-Id, Client-Id, Content-Type, Authorization, "
                                    "Activation-Version, Serial-Number, Accept-Language, "
                                    "Protocol-Version",
    "Access-Control-Max-Age": "86400",
}


@web.middleware
async def _cors(request: web.Request,
                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(CORS_HEADERS)
        raise
    response.headers.update(CORS_HEADERS)
    return response


def _ota_response(server: HttpHost, request: web.Request,
                  body: dict[str, Any]) -> dict[str, Any]:
    device_id = (request.headers.get("Device-Id") or body.get("mac_address") or "").lower()
    client_id = request.headers.get("Client-Id") or body.get("uuid") or ""
    token = server.auth.issue(client_id, device_id) if server.auth.enabled and device_id else ""
    now = time.time()
    offset = (time.localtime(now).tm_gmtoff or 0) // 60
    out: dict[str, Any] = {
        "server_time": {"timestamp": int(now * 1000), "timezone_offset": int(offset)},
        "websocket": {"url": server.ws_url_for(request.host), "token": token},
    }
    app = body.get("application") if isinstance(body.get("application"), dict) else {}
    version = app.get("version") if app else None
    if isinstance(version, str) and version:
        out["firmware"] = {"version": version, "url": ""}
    return out


def make_app(server: HttpHost) -> web.Application:
    app = web.Application(middlewares=[_cors], client_max_size=256 * 1024)

    async def ota_post(request: web.Request) -> web.Response:
        try:
            raw = await request.read()
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            log.info("OTA request from %s with a bad body: %s", request.remote, exc)
            return web.json_response({"error": f"invalid JSON body: {exc}"}, status=400)
        if server.auth.enabled and server.auth.allowed:
            device = (request.headers.get("Device-Id") or "").lower()
            if device not in server.auth.allowed:
                log.warning("OTA refused for device %r: not on the allow-list", device)
                return web.json_response({"error": "device is not allowed"}, status=403)
        response = _ota_response(server, request, body)
        log.info("OTA check from %s (%s)", request.headers.get("Device-Id", "?"),
                 request.headers.get("User-Agent", "?"))
        return web.json_response(response)

    async def ota_get(request: web.Request) -> web.Response:
        return web.Response(text=f"OTA endpoint is running; WebSocket: "
                                 f"{server.ws_url_for(request.host)}\n")

    async def health(request: web.Request) -> web.Response:
        return web.json_response(await server.health_report())

    async def metrics(request: web.Request) -> web.Response:
        body = await server.metrics_report()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    for path in ("/xiaozhi/ota/", "/xiaozhi/ota"):
        app.router.add_post(path, ota_post)
        app.router.add_get(path, ota_get)
        app.router.add_route("OPTIONS", path, ota_get)  # answered by the CORS middleware
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
