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
import collections
import contextlib
import dataclasses
import errno
import logging
import os
import socket
import weakref
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from ..app import Providers, build_providers, close_providers
from ..audio import Resampler
from ..config import DeploymentConfig, ServerSettings
from ..errors import ConfigError, StartupError
from ..executor import Executor
from ..language import AUTO
from ..logutil import LogLimiter, clip
from ..looplag import LoopLagMonitor
from ..protocol.opus import OpusEncoder
from ..providers import MemoryCapabilities
from ..session.audio_hub import AudioHub
from ..session.host import OutputFormat, SessionHost
from ..session.profiles import ProfileBook, build_profiles
from ..session.recall import StoreDeviceMemory, consolidate
from ..session.segmenter import segmentation_params
from ..session.session import Session
from ..session.transport import Peer
from ..session.voices import SharedVoiceprint
from ..store.device_info import DeviceInfo
from ..store.errors import StoreError
from ..types import SegmentationDefaults
from .activation import ActivationStore
from .admin import local_report, stats_probe
from .admission import Admission, LocalAdmission
from .auth import Authenticator, AuthError, BadRequest, Identity, identity_from_request
from .firmware import FirmwareStore
from .http import HttpPort
from .memtrim import HeapTrimmer
from .metrics import Metrics
from .vision import EXPLAIN_PATH, VisionTokens
from .ws_transport import AudioConnection, WebSocketTransport, describe_close

if TYPE_CHECKING:
    from ..registry import Registry
    from ..session.transport import Transport
    from ..store import Store
    from .mqtt.gateway import MqttGateway

__all__ = ["WS_PATH", "XiaozhiServer", "listen_error"]

log = logging.getLogger(__name__)

WS_PATH = "/xiaozhi/v1/"

#: ``session:`` keys a reload applies to new turns (through the default profile); any
#: other changed key outside ``profiles:`` and ``devices:`` needs a restart.
_RELOADABLE_SESSION = (
    "system_prompt",
    "greeting",
    "goodbye",
    "tts_voice",
    "server_tools",
    "default_profile",
)


def _flat(value: object, prefix: str, out: dict[str, object]) -> dict[str, object]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value
    return out


def devices_path(config: DeploymentConfig) -> Path:
    """``ota.devices_file``, relative paths taken from the first config file's folder.

    >>> from xiaozhi_core.testing import fake_config
    >>> devices_path(fake_config(ota={"devices_file": "/tmp/d.json"}))
    PosixPath('/tmp/d.json')
    """
    path = Path(config.ota.devices_file)
    first = Path(config.files[0]) if config.files else None
    if not path.is_absolute() and first is not None and first.exists():
        path = first.parent / path
    return path


def listen_error(
    what: str, host: str, port: int, flag: str, key: str, exc: OSError
) -> StartupError:
    """The one-line error for a port the server cannot listen on.

    >>> import errno
    >>> print(listen_error("WebSocket", "127.0.0.1", 8000, "--port", "server.port",
    ...                    OSError(errno.EADDRINUSE, "Address already in use")))
    cannot listen for WebSocket on 127.0.0.1:8000: address already in use (another process \
holds the port: stop it, or choose another with --port or server.port)
    """
    code = exc.errno
    if code == errno.EADDRINUSE:
        hint = f"another process holds the port: stop it, or choose another with {flag} or {key}"
    elif code == errno.EACCES:
        hint = f"ports below 1024 need privileges: choose another with {flag} or {key}"
    elif code in (errno.EADDRNOTAVAIL, socket.EAI_NONAME) or isinstance(exc, socket.gaierror):
        hint = (
            "not an address of this machine: use --host 0.0.0.0 (all interfaces), "
            "127.0.0.1, or one of its addresses (server.host)"
        )
    else:
        hint = f"check --host and {flag} ({key})"
    reason = (os.strerror(code) if code else str(exc)).lower()
    return StartupError(f"cannot listen for {what} on {host}:{port}: {reason} ({hint})")


class XiaozhiServer:
    """Owns the executor, the shared providers, the audio hub and every session."""

    def __init__(
        self,
        config: DeploymentConfig,
        providers: Providers,
        executor: Executor,
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        #: Where ``reload_config`` looks providers up (default: the installed plugins).
        self.registry = registry
        #: The current profiles; a reload swaps in a new set (new turns see it).
        self.profiles = ProfileBook(build_profiles(config))
        #: The device store (opened by start() when ``store.enabled``).
        self.store: Store | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.providers = providers
        self.executor = executor
        self.metrics = Metrics()
        #: Log lines an outsider can trigger at will, per "kind:peer" (the rest counted).
        self.log_limiter = LogLimiter(on_suppressed=self.metrics.count_suppressed_log)
        self.lag_monitor = LoopLagMonitor(slow_callback=0.05)
        s = config.server
        self.auth = Authenticator(
            secret=s.auth.secret,
            ttl=s.auth.token_ttl,
            enabled=s.auth_enabled,
            tokens=s.auth.tokens,
            allowed_devices=s.auth.allowed_devices,
        )
        self.hub = AudioHub(executor, self.providers.vad, config.session.vad_tick_ms)
        self.sessions: dict[str, Session] = {}
        #: Built by start(): what every session gets from this server.
        self.session_host: SessionHost | None = None
        #: Identity read in the handshake, until the connection's handler takes it.
        self._identities: weakref.WeakKeyDictionary[ServerConnection, Identity] = (
            weakref.WeakKeyDictionary()
        )
        #: Connections that have not said hello yet (oldest first) and, per address, how
        #: many of those and how many connections in all: admission keeps them apart
        #: from the session slots (issue 9).
        self._pending: collections.OrderedDict[str, tuple[ServerConnection, str]] = (
            collections.OrderedDict()
        )
        self._pending_per_peer: collections.Counter[str] = collections.Counter()
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._evictions: set[asyncio.Task[None]] = set()
        self._ws_server: Server | None = None
        self._http: HttpPort | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self.host = s.host
        self.port = s.port
        self.http_port = s.http_port
        self._owns_executor = False
        #: Admission control of sessions; a worker of a supervised server shares it.
        self.admission: Admission = LocalAdmission(s.limits.max_sessions)
        #: Extra headers on every WebSocket handshake response (a worker names itself).
        self.response_headers: dict[str, str] = {}
        #: Set by :meth:`drain`: no new sessions; /health says "draining".
        self.draining = False
        #: The MQTT + UDP transport (``server.mqtt.enabled``), started by start().
        self.mqtt: MqttGateway | None = None
        self.firmware = FirmwareStore(config.ota.firmware_dir) if config.ota.firmware_dir else None
        self.ota_timezone = config.ota.timezone
        #: ``ota.activation``: devices must be confirmed by the operator first.
        self.activation = ActivationStore(devices_path(config)) if config.ota.activation else None
        #: Upload tokens of MCP vision (one per session, revoked when it ends).
        self.vision_tokens = VisionTokens(ttl=s.vision.token_ttl)
        #: The host each device last reached the OTA endpoint at (explain URLs on 0.0.0.0).
        self.ota_hosts: dict[str, str] = {}
        #: Gives memory freed after a burst back to the system (glibc; see memtrim.py).
        self.heap_trimmer = HeapTrimmer(self._load)

    @classmethod
    async def create(
        cls, config: DeploymentConfig, registry: Registry | None = None
    ) -> XiaozhiServer:
        """Build the executor and every selected provider, then the server."""
        build_profiles(config)  # refuse a bad profile before loading any model
        executor = Executor(config.executor)
        providers = await build_providers(config, executor)
        server = cls(config, providers, executor, registry)
        server._owns_executor = True
        return server

    def _load(self) -> int:
        """Open connections: sessions, handshakes waiting for hello, HTTP."""
        http = self._http.open if self._http is not None else 0
        return len(self.sessions) + len(self._pending) + http

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
    async def start(
        self,
        host: str | None = None,
        port: int | None = None,
        http_port: int | None = None,
        *,
        reuse_port: bool = False,
    ) -> None:
        """Listen. ``reuse_port``: SO_REUSEPORT on both ports, so several worker
        processes share them (the kernel spreads connections over the workers)."""
        self.host = host or self.host
        port = self.port if port is None else port
        http_port = self.http_port if http_port is None else http_port
        self.lag_monitor.start()
        self._stats_task = asyncio.get_running_loop().create_task(
            self.metrics.window.run(lambda: stats_probe(self)), name="xiaozhi-stats"
        )
        self.hub.start()
        self.heap_trimmer.start()
        await self._open_store()
        self.session_host = await self.make_session_host()
        limits = self.config.server.limits
        try:
            self._ws_server = await serve(
                self._handle,
                self.host,
                port,
                create_connection=AudioConnection,
                process_request=self._process_request,
                max_size=limits.max_frame_bytes,
                compression=None,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                server_header="xiaozhi-core",
                process_response=self._process_response if self.response_headers else None,
                reuse_port=reuse_port or None,
            )
        except OSError as exc:
            raise listen_error("WebSocket", self.host, port, "--port", "server.port", exc) from None
        # (websockets 15, which amqtt pins, types .sockets as an Iterable)
        self.port = next(iter(self._ws_server.sockets)).getsockname()[1]
        self._http = HttpPort(self, self.config.server.http, admin=self)
        try:
            self.http_port = await self._http.start(self.host, http_port, reuse_port=reuse_port)
        except OSError as exc:
            raise listen_error(
                "HTTP (OTA)", self.host, http_port, "--http-port", "server.http_port", exc
            ) from None
        if self.config.server.mqtt.enabled:
            if reuse_port:
                raise RuntimeError(
                    "server.mqtt does not work with several workers: a "
                    "device's MQTT session and its UDP datagrams must reach "
                    "the same process; use server.workers: 1"
                )
            await self._start_mqtt()
        log.info(
            "listening: WebSocket %s  OTA %s (auth %s)",
            self.ws_url,
            self.ota_url,
            "on" if self.auth.enabled else "off",
        )

    async def _start_mqtt(self, port: int | None = None, udp_port: int | None = None) -> None:
        """Start the embedded broker and the UDP port (``server.mqtt``)."""
        try:
            from .mqtt.credentials import MqttSigner
            from .mqtt.gateway import MqttGateway
        except ImportError as exc:
            raise RuntimeError(
                f"server.mqtt.enabled needs the MQTT extra ({exc.name} is "
                "missing): pip install 'xiaozhi-core[mqtt]'"
            ) from None
        m = self.config.server.mqtt
        self.mqtt = MqttGateway(
            MqttSigner(self.auth.secret, ttl=self.auth.ttl),
            self._serve_transport,
            host=m.host or self.host,
            port=m.port if port is None else port,
            udp_port=m.udp_port if udp_port is None else udp_port,
            public_host=m.public_host,
            verify=self.auth.enabled,
            allowed_devices=self.auth.allowed if self.auth.enabled else set(),
            activated=self.activation.is_activated if self.activation is not None else None,
            keepalive=m.keepalive,
            max_connections=m.max_connections,
            on_drop=self.metrics.frame_error,
        )
        await self.mqtt.start()

    async def drain(self, seconds: float) -> None:
        """Graceful drain: stop accepting devices, let running turns finish for up to
        ``seconds``, closing each session (code 1012, "service restart": the device
        reconnects, to another worker or host) as soon as it has no turn running; then
        close whatever is left. The HTTP side stays up until :meth:`stop` and reports
        ``"status": "draining"``.
        """
        self.draining = True
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        closing: dict[str, asyncio.Task[None]] = {}

        def close(session: Session, reason: str) -> None:
            if session.session_id not in closing:
                closing[session.session_id] = loop.create_task(
                    session.transport.close(1012, reason), name=f"drain:{session.session_id[:8]}"
                )

        n = len(self.sessions)
        log.info("draining: %d sessions, up to %g s for running turns", n, seconds)
        while True:
            for session in list(self.sessions.values()):
                task = session.turn_task
                if task is None or task.done():
                    close(session, "server draining")
            if not self.sessions or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for session in list(self.sessions.values()):
            close(session, "server draining (deadline)")
        if closing:
            await asyncio.wait(closing.values(), timeout=5)
        log.info("drained %d sessions", n)

    async def _open_store(self) -> None:
        """Open the device store (``store.enabled``; SQLAlchemy is imported only here),
        export its counters, and share enrolled voices through it."""
        settings = self.config.store
        if not settings.enabled or self.store is not None:
            return
        from ..store import Store, StoreCollector

        self.store = Store(settings)
        await self.store.open()
        self.metrics.registry.register(StoreCollector(self.store.stats))
        if self.providers.voiceprint is not None:
            shared = SharedVoiceprint(self.providers.voiceprint, self.store)
            await shared.resolve_model()
            self.providers = dataclasses.replace(self.providers, voiceprint=shared)
        log.info("store: %s", self.store.location)

    async def stop(self) -> None:
        if self.mqtt is not None:
            await self.mqtt.stop()
            self.mqtt = None
        if self._ws_server is not None:
            self._ws_server.close()
            for session in list(self.sessions.values()):
                await session.close_tasks()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws_server.wait_closed(), 5)
            self._ws_server = None
        if self._http is not None:
            await self._http.stop()
            self._http = None
        await self.hub.stop()
        if self._stats_task is not None:
            self._stats_task.cancel()
            self._stats_task = None
        self.lag_monitor.stop()
        self.heap_trimmer.stop()
        if self._background:  # memory consolidation of the last sessions (bounded)
            await asyncio.wait(list(self._background), timeout=self.config.server.timeouts.provider)
            for task in list(self._background):
                task.cancel()
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self._owns_executor:
            await close_providers(self.providers)
            self.executor.shutdown(wait=False)

    async def serve_forever(self) -> None:
        assert self._ws_server is not None
        await self._ws_server.serve_forever()

    async def make_session_host(self) -> SessionHost:
        """Read what the providers declare, synthesise the apology once, and freeze it
        all into the :class:`SessionHost` every session gets."""
        cfg = self.config.session
        tts_rate = await self.providers.tts.remote_attr("sample_rate")
        if not isinstance(tts_rate, int):
            raise TypeError(
                f"TTS provider {self.providers.tts.name!r}: sample_rate must be "
                f"an int, got {tts_rate!r}"
            )
        try:
            declared = await self.providers.vad.remote_attr("segmentation")
        except AttributeError:
            declared = None
        defaults = declared if isinstance(declared, SegmentationDefaults) else None
        output = OutputFormat(cfg.output_sample_rate, cfg.output_frame_ms, tts_rate)
        apologies = await self._apologies(output)
        home = self.profiles.current.default.asr_language
        return SessionHost(
            session=cfg,
            timeouts=self.config.server.timeouts,
            limits=self.config.server.limits,
            providers=self.providers,
            executor=self.executor,
            hub=self.hub,
            metrics=self.metrics,
            segmentation=segmentation_params(cfg, defaults),
            output=output,
            apology_frames=apologies.get(home) if home else await self._prepare_apology(output),
            apology_by_language=apologies,
            vision_grant=self.vision_grant,
            profiles=self.profiles,
            store=self.store,
        )

    def vision_grant(self, session_id: str, device_id: str) -> dict[str, str]:
        """MCP ``capabilities.vision`` for a new session: the explain URL and a fresh
        token when a vision provider is selected, else empty strings (harmless)."""
        if self.providers.vision is None:
            return {"url": "", "token": ""}
        return {
            "url": self.explain_url_for(device_id),
            "token": self.vision_tokens.issue(session_id, device_id),
        }

    def explain_url_for(self, device_id: str) -> str:
        """Where ``device_id`` uploads photos: ``server.vision.public_url``, else this
        server's HTTP port at the host the device used for OTA (or the listening host)."""
        settings = self.config.server
        if settings.vision.public_url:
            return settings.vision.public_url
        host = self.host if self.host not in ("0.0.0.0", "::", "") else None
        host = (
            host
            or self.ota_hosts.get(device_id)
            or settings.mqtt.public_host
            or urlsplit(settings.public_ws_url).hostname
            or "127.0.0.1"
        )
        return f"http://{host}:{self.http_port}{EXPLAIN_PATH}"

    async def _apologies(self, output: OutputFormat) -> dict[str, tuple[bytes, ...]]:
        """The apology of every language a profile answers in (its own, or with
        ``language: auto`` every known one), each in that language's voice."""
        book = self.profiles.current
        languages: set[str] = set()
        for profile in [book.default, *book.profiles.values()]:
            if profile.language == AUTO:
                languages |= set(profile.speech)
            elif profile.language is not None:
                languages.add(profile.language)
        out: dict[str, tuple[bytes, ...]] = {}
        for language in sorted(languages):
            frames = await self._prepare_apology(output, language)
            if frames is not None:
                out[language] = frames
        return out

    async def _prepare_apology(
        self, output: OutputFormat, language: str | None = None
    ) -> tuple[bytes, ...] | None:
        """Synthesise the apology (of ``language``; None: the default profile's own)
        once, so a failing turn can still say sorry."""
        default = self.profiles.current.default
        text = default.apology_for(language)
        voice = default.voice_for(language)
        if not text:
            return None
        try:
            resampler = Resampler(output.tts_sample_rate, output.sample_rate)
            encoder = OpusEncoder(output.sample_rate, output.frame_ms)
            frames: list[bytes] = []
            async with asyncio.timeout(self.config.server.timeouts.provider):
                tts = self.providers.tts
                stream = tts.synthesize(text, voice=voice) if voice else tts.synthesize(text)
                async for chunk in stream:
                    frames += encoder.encode(
                        resampler.process(np.frombuffer(chunk, np.int16)).tobytes()
                    )
            frames += encoder.encode(resampler.flush().tobytes()) + encoder.flush()
            return tuple(frames)
        except Exception as exc:
            log.warning(
                "could not pre-synthesise the apology (%s); failed turns will only show an alert",
                exc,
            )
            return None

    # ------------------------------------------------------------------ connections
    def _refuse(
        self, connection: ServerConnection, status: HTTPStatus, reason: str, outcome: str
    ) -> Response:
        self.metrics.connections.labels(outcome).inc()
        peer = connection.remote_address[0] if connection.remote_address else "?"
        if self.log_limiter.allow(f"refused:{peer}"):
            log.warning("refused connection from %s: %s", connection.remote_address, reason)
        return connection.respond(status, reason + "\n")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            path = urlsplit(request.path).path
        except ValueError as exc:
            return self._refuse(
                connection,
                HTTPStatus.BAD_REQUEST,
                f"malformed request path: {exc}",
                "refused_bad_request",
            )
        if path.rstrip("/") != WS_PATH.rstrip("/"):
            return self._refuse(
                connection,
                HTTPStatus.NOT_FOUND,
                f"unknown path {clip(path)}; devices connect to {WS_PATH}",
                "not_found",
            )
        limits = self.config.server.limits
        if self.draining:
            return self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "server draining; try again",
                "refused_draining",
            )
        if self.admission.full():
            return self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"server full ({limits.max_sessions} sessions)",
                "refused_full",
            )
        peer = connection.remote_address[0] if connection.remote_address else "?"
        if self._pending_per_peer[peer] >= limits.max_pending_per_peer:
            return self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"{limits.max_pending_per_peer} connections from {peer} are "
                "still waiting for their hello",
                "refused_peer",
            )
        if self._per_peer[peer] >= limits.max_connections_per_peer:
            return self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many connections from {peer} ({limits.max_connections_per_peer})",
                "refused_peer",
            )
        lag_ms = self.lag_monitor.sustained_lag() * 1000
        if limits.max_loop_lag_ms and lag_ms > limits.max_loop_lag_ms:
            return self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"server overloaded (event loop {lag_ms:.0f} ms late)",
                "refused_overload",
            )
        try:
            ident = identity_from_request(request.path, request.headers)
            self.auth.check(ident)
        except BadRequest as exc:
            return self._refuse(
                connection, HTTPStatus.BAD_REQUEST, f"bad request: {exc}", "refused_bad_request"
            )
        except AuthError as exc:
            return self._refuse(
                connection, HTTPStatus.UNAUTHORIZED, f"unauthorized: {exc}", "refused_auth"
            )
        if self.activation is not None and not self.activation.is_activated(ident.device_id):
            return self._refuse(
                connection,
                HTTPStatus.FORBIDDEN,
                f"device {ident.device_id or '(no Device-Id)'} is not "
                "activated; it gets a code from OTA",
                "refused_auth",
            )
        self._identities[connection] = ident
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        ident = self._identities.pop(ws, None)
        if ident is None or self.session_host is None:
            await ws.close(1008, "no identity")
            return
        if self.admission.full():
            self.metrics.connections.labels("refused_full").inc()
            await ws.close(1013, "server full")
            return
        await self._serve_session(ws, ident)

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        for name, value in self.response_headers.items():
            response.headers[name] = value

    async def _serve_session(self, ws: ServerConnection, ident: Identity) -> None:
        remote = ws.remote_address
        peer = remote[0] if remote else "?"
        device = Peer(
            ident.device_id or f"anonymous-{remote[0] if remote else '?'}",
            ident.client_id,
            f"{remote[0]}:{remote[1]}" if remote else "",
            ident.protocol_version,
        )
        limits = self.config.server.limits
        transport = WebSocketTransport(ws, device, self.metrics, send_stall_s=limits.send_stall_s)
        # a session slot (admission, max_sessions) is taken at the hello: connections
        # that never say it only use the pending-handshake budget (and per address)
        slot = [False]
        self._per_peer[peer] += 1
        try:
            await self._run_session(
                transport, on_created=lambda session: self._pending_start(session, ws, peer, slot)
            )
        finally:
            if slot[0]:
                self.admission.release()
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]
        log.info("WebSocket of %s: %s", device.device_id, describe_close(ws))

    def _pending_start(
        self, session: Session, ws: ServerConnection, peer: str, slot: list[bool]
    ) -> None:
        sid = session.session_id
        self._pending[sid] = (ws, peer)
        self._pending_per_peer[peer] += 1
        session.on_hello = lambda: self._admit(sid, slot)
        if len(self._pending) > self.config.server.limits.max_pending_handshakes:
            self._evict_oldest_pending()

    async def _serve_transport(self, transport: Transport) -> None:
        """A session on a transport other than WebSocket (MQTT + UDP: one per hello),
        with the admission checks WebSocket connections get in their handshake."""
        limits = self.config.server.limits
        lag_ms = self.lag_monitor.sustained_lag() * 1000
        if self.draining:
            reason, outcome = "server draining; try again", "refused_draining"
        elif self.session_host is None or not self.admission.acquire():
            reason, outcome = f"server full ({limits.max_sessions} sessions)", "refused_full"
        elif limits.max_loop_lag_ms and lag_ms > limits.max_loop_lag_ms:
            self.admission.release()
            reason = f"server overloaded (event loop {lag_ms:.0f} ms late)"
            outcome = "refused_overload"
        else:
            try:
                await self._run_session(transport)
            finally:
                self.admission.release()
            return
        self.metrics.connections.labels(outcome).inc()
        log.warning(
            "refused %s session of %s: %s", transport.kind, transport.peer.device_id, reason
        )
        await transport.close(1013, reason)

    async def _run_session(
        self, transport: Transport, on_created: Callable[[Session], None] | None = None
    ) -> None:
        assert self.session_host is not None
        session = Session(self.session_host, transport)
        self.sessions[session.session_id] = session
        if on_created is not None:
            on_created(session)
        self.metrics.connections.labels("accepted").inc()
        self.metrics.sessions_active.set(len(self.sessions))
        log.info(
            "session %s: device %s connected from %s (%s)",
            session.session_id,
            transport.peer.device_id,
            transport.peer.remote,
            transport.kind,
        )
        try:
            await session.run()
        except Exception:
            log.exception("session %s crashed", session.session_id)
        finally:
            await session.close_tasks()
            self._said_hello(session.session_id)  # no longer pending, whatever happened
            self.vision_tokens.revoke(session.session_id)
            self.sessions.pop(session.session_id, None)
            self.metrics.sessions_active.set(len(self.sessions))
            log.info("session %s closed", session.session_id)
            if session.hello is not None:
                self._session_over(session, session.close_reason or "closed")

    def _session_over(self, session: Session, reason: str) -> None:
        """Record the end of a session and let the memory provider condense it (in the
        background: a failure there is logged and touches no session)."""
        store, memory = self.store, self.providers.memory
        if store is None:
            return
        store.session_ended(session.session_id, reason=reason)
        if (
            memory is None
            or not MemoryCapabilities.of(memory.spec).consolidate
            or not session.turn_seq
        ):
            return
        view = StoreDeviceMemory(
            store,
            self.providers.llm,
            session.device.device_id,
            session.session_id,
            self.config.server.timeouts.provider,
        )
        task = asyncio.get_running_loop().create_task(
            self._consolidate(view), name=f"consolidate-{session.session_id[:8]}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _consolidate(self, view: StoreDeviceMemory) -> None:
        memory = self.providers.memory
        if memory is not None:
            await consolidate(memory, view, self.executor)

    # ------------------------------------------------------------------ devices, profiles
    def device_seen(self, device_id: str, info: DeviceInfo) -> None:
        """An OTA check-in: record the device with its board and firmware."""
        if self.store is not None and device_id:
            self.store.device_seen(device_id, **info._asdict())

    def profile_names(self) -> list[str]:
        """The profiles a device can be mapped to under the current config."""
        return self.profiles.current.names()

    async def set_device_profile(self, device_id: str, name: str | None) -> None:
        """Map ``device_id`` to profile ``name`` (None: the default) in the store, and
        apply it to the device's open sessions from their next turn. Raises
        :class:`ConfigError` for a profile the current config does not define and
        :class:`StoreError` when there is no store or it cannot be written."""
        device_id = device_id.strip().lower()
        if not device_id:
            raise ConfigError("device id is empty")
        if name is not None and name not in self.profiles.current.profiles:
            raise ConfigError(
                f"unknown profile {name!r}; defined: {', '.join(self.profile_names()) or '(none)'}"
            )
        if self.store is None:
            raise StoreError("no device store (store.enabled is false)")
        await self.store.set_profile(device_id, name, create=True)
        for session in list(self.sessions.values()):
            if session.device.device_id.lower() == device_id:
                session.set_stored_profile(name)
        log.info("device %s mapped to profile %s", device_id, name or "(default)")

    def reload_config(self) -> list[str]:
        """Reload the config (see :meth:`reload_local`); a worker of a supervised server
        has every worker reload too."""
        return self.reload_local()

    def reload_local(self) -> list[str]:
        """Re-read the config files, validate them exactly like ``xiaozhi config check``
        and apply what can change at run time to new turns: ``profiles:``, ``devices:``
        and the ``session:`` keys of the default profile (system prompt, greeting,
        goodbye, voice, server tools, default profile). Returns one line per change,
        saying which changed keys only a restart applies. Raises :class:`ConfigError`
        (file, key path, what is allowed) and changes nothing when the files are
        invalid."""
        from ..config import load_config

        files = [f for f in self.config.files if not f.startswith("<")]
        if not files:
            raise ConfigError("this server was not started from config files; nothing to reload")
        if self.registry is None:
            from ..registry import default_registry

            self.registry = default_registry()
        new = load_config(files, self.registry, auto_local=False)
        profiles = build_profiles(new)  # may raise: nothing applied yet
        old_flat = _flat(
            {k: v for k, v in self.config.raw.items() if k not in ("profiles", "devices")}, "", {}
        )
        new_flat = _flat(
            {k: v for k, v in new.raw.items() if k not in ("profiles", "devices")}, "", {}
        )
        changed = sorted(
            k for k in set(old_flat) | set(new_flat) if old_flat.get(k) != new_flat.get(k)
        )
        restart = [
            k
            for k in changed
            if not any(
                k == f"session.{r}" or k.startswith(f"session.{r}.") for r in _RELOADABLE_SESSION
            )
        ]
        self.profiles.swap(profiles)
        session_raw = {
            k: v
            for k, v in (self.config.raw.get("session") or {}).items()
            if k not in _RELOADABLE_SESSION
        }
        session_raw.update(
            {k: v for k, v in (new.raw.get("session") or {}).items() if k in _RELOADABLE_SESSION}
        )
        self.config = dataclasses.replace(
            self.config,
            raw={
                **self.config.raw,
                "profiles": new.raw.get("profiles"),
                "devices": new.raw.get("devices"),
                "session": session_raw,
            },
            profiles=new.profiles,
            devices=new.devices,
            request_options=new.request_options,
        )
        lines = [
            f"reloaded {' + '.join(files)}: {len(profiles.profiles)} profile(s), "
            f"default {profiles.default.name!r}, {len(profiles.devices)} device "
            "mapping(s); new turns use them"
        ]
        if restart:
            lines.append(f"changed but applied only by a restart: {', '.join(restart)}")
        for line in lines:
            log.warning("%s", line)
        return lines

    @property
    def settings(self) -> ServerSettings:
        return self.config.server

    @property
    def active_sessions(self) -> int:
        """Sessions of devices that said hello (what ``max_sessions`` bounds)."""
        return len(self.sessions) - len(self._pending)

    def _admit(self, sid: str, slot: list[bool]) -> bool:
        """A device said hello: out of the pending budget, into a session slot; False
        when every slot is taken by sessions that did say hello (the session then closes
        1013 without answering the hello). Taken before the server's hello goes out, so
        a device that has its answer holds its slot."""
        self._said_hello(sid)
        if self.admission.acquire():
            slot[0] = True
            return True
        self.metrics.connections.labels("refused_full").inc()
        return False

    def _said_hello(self, sid: str) -> None:
        entry = self._pending.pop(sid, None)
        if entry is not None:
            peer = entry[1]
            self._pending_per_peer[peer] -= 1
            if self._pending_per_peer[peer] <= 0:
                del self._pending_per_peer[peer]

    def _evict_oldest_pending(self) -> None:
        """The handshake budget is full: close the connection that has waited longest
        for its hello, so silent connections cannot keep speaking devices out."""
        sid, (ws, _peer) = next(iter(self._pending.items()))
        self._said_hello(sid)
        self.metrics.connections.labels("evicted_pending").inc()
        if self.log_limiter.allow("evicted:"):
            log.warning(
                "too many connections waiting for their hello; closing the oldest (%s)",
                ws.remote_address,
            )
        task = asyncio.get_running_loop().create_task(
            ws.close(1013, "too many connections waiting for their hello")
        )
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)

    def health(self) -> dict[str, object]:
        """``GET /health``: sessions, loop lag, the selected providers (and the MQTT
        gateway's counters when it runs)."""
        out: dict[str, object] = {
            "status": "draining" if self.draining else "ok",
            "sessions": len(self.sessions),
            "loop_lag_ms": self.lag_monitor.stats()["p99_ms"],
            "providers": {role.value: b.name for role, b in self.providers.items()},
            "store": self.store.location if self.store is not None else None,
        }
        if self.mqtt is not None:
            out["mqtt"] = self.mqtt.health()
        return out

    async def health_report(self) -> dict[str, object]:
        """``GET /health``; a worker of a supervised server covers every worker."""
        return self.health()

    async def metrics_report(self) -> bytes:
        """``GET /metrics``; a worker of a supervised server merges every worker's."""
        return self.render_metrics()

    async def admin_report(self, what: str) -> dict[str, object]:
        """The operator API's ``sessions`` / ``stats`` (a worker: for every worker)."""
        return local_report(self, what)

    def render_metrics(self) -> bytes:
        hub = self.hub
        return self.metrics.render(
            self.lag_monitor.stats(),
            self.executor.stats(),
            {
                "batches": hub.batches,
                "calls": hub.vad_calls,
                "windows": hub.windows_total,
                "windows_dtx_skipped": hub.windows_dtx,
                "requests_at_once": hub.requests_now,
                "last_batch_streams": hub.last_batch_streams,
                "busy_seconds": hub.busy_seconds,
            },
        )
