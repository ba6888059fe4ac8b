"""The operator's JSON API (``/api/v1/``) and the console that reads it (``/console/``).

Every ``/api/v1/`` request but the OpenAPI document needs ``Authorization: Bearer
<server.admin.token>`` (compared in constant time). Without a configured token the API
refuses everyone, loopback included, unless ``server.admin.open`` lets loopback clients
in without one. Refusals are ``401`` with a JSON ``{"error": ...}`` body, like every
other API error. The routes, their parameters and bodies are in docs/api.md and in the
OpenAPI document (:mod:`xiaozhi_core.gateway.openapi`).

The console is three static files shipped in the package (``gateway/console/``): no
build step, no third-party code; it keeps the token in the tab's ``sessionStorage``.

Example (the token check):
    >>> from xiaozhi_core.config import AdminSettings
    >>> s = AdminSettings(token="t" * 24)
    >>> check_admin(s, "Bearer " + "t" * 24, "10.0.0.7") is None
    True
    >>> check_admin(s, None, "127.0.0.1")
    'missing Authorization: Bearer <admin token>'
    >>> check_admin(AdminSettings(), "Bearer x", "127.0.0.1")
    'the admin API is off: no server.admin.token is configured'
    >>> check_admin(AdminSettings(open=True), None, "127.0.0.1") is None
    True
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ..config import AdminSettings, DeploymentConfig
from ..errors import ConfigError
from ..looplag import LoopLagMonitor
from ..session.status import session_status
from ..store.errors import StoreError
from .metrics import Metrics
from .openapi import openapi_document
from .stats import merge_rings, merge_samples

if TYPE_CHECKING:
    from ..session.session import Session
    from ..store.facade import Store

__all__ = [
    "API_PREFIX",
    "REPORTS",
    "AdminHost",
    "add_admin_routes",
    "check_admin",
    "local_report",
    "merge_reports",
    "stats_probe",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: Most turns one page of ``/devices/{id}/turns`` returns.
MAX_PAGE = 200
_NO_STORE = {"Cache-Control": "no-store"}
_CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_CONSOLE_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}


class AdminHost(Protocol):
    """What the API reads from the server (:class:`~xiaozhi_core.gateway.server.XiaozhiServer`).

    Optional, used when present: ``store`` (a :class:`~xiaozhi_core.store.Store` or
    None), ``reload_config() -> list[str]`` (what changed; raises ConfigError and
    changes nothing when the files are invalid) and
    ``set_device_profile(device_id, name)``, either of them sync or async.
    """

    @property
    def config(self) -> DeploymentConfig:
        """The running configuration (``server.admin`` is read on every request)."""
        ...

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Live sessions by id."""
        ...

    @property
    def metrics(self) -> Metrics:
        """The metrics sink, with the stats ring (``metrics.window``)."""
        ...

    @property
    def lag_monitor(self) -> LoopLagMonitor:
        """The event loop's lag monitor."""
        ...

    async def admin_report(self, what: str) -> dict[str, Any]:
        """``sessions`` or ``stats`` for the whole server: :func:`local_report` in one
        process; with ``--workers``, every worker's, gathered and merged."""
        ...


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def check_admin(
    settings: AdminSettings, authorization: str | None, remote: str | None
) -> str | None:
    """None when the request may use the API, else why not (one line)."""
    if settings.open and _is_loopback(remote):
        return None
    if not settings.token:
        return "the admin API is off: no server.admin.token is configured"
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "missing Authorization: Bearer <admin token>"
    if not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
        return "wrong admin token"
    return None


def stats_probe(host: AdminHost) -> tuple[int, Sequence[float]]:
    """(live sessions, the loop-lag ticks of about the last stats interval) for
    :meth:`~xiaozhi_core.gateway.stats.StatsRing.run`."""
    monitor = host.lag_monitor
    ticks = max(1, int(host.metrics.window.interval / monitor.interval))
    lags = list(monitor.lags)
    return len(host.sessions), lags[-ticks:]


#: What :func:`local_report` answers.
REPORTS = ("sessions", "stats")


def local_report(host: AdminHost, what: str) -> dict[str, Any]:
    """This process's live sessions (``{"sessions": [...]}``) or stats ring
    (``{"interval_s", "span_s", "samples", "current"}``)."""
    if what == "sessions":
        now = time.monotonic()
        rows = [session_status(s, now) for s in list(host.sessions.values())]
        return {"sessions": rows}
    if what == "stats":
        window = host.metrics.window
        sessions, lags = stats_probe(host)
        return {
            "interval_s": window.interval,
            "span_s": window.span,
            "samples": window.samples(),
            "current": window.current(time.time(), sessions, lags),
        }
    raise ValueError(f"unknown report {what!r}; reports: {', '.join(REPORTS)}")


def merge_reports(
    what: str, answers: Sequence[tuple[int, dict[str, Any] | None]]
) -> dict[str, Any]:
    """Several workers' :func:`local_report` answers as one (``None``: a worker that did
    not answer, listed in ``workers_missing``). Sessions get their ``worker``."""
    got = [(i, a) for i, a in answers if a is not None]
    missing = [i for i, a in answers if a is None]
    if what == "sessions":
        rows = [{**row, "worker": i} for i, a in got for row in a["sessions"]]
        return {"sessions": rows, "workers_missing": missing}
    first = got[0][1] if got else {"interval_s": 10.0, "span_s": 3600.0}
    return {
        "interval_s": first["interval_s"],
        "span_s": first["span_s"],
        "samples": merge_rings([a["samples"] for _, a in got]),
        "current": merge_samples([a["current"] for _, a in got], at=time.time()) if got else None,
        "workers_missing": missing,
    }


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> web.Response:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="xiaozhi-admin"'
    return web.json_response({"error": message}, status=status, headers=headers)


def _ok(body: object, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=_NO_STORE)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _int_param(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(
            400, f"query parameter {name} must be an integer, got {raw[:40]!r}"
        ) from None
    if not low <= value <= high:
        raise _ApiError(400, f"query parameter {name} must be {low}..{high}, got {value}")
    return value


class _Api:
    """The handlers; ``host`` is read on every request (a reload may replace its config)."""

    def __init__(self, host: AdminHost) -> None:
        self.host = host
        self._refused = 0
        self._refusal_logged = 0.0

    # ------------------------------------------------------------------ plumbing
    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/") and request.path != API_PREFIX:
            return await handler(request)
        if request.path != f"{API_PREFIX}/openapi.json":
            refusal = check_admin(
                self.host.config.server.admin, request.headers.get("Authorization"), request.remote
            )
            if refusal is not None:
                self._log_refusal(request, refusal)
                return _error(401, refusal)
        try:
            return await handler(request)
        except _ApiError as exc:
            return _error(exc.status, exc.message)
        except StoreError as exc:
            return _error(503, str(exc))
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise

    def _log_refusal(self, request: web.Request, why: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= 60:
            log.warning(
                "admin API refused %s %s from %s: %s (%d refusals since the last message)",
                request.method,
                request.path,
                request.remote,
                why,
                self._refused,
            )
            self._refusal_logged, self._refused = now, 0

    def _store(self) -> Store:
        store: Store | None = getattr(self.host, "store", None)
        if store is None:
            raise _ApiError(503, "no device store in this server (store.enabled is false)")
        return store

    async def _online(self) -> dict[str, list[str]]:
        """Device id → its live session ids (on every worker)."""
        out: dict[str, list[str]] = {}
        for row in (await self.host.admin_report("sessions"))["sessions"]:
            out.setdefault(row["device_id"], []).append(row["session_id"])
        return out

    def _profiles(self) -> list[str] | None:
        """The profile names the server knows (None: it does not say)."""
        names = getattr(self.host, "profile_names", None)
        if names is not None:
            return [str(n) for n in names()]
        profiles = getattr(self.host.config, "profiles", None)
        if isinstance(profiles, Mapping):
            return sorted(str(k) for k in profiles)
        if isinstance(profiles, Sequence) and not isinstance(profiles, str):
            names = [getattr(p, "name", p) for p in profiles]
            return sorted(str(n) for n in names)
        return None

    # ------------------------------------------------------------------ handlers
    async def sessions(self, request: web.Request) -> web.Response:
        report = await self.host.admin_report("sessions")
        rows = report["sessions"]
        rows.sort(key=lambda r: r["connected_at"] or 0.0)
        return _ok({**report, "count": len(rows), "sessions": rows})

    async def devices(self, request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 1000, 1, 10000)
        assert limit is not None
        records = await self._store().list_devices(limit)
        online = await self._online()
        return _ok(
            {
                "count": len(records),
                "devices": [{**r.as_dict(), "online": r.device_id in online} for r in records],
            }
        )

    async def device(self, request: web.Request) -> web.Response:
        device_id = request.match_info["device_id"]
        store = self._store()
        record = await store.get_device(device_id)
        if record is None:
            raise _ApiError(404, f"unknown device {device_id[:64]!r}")
        sessions = await store.device_sessions(device_id, 20)
        return _ok(
            {
                "device": record.as_dict(),
                "online": (await self._online()).get(device_id, []),
                "sessions": [s.as_dict() for s in sessions],
            }
        )

    async def turns(self, request: web.Request) -> web.Response:
        device_id = request.match_info["device_id"]
        limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
        before = _int_param(request, "before", None, 1, 2**62)
        assert limit is not None
        turns = await self._store().device_turns(device_id, limit, before)
        return _ok(
            {
                "turns": [t.as_dict() for t in turns],
                "next_before": turns[-1].id if len(turns) == limit else None,
            }
        )

    async def put_device(self, request: web.Request) -> web.Response:
        device_id = request.match_info["device_id"]
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise _ApiError(400, f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict) or "profile" not in body:
            raise _ApiError(400, 'the body must be a JSON object {"profile": NAME or null}')
        unknown = sorted(set(body) - {"profile"})
        if unknown:
            raise _ApiError(400, f"unknown field {unknown[0][:40]!r}; allowed: profile")
        profile = body["profile"]
        if profile is not None and (not isinstance(profile, str) or not profile.strip()):
            raise _ApiError(400, "profile must be a non-empty string, or null for the default")
        store = self._store()
        if await store.get_device(device_id) is None:
            raise _ApiError(404, f"unknown device {device_id[:64]!r}")
        setter = getattr(self.host, "set_device_profile", None)
        if setter is not None:
            try:
                await _maybe_await(setter(device_id, profile))
            except ConfigError as exc:
                raise _ApiError(400, str(exc)) from None
            except (KeyError, ValueError) as exc:
                message = exc.args[0] if exc.args else str(exc)
                raise _ApiError(400, str(message)) from None
        else:
            known = self._profiles()
            if profile is not None and known is not None and profile not in known:
                raise _ApiError(
                    400,
                    f"unknown profile {profile[:64]!r}; profiles: {', '.join(known) or '(none)'}",
                )
            await store.set_profile(device_id, profile)
        record = await store.get_device(device_id)
        assert record is not None
        log.info("admin API: device %s mapped to profile %s", device_id, profile or "(default)")
        return _ok({"device": record.as_dict()})

    async def profiles(self, request: web.Request) -> web.Response:
        return _ok({"profiles": self._profiles() or []})

    async def reload(self, request: web.Request) -> web.Response:
        reload = getattr(self.host, "reload_config", None)
        if reload is None:
            raise _ApiError(501, "this server cannot reload its configuration")
        try:
            messages = [str(m) for m in await _maybe_await(reload()) or []]
        except ConfigError as exc:
            log.warning("admin API: reload refused: %s", exc)
            return _ok({"applied": False, "errors": [str(exc)], "messages": []}, status=422)
        log.info("admin API: configuration reloaded")
        return _ok({"applied": True, "errors": [], "messages": messages})

    async def stats(self, request: web.Request) -> web.Response:
        return _ok(await self.host.admin_report("stats"))

    async def openapi(self, request: web.Request) -> web.Response:
        return _ok(openapi_document())

    async def not_found(self, request: web.Request) -> web.Response:
        raise _ApiError(404, f"no such API path {request.path[:80]}; see {API_PREFIX}/openapi.json")


def _console_files() -> dict[str, bytes]:
    root = resources.files("xiaozhi_core.gateway").joinpath("console")
    out: dict[str, bytes] = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _CONSOLE_TYPES:
            out[entry.name] = entry.read_bytes()
    return out


def add_admin_routes(app: web.Application, host: AdminHost) -> None:
    """Add the JSON API, its auth middleware and the console to ``app``."""
    api = _Api(host)
    app.middlewares.append(api.middleware)
    r, p = app.router, API_PREFIX
    r.add_get(f"{p}/openapi.json", api.openapi)
    r.add_get(f"{p}/sessions", api.sessions)
    r.add_get(f"{p}/devices", api.devices)
    r.add_get(f"{p}/devices/{{device_id}}", api.device)
    r.add_put(f"{p}/devices/{{device_id}}", api.put_device)
    r.add_get(f"{p}/devices/{{device_id}}/turns", api.turns)
    r.add_get(f"{p}/profiles", api.profiles)
    r.add_post(f"{p}/reload", api.reload)
    r.add_get(f"{p}/stats", api.stats)
    r.add_route("*", f"{p}/{{tail:.*}}", api.not_found)

    files = _console_files()

    async def console(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        body = files.get(name)
        if body is None:
            raise web.HTTPNotFound(text=f"no console file {name[:80]}\n")
        suffix = "." + name.rsplit(".", 1)[-1]
        return web.Response(
            body=body,
            content_type=_CONSOLE_TYPES[suffix],
            charset="utf-8",
            headers=_CONSOLE_HEADERS,
        )

    async def to_console(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    r.add_get("/console", to_console)
    r.add_get("/console/", console)
    r.add_get("/console/{name}", console)
