"""The ``xiaozhi`` command line (also ``python -m xiaozhi_core``).

Every subcommand is one small function registered in :data:`COMMANDS` with the
:func:`command` decorator; nested commands (``config check``) are paths. Adding one is
a single decorated function::

    @command("voiceprint", "enroll", help="enroll a speaker from a WAV file",
             arguments=lambda p: p.add_argument("wav"))
    def _voiceprint_enroll(args: argparse.Namespace) -> int:
        ...
        return 0

A command returns its exit code. :class:`~xiaozhi_core.errors.XiaozhiError` raised by a
command is printed as one line (no traceback): exit code 2 for config errors, 1 for the
rest.

Example:
    >>> {"config check", "plugins", "serve", "voiceprint enroll"} <= {
    ...     " ".join(path) for path in COMMANDS}
    True
    >>> main(["config", "check", "/nonexistent.yaml"])
    2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from . import __version__
from .errors import ConfigError, XiaozhiError

__all__ = ["COMMANDS", "GROUPS", "Command", "build_parser", "command", "main"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    """A subcommand: its path (``("config", "check")``), help, arguments and function."""

    path: tuple[str, ...]
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], Any] | None = None


#: Every subcommand, by path.
COMMANDS: dict[tuple[str, ...], Command] = {}
#: Help of the intermediate words of nested commands.
GROUPS: dict[tuple[str, ...], str] = {("config",): "inspect deployment configs",
                                      ("voiceprint",): "manage enrolled speakers"}


_Run = Callable[[argparse.Namespace], int]


def command(
    *path: str, help: str, arguments: Callable[[argparse.ArgumentParser], Any] | None = None
) -> Callable[[_Run], _Run]:
    """Register the decorated function as the subcommand ``path`` (``help`` as in argparse)."""

    def register(fn: _Run) -> _Run:
        if path in COMMANDS:
            raise ValueError(f"command {' '.join(path)!r} is registered twice")
        COMMANDS[path] = Command(path, help, fn, arguments)
        return fn

    return register


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every registered command."""
    parser = argparse.ArgumentParser(
        prog="xiaozhi", description="xiaozhi-core: an open server for xiaozhi voice assistants")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="logging verbosity on stderr (default: warning)")
    parser.add_argument("--version", action="version", version=f"xiaozhi-core {__version__}")
    parser.set_defaults(_parser=parser)
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): parser}
    subparsers: dict[tuple[str, ...], Any] = {}

    def node(path: tuple[str, ...], help_text: str) -> argparse.ArgumentParser:
        if path in parsers:
            return parsers[path]
        parent = node(path[:-1], GROUPS.get(path[:-1], ""))
        if path[:-1] not in subparsers:
            subparsers[path[:-1]] = parent.add_subparsers(title="commands", metavar="COMMAND")
        p = subparsers[path[:-1]].add_parser(path[-1], help=help_text, description=help_text)
        p.set_defaults(_parser=p)
        parsers[path] = p
        return p

    for path in sorted(COMMANDS):
        cmd = COMMANDS[path]
        p = node(path, cmd.help)
        if cmd.arguments is not None:
            cmd.arguments(p)
        p.set_defaults(_command=cmd)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(args.log_level.upper())
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        args._parser.print_help(sys.stderr)
        return 2
    try:
        return cmd.run(args)
    except ConfigError as exc:
        print(f"xiaozhi: config error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except XiaozhiError as exc:
        print(f"xiaozhi: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------------------- plugins
def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _plugins_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show each provider's factory, description and options")


@command("plugins", help="list installed providers and plugins that failed to load",
         arguments=_plugins_args)
def _plugins(args: argparse.Namespace) -> int:
    from .options import describe_options
    from .registry import default_registry

    registry = default_registry()
    providers = registry.providers()
    failures = registry.failures
    if args.json:
        doc = {
            "providers": [{
                "role": r.spec.role.value,
                "name": r.spec.name,
                "execution": r.spec.execution.value,
                "capabilities": sorted(r.spec.capabilities),
                "distribution": r.origin.distribution,
                "version": r.origin.version,
                "entry_point": r.origin.entry_point,
                "factory": r.spec.factory_path,
                "description": r.spec.description,
                "options": [{"name": n, "type": t, "default": d}
                            for n, t, d in describe_options(r.spec.options)],
            } for r in providers],
            "failures": [{
                "distribution": f.origin.distribution,
                "version": f.origin.version,
                "entry_point": f.origin.entry_point,
                "error": f.error,
            } for f in failures],
        }
        print(json.dumps(doc, indent=2, default=repr))
        return 0
    out = sys.stdout
    if providers:
        rows = [["ROLE", "NAME", "EXEC", "CAPABILITIES", "DISTRIBUTION", "VERSION"]]
        rows += [[str(r.spec.role), r.spec.name, str(r.spec.execution),
                  ",".join(sorted(r.spec.capabilities)) or "-", r.origin.distribution,
                  r.origin.version or "-"] for r in providers]
        _table(rows, out)
    else:
        print("no providers installed (pip install a xiaozhi-* provider package)", file=out)
    if args.verbose:
        for r in providers:
            print(f"\n{r.spec.role} {r.spec.name}: {r.spec.description or '(no description)'}",
                  file=out)
            print(f"  factory: {r.spec.factory_path}", file=out)
            for name, type_name, default in describe_options(r.spec.options):
                print(f"  option {name}: {type_name} = {default!r}", file=out)
    if failures:
        print(f"\n{len(failures)} plugin(s) failed to load:", file=out)
        _table([["DISTRIBUTION", "VERSION", "ERROR"]] + [
            [f.origin.distribution, f.origin.version or "-", _one_line_text(f.error)]
            for f in failures], out)
    return 0


def _one_line_text(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------- config
def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="YAML files, deep-merged in order (later files win)")
    p.add_argument("--no-local", action="store_true",
                   help="do not merge the local.yaml beside the first file")


def _describe_config(config: Any, registry: Any, out: TextIO) -> None:
    rows = []
    for role, choice in config.choices().items():
        origin = registry.lookup(role, choice.provider).origin
        rows.append([f"  {role}", choice.provider, str(choice.spec.execution),
                     f"{origin.distribution} {origin.version}".strip()])
    _table(rows, out)
    server = config.server
    auth = "on" if server.auth_enabled else "off"
    print(f"  server: ws://{server.host}:{server.port}/xiaozhi/v1/ (auth {auth}), "
          f"http port {server.http_port}", file=out)
    ex = config.executor
    print(f"  executor: {ex.kind} pool, {ex.workers} workers, max_pending {ex.max_pending}",
          file=out)


@command("config", "check", help="load, merge and validate config files",
         arguments=_config_args)
def _config_check(args: argparse.Namespace) -> int:
    from .config import load_config
    from .registry import default_registry

    registry = default_registry()
    config = load_config(args.files, registry, auto_local=not args.no_local)
    print(f"OK: {' + '.join(config.files)}")
    _describe_config(config, registry, sys.stdout)
    return 0


# ---------------------------------------------------------------------------- serve
def _port(text: str) -> int:
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
    p.add_argument("--port", type=_port, help="WebSocket port (overrides server.port)")
    p.add_argument("--no-local", action="store_true",
                   help="do not merge the local.yaml beside the first file")
    p.add_argument("--http-port", type=_port, help="OTA/health/metrics port "
                   "(overrides server.http_port)")
    p.add_argument("--check", action="store_true",
                   help="build every provider, report, and exit without serving")


async def _build_and_report(config: Any, registry: Any) -> None:
    from .app import build_providers, close_providers
    from .executor import Executor

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


@command("serve", help="run the server with the given configs", arguments=_serve_args)
def _serve(args: argparse.Namespace) -> int:
    from .config import load_config
    from .registry import default_registry

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
    from .gateway.run import serve

    asyncio.run(serve(config, registry, sys.stdout))
    return 0


# Subcommands that live in their own modules register themselves on import.
from . import voiceprint_cli  # noqa: E402,F401
from .tools import bench as _tools_bench  # noqa: E402,F401
from .tools import simulate as _tools_simulate  # noqa: E402,F401
