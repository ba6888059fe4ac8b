"""``xiaozhi serve``: run the server on a deployment config (``--check``: build only)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from ..command import Command
from ._deployment import add_config_option, load_deployment

if TYPE_CHECKING:
    from ..config import DeploymentConfig
    from ..registry import Registry

__all__ = ["commands", "port", "workers"]


def _int_in(text: str, low: int, high: int, name: str, noun: str) -> int:
    """``text`` as an integer in ``low..high``; else an argparse error saying why.

    >>> _int_in("x", 1, 2, "n", "a number")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'x' is not a number
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{name} {value} is not in {low}..{high}")
    return value


def port(text: str) -> int:
    """argparse type of a TCP port.

    >>> port("8000")
    8000
    >>> port("70000")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: port 70000 is not in 0..65535
    """
    return _int_in(text, 0, 65535, "port", "a port number")


def workers(text: str) -> int | str:
    """argparse type of ``--workers``: 1..256 or ``auto``.

    >>> workers("auto"), workers("2")
    ('auto', 2)
    >>> workers("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: workers 0 is not in 1..256
    """
    if text == "auto":
        return text
    return _int_in(text, 1, 256, "workers", "a number of workers")


def _serve_args(p: argparse.ArgumentParser) -> None:
    add_config_option(p, "YAML config file; repeat to deep-merge several (later files win)")
    p.add_argument("--host", help="listen address (overrides server.host)")
    p.add_argument("--port", type=port, help="WebSocket port (overrides server.port)")
    p.add_argument(
        "--no-local", action="store_true", help="do not merge the local.yaml beside the first file"
    )
    p.add_argument(
        "--http-port", type=port, help="OTA/health/metrics port (overrides server.http_port)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="build every provider, report, and exit without serving",
    )
    p.add_argument(
        "--workers",
        type=workers,
        metavar="N",
        help="worker processes sharing the ports, under a supervisor "
        "(overrides server.workers; 'auto': one per core; 1: this process)",
    )


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
    from ..registry import default_registry

    registry = default_registry()
    config = load_deployment(args.config, registry, auto_local=not args.no_local)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.http_port is not None:
        config.server.http_port = args.http_port
    if args.workers is not None:
        config.server.workers = args.workers
    print(f"OK: {' + '.join(config.files)}")
    if args.check:
        asyncio.run(_build_and_report(config, registry))
        print("every provider started (--check): exiting")
        return 0
    count = config.server.worker_count
    if count > 1:
        from ..gateway.workers import run_workers

        sys.stdout.flush()
        return asyncio.run(
            run_workers(
                config,
                config.files,
                False,
                count,
                sys.stdout,
                logging.getLevelName(logging.getLogger().level),
            )
        )
    from ..gateway.run import serve

    asyncio.run(serve(config, registry, sys.stdout))
    return 0


def commands() -> list[Command]:
    """``xiaozhi serve`` (entry point ``xiaozhi_core.commands: serve``)."""
    return [Command(("serve",), "run the server with the given configs", _serve, _serve_args)]
