"""The ``xiaozhi`` command line (also ``python -m xiaozhi_core``).

This module only builds the parser and runs a command: every subcommand — the core's
own ``serve``, ``plugins``, ``config check``, ``simulate``, ``voiceprint`` included — is
a :class:`~xiaozhi_core.command.Command` record found through the entry-point group
``xiaozhi_core.commands`` (see :mod:`xiaozhi_core.command`), so other distributions add
commands exactly as the core does (``xiaozhi bench`` comes from ``xiaozhi-bench``).

A command returns its exit code. :class:`~xiaozhi_core.errors.XiaozhiError` raised by a
command is printed as one line (no traceback): exit code 2 for config errors, 1 for the
rest. ``--log-level`` and ``--log-format text|json`` are accepted before and after the
subcommand.

Example:
    >>> {"config check", "plugins", "serve", "voiceprint enroll"} <= {
    ...     " ".join(path) for path in load_commands().commands}
    True
    >>> main(["config", "check", "/nonexistent.yaml"])
    2
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .command import Command, CommandSet, load_commands
from .errors import ConfigError, XiaozhiError
from .logfmt import configure

__all__ = ["build_parser", "load_commands", "main"]

log = logging.getLogger(__name__)

_LEVELS = ["debug", "info", "warning", "error"]


def _log_level(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--log-level",
        choices=_LEVELS,
        default=argparse.SUPPRESS if default is None else default,
        help="logging verbosity on stderr (default: warning)",
    )


def _log_format(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=argparse.SUPPRESS if default is None else default,
        help="log lines as text or one JSON object per line (default: text)",
    )


def build_parser(found: CommandSet | None = None) -> argparse.ArgumentParser:
    """The argparse parser of every command in ``found`` (default: the installed ones)."""
    found = load_commands() if found is None else found
    parser = argparse.ArgumentParser(
        prog="xiaozhi", description="xiaozhi-core: an open server for xiaozhi voice assistants"
    )
    _log_level(parser, "warning")
    _log_format(parser, "text")
    parser.add_argument("--version", action="version", version=f"xiaozhi-core {__version__}")
    parser.set_defaults(_parser=parser)
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): parser}
    subparsers: dict[tuple[str, ...], argparse._SubParsersAction[argparse.ArgumentParser]] = {}

    def node(path: tuple[str, ...], help_text: str) -> argparse.ArgumentParser:
        if path in parsers:
            return parsers[path]
        parent = node(path[:-1], found.groups.get(path[:-1], ""))
        if path[:-1] not in subparsers:
            subparsers[path[:-1]] = parent.add_subparsers(title="commands", metavar="COMMAND")
        p = subparsers[path[:-1]].add_parser(path[-1], help=help_text, description=help_text)
        p.set_defaults(_parser=p)
        _log_level(p, None)
        _log_format(p, None)
        parsers[path] = p
        return p

    for path in sorted(found.commands):
        cmd = found.commands[path]
        p = node(path, cmd.help)
        if cmd.arguments is not None:
            cmd.arguments(p)
        p.set_defaults(_command=cmd)
    return parser


def main(argv: Sequence[str] | None = None, commands: CommandSet | None = None) -> int:
    """Run the command line; returns the exit code."""
    found = load_commands() if commands is None else commands
    parser = build_parser(found)
    args = parser.parse_args(argv)
    configure(args.log_level, args.log_format)
    for failure in found.failures:
        print(f"xiaozhi: warning: command plugin {failure}", file=sys.stderr)
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
