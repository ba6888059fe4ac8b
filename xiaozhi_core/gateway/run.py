"""Running the server from the command line until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import TextIO

from ..config import DeploymentConfig
from ..errors import XiaozhiError
from ..registry import Registry
from .server import XiaozhiServer

__all__ = [
    "GC_GEN0",
    "drain_until",
    "reload_on_signal",
    "serve",
    "settle_gc",
    "stop_on_signals",
]

log = logging.getLogger(__name__)


#: Allocations (minus deallocations) between two collections of the youngest generation.
GC_GEN0 = 20_000


def settle_gc() -> None:
    """Once the server is up: freeze what start-up allocated (modules, models, config —
    hundreds of thousands of objects that live as long as the process) out of the
    cyclic collector's sight, and collect the youngest generation every ``GC_GEN0``
    allocations instead of every 700.

    Conversing devices allocate short-lived futures, handles and arrays on every frame,
    almost all freed by reference counting; at 700 the collector ran hundreds of times
    a second (2-4 % of the server's CPU at 200 devices in a profile) and every older
    collection walked the whole start-up heap again. Cyclic garbage is still collected.

    >>> import gc
    >>> before = gc.get_threshold()
    >>> settle_gc(); gc.get_threshold()[0] >= GC_GEN0
    True
    >>> gc.unfreeze(); gc.set_threshold(*before)
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_GEN0), gen1, gen2)


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
        settle_gc()
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
