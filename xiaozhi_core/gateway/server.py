"""The server: WebSocket endpoint ``/xiaozhi/v1/`` for devices and the HTTP side, with
authentication, admission control and graceful shutdown.

Example (with the fake providers; ports 0 pick free ones):
    >>> import asyncio
    >>> from xiaozhi_core.testing import fake_config
    >>> async def main():
    ...     server = await XiaozhiServer.create(fake_config())
    ...     await server.start(port=0, http_port=0)
    ...     ok = server.ws_url.startswith("ws://127.0.0.1:")
    ...     await server.stop()
    ...     return ok
    >>> asyncio.run(main())
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from ..app import build_providers, close_providers
from ..audio import Resampler
from ..config import DeploymentConfig
from ..executor import Executor
from ..looplag import LoopLagMonitor
from ..protocol.opus import OpusEncoder
from ..session.audio_hub import AudioHub
from ..session.segmenter import segmentation_params
from ..session.session import DeviceInfo, Providers, Session
from ..types import Role
from .auth import Authenticator, AuthError, identity_from_request
from .http import make_app
from .metrics import Metrics

__all__ = ["WS_PATH", "XiaozhiServer"]

log = logging.getLogger(__name__)

WS_PATH = "/xiaozhi/v1/"


class XiaozhiServer:
    """Owns the executor, the shared providers, the audio hub and every session."""

    def __init__(self, config: DeploymentConfig, bound: dict[Role, Any],
                 executor: Executor) -> None:
        self.config = config
        self.bound = bound
        self.providers = Providers.from_roles(bound)
        self.executor = executor
        self.metrics = Metrics()
        self.lag_monitor = LoopLagMonitor(slow_callback=0.05)
        s = config.server
        self.auth = Authenticator(secret=s.auth.secret, ttl=s.auth.token_ttl,
                                  enabled=s.auth_enabled, tokens=s.auth.tokens,
                                  allowed_devices=s.auth.allowed_devices)
        self.hub = AudioHub(executor, self.providers.vad, config.session.vad_tick_ms)
        self.segmentation = segmentation_params(config.session,
                                                getattr(self.providers.vad, "options", None))
        self.sessions: dict[str, Session] = {}
        self.tts_sample_rate = 16000
        self.apology_frames: list[bytes] | None = None
        self._ws_server: Server | None = None
        self._http_runner: web.AppRunner | None = None
        self.host = s.host
        self.port = s.port
        self.http_port = s.http_port
        self._owns_executor = False

    @classmethod
    async def create(cls, config: DeploymentConfig) -> XiaozhiServer:
        """Build the executor and every selected provider, then the server."""
        executor = Executor(config.executor)
        bound = await build_providers(config, executor)
        server = cls(config, bound, executor)
        server._owns_executor = True
        return server

    # ------------------------------------------------------------------ URLs
    @property
    def ws_url(self) -> str:
        return self.ws_url_for(None)

    def ws_url_for(self, request_host: str | None) -> str:
        if self.config.server.public_ws_url:
            return self.config.server.public_ws_url
        host = self.host if self.host not in ("0.0.0.0", "::", "") else None
        if host is None and request_host:
            host = urlsplit(f"//{request_host}").hostname
        return f"ws://{host or '127.0.0.1'}:{self.port}{WS_PATH}"

    @property
    def ota_url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.http_port}/xiaozhi/ota/"

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str | None = None, port: int | None = None,
                    http_port: int | None = None) -> None:
        self.host = host or self.host
        port = self.port if port is None else port
        http_port = self.http_port if http_port is None else http_port
        self.lag_monitor.start()
        self.hub.start()
        self.tts_sample_rate = int(await self.providers.tts.remote_attr("sample_rate"))
        await self._prepare_apology()
        limits = self.config.server.limits
        self._ws_server = await serve(
            self._handle, self.host, port, process_request=self._process_request,
            max_size=limits.max_frame_bytes, compression=None, ping_interval=20,
            ping_timeout=20, close_timeout=2, server_header="xiaozhi-core")
        self.port = self._ws_server.sockets[0].getsockname()[1]
        self._http_runner = web.AppRunner(make_app(self), access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, self.host, http_port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.http_port = server.sockets[0].getsockname()[1]
        log.info("listening: WebSocket %s  OTA %s (auth %s)", self.ws_url, self.ota_url,
                 "on" if self.auth.enabled else "off")

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            for session in list(self.sessions.values()):
                await session.close_tasks()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws_server.wait_closed(), 5)
            self._ws_server = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        await self.hub.stop()
        self.lag_monitor.stop()
        if self._owns_executor:
            await close_providers(self.bound)
            self.executor.shutdown(wait=False)

    async def serve_forever(self) -> None:
        assert self._ws_server is not None
        await self._ws_server.serve_forever()

    async def _prepare_apology(self) -> None:
        """Synthesise the apology once, so a failing turn can still say sorry."""
        text = self.config.session.apology
        if not text:
            return
        try:
            cfg = self.config.session
            resampler = Resampler(self.tts_sample_rate, cfg.output_sample_rate)
            encoder = OpusEncoder(cfg.output_sample_rate, cfg.output_frame_ms)
            frames: list[bytes] = []
            async with asyncio.timeout(self.config.server.timeouts.provider):
                async for chunk in self.providers.tts.synthesize(text):
                    frames += encoder.encode(
                        resampler.process(np.frombuffer(chunk, np.int16)).tobytes())
            frames += encoder.encode(resampler.flush().tobytes()) + encoder.flush()
            self.apology_frames = frames
        except Exception as exc:
            log.warning("could not pre-synthesise the apology (%s); failed turns will only "
                        "show an alert", exc)

    # ------------------------------------------------------------------ connections
    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str,
                outcome: str) -> Response:
        self.metrics.connections.labels(outcome).inc()
        log.warning("refused connection from %s: %s", connection.remote_address, reason)
        return connection.respond(status, reason + "\n")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path.rstrip("/") != WS_PATH.rstrip("/"):
            return self._refuse(connection, HTTPStatus.NOT_FOUND,
                                f"unknown path {path}; devices connect to {WS_PATH}", "not_found")
        limits = self.config.server.limits
        if len(self.sessions) >= limits.max_sessions:
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                                f"server full ({limits.max_sessions} sessions)", "refused_full")
        lag_ms = self.lag_monitor.sustained_lag() * 1000
        if limits.max_loop_lag_ms and lag_ms > limits.max_loop_lag_ms:
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                                f"server overloaded (event loop {lag_ms:.0f} ms late)",
                                "refused_overload")
        try:
            ident = identity_from_request(request.path, request.headers)
            self.auth.check(ident)
        except AuthError as exc:
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, f"unauthorized: {exc}",
                                "refused_auth")
        connection.xiaozhi_identity = ident  # type: ignore[attr-defined]
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        ident = getattr(ws, "xiaozhi_identity", None)
        if ident is None:
            await ws.close(1008, "no identity")
            return
        if len(self.sessions) >= self.config.server.limits.max_sessions:
            self.metrics.connections.labels("refused_full").inc()
            await ws.close(1013, "server full")
            return
        remote = ws.remote_address
        device = DeviceInfo(ident.device_id or f"anonymous-{remote[0] if remote else '?'}",
                            ident.client_id, ident.protocol_version,
                            f"{remote[0]}:{remote[1]}" if remote else "")
        session = Session(self, ws, device)
        self.sessions[session.session_id] = session
        self.metrics.connections.labels("accepted").inc()
        self.metrics.sessions_active.set(len(self.sessions))
        log.info("session %s: device %s connected from %s", session.session_id,
                 device.device_id, device.remote)
        try:
            await session.run()
        except Exception:
            log.exception("session %s crashed", session.session_id)
        finally:
            await session.close_tasks()
            self.sessions.pop(session.session_id, None)
            self.metrics.sessions_active.set(len(self.sessions))
            log.info("session %s closed (code %s)", session.session_id, ws.close_code)

    def render_metrics(self) -> bytes:
        hub = self.hub
        return self.metrics.render(
            self.lag_monitor.stats(), self.executor.stats(),
            {"batches": hub.batches, "calls": hub.vad_calls, "windows": hub.windows_total,
             "last_batch_streams": hub.last_batch_streams, "busy_seconds": hub.busy_seconds})
