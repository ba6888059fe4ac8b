"""``xiaozhi serve``: run the server on a deployment config (``--check``: build only)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from ..command import Command

if TYPE_CHECKING:
    from ..config import DeploymentConfig
    from ..registry import Registry

__all__ = ["commands", "port"]


def port(text: str) -> int:
    """argparse type of a TCP port.

    >>> port("8000")
    8000
    >>> port("70000")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: port 70000 is not in 0..65535
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", required=True, metavar="FILE",
                   help="YAML config file; repeat to deep-merge several (later files win)")
    p.add_argument("--host", help="listen address (overrides server.host)")
    p.add_argument("--port", type=port, help="WebSocket port (overrides server.port)")
    p.add_argument("--no-local", action="store_true",
                   help="do not merge the local.yaml beside the first file")
    p.add_argument("--http-port", type=port, help="OTA/health/metrics port "
                   "(overrides server.http_port)")
    p.add_argument("--check", action="store_true",
                   help="build every provider, report, and exit without serving")


async def _build_and_report(config: DeploymentConfig, registry: Registry) -> None:
    from ..app import build_providers, close_providers
    from ..executor import Executor

    executor = Executor(config.executor)
    try:
        providers = await build_providers(config, executor)
        try:
            for role, bound in providers.items():
                origin = registry.lookup(role, bound.name).origin
                print(f"  built {role}: {bound.name} ({bound.execution}, {origin})")
        finally:
            await close_providers(providers)
    finally:
        executor.shutdown(wait=False)


def _serve(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..registry import default_registry

    registry = default_registry()
    config = load_config(args.config, registry, auto_local=not args.no_local)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.http_port is not None:
        config.server.http_port = args.http_port
    print(f"OK: {' + '.join(config.files)}")
    if args.check:
        asyncio.run(_build_and_report(config, registry))
        print("every provider started (--check): exiting")
        return 0
    from ..gateway.run import serve

    asyncio.run(serve(config, registry, sys.stdout))
    return 0


def commands() -> list[Command]:
    """``xiaozhi serve`` (entry point ``xiaozhi_core.commands: serve``)."""
    return [Command(("serve",), "run the server with the given configs", _serve, _serve_args)]
