"""The HTTP side (aiohttp): OTA / bootstrap, health and metrics.

``websockets`` cannot answer POST, so OTA lives on its own port (``server.http_port``).
The OTA endpoint answers browsers' CORS preflight and returns the WebSocket URL, a token
and the server time (in ``ota.timezone``); with MQTT enabled also the device's ``mqtt``
block (which the firmware then prefers); with ``ota.firmware_dir`` a newer build's URL,
served here with range requests. It never returns ``activation``.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from .activation import ActivationStore
from .auth import Authenticator
from .firmware import (
    DOWNLOAD_PATH,
    FirmwareStore,
    device_build,
    download_handler,
    firmware_answer,
)
from .vision import EXPLAIN_PATH, VisionTokens, explain_handler

if TYPE_CHECKING:
    from ..app import Providers
    from ..config import ServerSettings
    from .mqtt.gateway import MqttGateway

__all__ = ["HttpHost", "make_app"]


class HttpHost(Protocol):
    """What the HTTP side needs from the server (the WebSocket side implements it)."""

    auth: Authenticator
    #: The MQTT + UDP gateway when ``server.mqtt.enabled`` (OTA hands out its block).
    mqtt: MqttGateway | None
    #: ``ota.firmware_dir`` builds, or None.
    firmware: FirmwareStore | None
    #: ``ota.timezone`` (IANA name; empty: the machine's local zone).
    ota_timezone: str
    #: ``ota.activation``'s devices file, or None (no activation step).
    activation: ActivationStore | None
    #: Device id → the host it reached OTA at (where it will find the explain URL).
    ota_hosts: dict[str, str]
    #: Upload tokens of MCP vision, and the providers (``providers.vision``).
    vision_tokens: VisionTokens
    providers: Providers

    @property
    def settings(self) -> ServerSettings:
        """``server:`` of the deployment (limits and timeouts of the HTTP side)."""
        ...

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
    activation = server.activation
    waiting = activation is not None and not activation.is_activated(device_id)
    token = server.auth.issue(client_id, device_id) \
        if server.auth.enabled and device_id and not waiting else ""
    now = time.time()
    out: dict[str, Any] = {
        "server_time": {"timestamp": int(now * 1000),
                        "timezone_offset": _utc_offset_minutes(server.ota_timezone, now)},
        "websocket": {"url": server.ws_url_for(request.host), "token": token},
    }
    if waiting and activation is not None and device_id:
        # no credentials until the operator confirms the code the device shows and speaks
        code = activation.code_for(device_id, client_id)
        out["activation"] = {"code": code, "message": f"xiaozhi-core {code}",
                             "challenge": secrets.token_hex(16), "timeout_ms": 30000}
        log.info("OTA: device %s waits for activation with code %s", device_id, code)
    elif server.mqtt is not None and device_id:
        from .mqtt.credentials import CredentialError

        try:
            out["mqtt"] = server.mqtt.ota_block(device_id, client_id,
                                                _hostname(request.host))
        except CredentialError as exc:
            log.info("OTA: no MQTT for %r: %s", device_id, exc)
    hostname = _hostname(request.host)
    if device_id and hostname:
        if len(server.ota_hosts) >= 100_000:
            server.ota_hosts.clear()
        server.ota_hosts[device_id] = hostname
    board, version = device_build(body, request.headers.get("User-Agent", ""))
    firmware = firmware_answer(server.firmware, board, version,
                               f"{request.scheme}://{request.host}")
    if firmware is not None:
        out["firmware"] = firmware
    return out


def _hostname(host: str | None) -> str | None:
    return urlsplit(f"//{host}").hostname if host else None


def _utc_offset_minutes(tz: str, now: float) -> int:
    """Minutes east of UTC at ``now`` in zone ``tz`` (empty: the machine's local zone).

    >>> _utc_offset_minutes("Asia/Shanghai", 0.0), _utc_offset_minutes("UTC", 0.0)
    (480, 0)
    """
    if tz:
        offset = datetime.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(tz)).utcoffset()
        return int(offset.total_seconds() // 60) if offset is not None else 0
    return int((time.localtime(now).tm_gmtoff or 0) // 60)


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

    async def activate(request: web.Request) -> web.Response:
        """The firmware polls here after showing its code: 202 waiting, 200 activated."""
        device = (request.headers.get("Device-Id") or "").strip().lower()
        store = server.activation
        if store is None or store.is_activated(device):
            return web.json_response({"success": True})
        if any(p.get("device_id") == device for p in store.pending().values()):
            return web.json_response({"success": False, "message": "waiting for the "
                                      "operator to confirm the code"}, status=202)
        return web.json_response({"success": False, "error": "no activation pending for "
                                  "this device; check OTA first"}, status=400)

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
    app.router.add_post("/xiaozhi/ota/activate", activate)
    if server.firmware is not None:
        app.router.add_get(DOWNLOAD_PATH + "{name}", download_handler(server.firmware))
    s = server.settings
    # its own size limit: the app's client_max_size is for OTA's JSON
    app.router.add_post(EXPLAIN_PATH, explain_handler(
        server.vision_tokens, server.providers.vision, max_bytes=s.vision.max_image_bytes,
        timeout=s.timeouts.provider))
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
