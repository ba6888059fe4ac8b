"""Running the server from the command line until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TextIO

from ..config import DeploymentConfig
from ..errors import XiaozhiError
from ..registry import Registry
from .server import XiaozhiServer

__all__ = ["drain_until", "reload_on_signal", "serve", "stop_on_signals"]

log = logging.getLogger(__name__)


def reload_on_signal(server: XiaozhiServer) -> None:
    """SIGHUP: reload the config; a broken one is refused (logged) and the running one
    stays."""
    try:
        server.reload_local()
    except XiaozhiError as exc:
        log.error("reload refused, the running config stays: %s", " ".join(str(exc).split()))


def stop_on_signals(server: XiaozhiServer) -> asyncio.Event:
    """An event that SIGINT and SIGTERM set (the caller then drains and stops), with
    SIGHUP reloading ``server``'s config; signals the platform lacks are left alone."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, reload_on_signal, server)
    return stop


async def serve(
    config: DeploymentConfig, registry: Registry, out: TextIO, ready: asyncio.Event | None = None
) -> None:
    """Build the providers, start the gateway, print where devices connect, and run
    until a signal (or until ``ready``'s owner cancels us)."""
    server = await XiaozhiServer.create(config, registry)
    try:
        await server.start()
        print(f"WebSocket URL (give it to devices): {server.ws_url}", file=out)
        print(f"OTA URL (set it in the device firmware): {server.ota_url}", file=out)
        print(
            f"Health: http://{server.ota_url.split('/')[2]}/health   "
            f"Metrics: http://{server.ota_url.split('/')[2]}/metrics",
            file=out,
        )
        print(f"Auth: {'on' if server.auth.enabled else 'off'}", file=out)
        print(f"Store: {server.store.location if server.store is not None else 'off'}", file=out)
        for role, bound in server.providers.items():
            origin: object
            try:
                origin = registry.lookup(role, bound.name).origin
            except Exception:
                origin = "?"
            print(f"  {role}: {bound.name} ({bound.execution}, {origin})", file=out)
        out.flush()
        stop = stop_on_signals(server)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
        await drain_until(server, config.server.drain_timeout)
    finally:
        await server.stop()


async def drain_until(server: XiaozhiServer, seconds: float) -> None:
    """:meth:`XiaozhiServer.drain`, cut short by a second SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    hurry = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, hurry.set)
    drain = loop.create_task(server.drain(seconds))
    waiter = loop.create_task(hurry.wait())
    await asyncio.wait([drain, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not drain.done():
        log.warning("second signal: not waiting for running turns")
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
