"""The HTTP side (aiohttp): OTA / bootstrap, health and metrics, and (given an
:class:`~xiaozhi_core.gateway.admin.AdminHost`) the operator API and console.

``websockets`` cannot answer POST, so OTA lives on its own port (``server.http_port``).
The OTA endpoint answers browsers' CORS preflight (the operator API and the console
send no CORS headers: only their own page may call them) and returns the WebSocket URL,
a token and the server time (in ``ota.timezone``); with MQTT enabled also the device's ``mqtt``
block (which the firmware then prefers); with ``ota.firmware_dir`` a newer build's URL,
served here with range requests. It never returns ``activation``.

The port is hardened against clients that send slowly or never (``server.http``): a
connection must complete its request headers within ``header_timeout`` and its body
within ``body_timeout``, idles at most ``keepalive_timeout``, and at most
``max_connections`` are open at once (the next one is answered 503 and closed). Errors
that are the client's fault (malformed request lines, abandoned uploads) are counted in
``xiaozhi_http_client_errors_total`` instead of being logged with a traceback.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import secrets
import socket
import sys
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..config import HttpSettings
from ..logutil import LogLimiter, clip
from ..store.device_info import DeviceInfo, ota_device_info
from .activation import ActivationStore
from .admin import API_PREFIX, AdminHost, add_admin_routes
from .auth import Authenticator, BadRequest, check_id
from .firmware import (
    DOWNLOAD_PATH,
    FirmwareStore,
    device_build,
    download_handler,
    firmware_answer,
)
from .metrics import Metrics
from .vision import EXPLAIN_PATH, VisionTokens, explain_handler

if TYPE_CHECKING:
    from ..app import Providers
    from ..config import ServerSettings
    from .mqtt.gateway import MqttGateway

__all__ = ["HttpHost", "HttpPort", "make_app"]


class HttpHost(Protocol):
    """What the HTTP side needs from the server (the WebSocket side implements it)."""

    auth: Authenticator
    #: Rate limit for log lines an outsider can trigger ("kind:peer" keys).
    log_limiter: LogLimiter
    metrics: Metrics
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

    async def health_report(self) -> dict[str, object]:
        """What ``GET /health`` answers (a worker: for every worker)."""
        ...

    async def metrics_report(self) -> bytes:
        """What ``GET /metrics`` answers (a worker: merged over every worker)."""
        ...

    def device_seen(self, device_id: str, info: DeviceInfo) -> None:
        """An OTA check-in of ``device_id`` (board, firmware) for the device store."""
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
async def _cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith((API_PREFIX, "/console")):
        return await handler(request)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(CORS_HEADERS)
        raise
    response.headers.update(CORS_HEADERS)
    return response


def _identity(request: web.Request, body: dict[str, object]) -> tuple[str, str]:
    """(device id, client id) from the headers, else the body; :class:`BadRequest` when
    either is repeated, not a string or not printable."""
    out = []
    for header, key in (("Device-Id", "mac_address"), ("Client-Id", "uuid")):
        values = request.headers.getall(header, [])
        if len(values) > 1:
            raise BadRequest(f"header {header} sent {len(values)} times")
        value = values[0] if values else body.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise BadRequest(f"{key} must be a string, got {type(value).__name__}")
        out.append(check_id(header, value.strip()))
    return out[0].lower(), out[1]


def _ota_response(
    server: HttpHost, request: web.Request, body: dict[str, object], device_id: str, client_id: str
) -> dict[str, object]:
    activation = server.activation
    waiting = activation is not None and not activation.is_activated(device_id)
    token = (
        server.auth.issue(client_id, device_id)
        if server.auth.enabled and device_id and not waiting
        else ""
    )
    now = time.time()
    out: dict[str, object] = {
        "server_time": {
            "timestamp": int(now * 1000),
            "timezone_offset": _utc_offset_minutes(server.ota_timezone, now),
        },
        "websocket": {"url": server.ws_url_for(request.host), "token": token},
    }
    if waiting and activation is not None and device_id:
        # no credentials until the operator confirms the code the device shows and speaks
        code = activation.code_for(device_id, client_id)
        out["activation"] = {
            "code": code,
            "message": f"xiaozhi-core {code}",
            "challenge": secrets.token_hex(16),
            "timeout_ms": 30000,
        }
        log.info("OTA: device %s waits for activation with code %s", device_id, code)
    elif server.mqtt is not None and device_id:
        from .mqtt.credentials import CredentialError

        try:
            out["mqtt"] = server.mqtt.ota_block(device_id, client_id, _hostname(request.host))
        except CredentialError as exc:
            log.info("OTA: no MQTT for %r: %s", device_id, exc)
    hostname = _hostname(request.host)
    if device_id and hostname:
        if len(server.ota_hosts) >= 100_000:
            server.ota_hosts.clear()
        server.ota_hosts[device_id] = hostname
    board, version = device_build(body, request.headers.get("User-Agent", ""))
    firmware = firmware_answer(
        server.firmware, board, version, f"{request.scheme}://{request.host}"
    )
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


class _ClientGone(Exception):
    """The client went away (or stalled) mid-body: nothing to answer."""


def _parse_json(raw: bytes) -> dict[str, object]:
    """The OTA body as a JSON object (ValueError with a short reason otherwise)."""
    try:
        body = json.loads(raw) if raw else {}
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def make_app(
    server: HttpHost, settings: HttpSettings | None = None, admin: AdminHost | None = None
) -> web.Application:
    """The aiohttp app: OTA, ``/health``, ``/metrics``, and with ``admin`` the operator
    API (``/api/v1/``) and console (``/console/``)."""
    app = web.Application(middlewares=[_cors], client_max_size=256 * 1024)
    settings = settings or server.settings.http
    limiter = server.log_limiter
    #: OTA requests per address (token bucket): with auth on, OTA hands out tokens.
    ota_limit = LogLimiter(
        burst=settings.ota_burst, per_second=settings.ota_per_minute / 60, max_keys=4096
    )
    retry_after = (
        str(max(1, round(60 / settings.ota_per_minute))) if settings.ota_per_minute > 0 else "60"
    )

    def bad(request: web.Request, status: int, error: str) -> web.Response:
        if limiter.allow(f"http_{status}:{request.remote}"):
            log.info("OTA request from %s refused (%d): %s", request.remote, status, error)
        return web.json_response({"error": error}, status=status)

    async def read_body(request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(settings.body_timeout):
                return await request.read()
        except TimeoutError:
            server.metrics.http_client_errors.labels("body_timeout").inc()
            raise web.HTTPRequestTimeout(
                text=f"request body not received within {settings.body_timeout:g} s\n"
            ) from None
        except RequestPayloadError as exc:
            server.metrics.http_client_errors.labels("bad_request").inc()
            raise BadRequest(
                "body does not match its Content-Encoding "
                f"({clip(request.headers.get('Content-Encoding'), 20)})"
            ) from exc
        except (ConnectionError, ClientPayloadError):
            server.metrics.http_client_errors.labels("abandoned_body").inc()
            raise _ClientGone() from None

    async def ota_post(request: web.Request) -> web.StreamResponse:
        if not ota_limit.allow(request.remote or "?"):
            server.metrics.http_client_errors.labels("ota_rate_limited").inc()
            if limiter.allow(f"ota_429:{request.remote}"):
                log.warning(
                    "OTA requests from %s over the rate limit (%g a minute)",
                    request.remote,
                    settings.ota_per_minute,
                )
            return web.json_response(
                {"error": "too many OTA requests; retry later"},
                status=429,
                headers={"Retry-After": retry_after},
            )
        try:
            raw = await read_body(request)
            try:
                body = _parse_json(raw)
            except ValueError as exc:
                return bad(request, 400, f"invalid JSON body: {exc}")
            device_id, client_id = _identity(request, body)
        except BadRequest as exc:
            return bad(request, 400, str(exc))
        except _ClientGone:
            return web.Response(status=400)  # nobody reads it; aiohttp drops it quietly
        if server.auth.enabled and server.auth.allowed and device_id not in server.auth.allowed:
            if limiter.allow(f"ota_denied:{request.remote}"):
                log.warning("OTA refused for device %s: not on the allow-list", clip(device_id))
            return web.json_response({"error": "device is not allowed"}, status=403)
        response = _ota_response(server, request, body, device_id, client_id)
        if device_id:
            server.device_seen(device_id, ota_device_info(request.headers, body))
        if limiter.allow(f"ota:{request.remote}"):
            log.info(
                "OTA check from %s (%s)",
                clip(device_id or "?"),
                clip(request.headers.get("User-Agent", "?")),
            )
        return web.json_response(response)

    async def activate(request: web.Request) -> web.Response:
        """The firmware polls here after showing its code: 202 waiting, 200 activated."""
        device = (request.headers.get("Device-Id") or "").strip().lower()
        store = server.activation
        if store is None or store.is_activated(device):
            return web.json_response({"success": True})
        if any(p.get("device_id") == device for p in store.pending().values()):
            return web.json_response(
                {"success": False, "message": "waiting for the operator to confirm the code"},
                status=202,
            )
        return web.json_response(
            {"success": False, "error": "no activation pending for this device; check OTA first"},
            status=400,
        )

    async def ota_get(request: web.Request) -> web.Response:
        return web.Response(
            text=f"OTA endpoint is running; WebSocket: {server.ws_url_for(request.host)}\n"
        )

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
    app.router.add_post(
        EXPLAIN_PATH,
        explain_handler(
            server.vision_tokens,
            server.providers.vision,
            max_bytes=s.vision.max_image_bytes,
            timeout=s.timeouts.provider,
        ),
    )
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    if admin is not None:
        add_admin_routes(app, admin)
    return app


# --------------------------------------------------------------------------- the port
class _ClientErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger aiohttp's request handler uses. aiohttp logs every malformed request
    and every client that hangs up mid-request with a traceback at ERROR: those are the
    client's doing, so they are counted (``xiaozhi_http_client_errors_total``) and not
    logged. Anything else (a bug of ours) still goes through."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.getLogger(f"{__name__}.aiohttp"), {})
        self.metrics = metrics

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if exc is True:
            exc = sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            self.metrics.http_client_errors.labels("bad_request").inc()
            return
        if isinstance(exc, ConnectionError | ClientPayloadError | asyncio.CancelledError):
            self.metrics.http_client_errors.labels("disconnected").inc()
            return
        super().log(level, msg, *args, **kwargs)


_BUSY_BODY = b"too many HTTP connections\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Busy(asyncio.Protocol):
    """Answers a connection over the cap with 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: counts it against the cap and closes
    it when its first request's headers are not complete within ``header_timeout`` (later
    requests on a kept-alive connection are bounded by aiohttp's keep-alive timeout)."""

    def __init__(self, port: HttpPort, inner: asyncio.Protocol) -> None:
        self.port = port
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(
            self.port.settings.header_timeout, self._headers_late
        )
        self.inner.connection_made(transport)

    def _headers_late(self) -> None:
        self._timer = None
        self.port.metrics.http_client_errors.labels("header_timeout").inc()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.port.open -= 1
        self.transport = None
        self.inner.connection_lost(exc)


class HttpPort:
    """The HTTP listener: aiohttp's app runner behind a connection cap and a header
    timeout. ``await start(host, port)``, then ``port``; ``await stop()``."""

    def __init__(
        self, server: HttpHost, settings: HttpSettings, admin: AdminHost | None = None
    ) -> None:
        self.settings = settings
        self.metrics = server.metrics
        self.runner = web.AppRunner(
            make_app(server, settings, admin),
            access_log=None,
            keepalive_timeout=self.settings.keepalive_timeout,
            logger=_ClientErrorLog(server.metrics),
        )
        self.open = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    def _protocol(self) -> asyncio.Protocol:
        if self.open >= self.settings.max_connections:
            self.metrics.http_client_errors.labels("over_connection_cap").inc()
            return _Busy()
        self.open += 1
        assert self.runner.server is not None
        return _Guarded(self, self.runner.server())

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen (``reuse_port``: SO_REUSEPORT, for several worker processes)."""
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            host,
            port,
            backlog=128,
            reuse_address=True,
            reuse_port=reuse_port or None,
        )
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.runner.cleanup()
