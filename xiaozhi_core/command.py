"""Subcommands of the ``xiaozhi`` CLI, described as data and found through entry points.

A distribution adds commands the way it adds providers: an entry point in the group
``xiaozhi_core.commands`` names a callable that returns :class:`Command` records (and
optionally :class:`CommandGroup` records giving help to the intermediate words of nested
commands). :mod:`xiaozhi_core.cli` imports no subcommand module; it loads them here.

Example — a complete command module::

    # my_package/cli.py
    from xiaozhi_core.command import Command

    def _hello(args):
        print(f"hello {args.name}")
        return 0

    def commands():
        return [Command(("hello",), "say hello",
                        _hello, lambda p: p.add_argument("name"))]

    # pyproject.toml
    [project.entry-points."xiaozhi_core.commands"]
    hello = "my_package.cli:commands"

    >>> cmd = Command(("config", "check"), "validate configs", lambda args: 0)
    >>> cmd.name
    'config check'
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["COMMAND_GROUP", "Command", "CommandGroup", "CommandSet", "load_commands"]

log = logging.getLogger(__name__)

#: The entry-point group of CLI command providers.
COMMAND_GROUP = "xiaozhi_core.commands"

Run = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], object]


@dataclass(frozen=True)
class Command:
    """A subcommand: its path (``("config", "check")``), help, function and arguments.

    ``run`` returns the exit code. A :class:`~xiaozhi_core.errors.XiaozhiError` it raises
    is printed as one line (exit 2 for config errors, 1 for the rest).
    """

    path: tuple[str, ...]
    help: str
    run: Run
    arguments: Arguments | None = None

    @property
    def name(self) -> str:
        return " ".join(self.path)


@dataclass(frozen=True)
class CommandGroup:
    """Help text for an intermediate word of nested commands (``voiceprint``).

    >>> CommandGroup(("voiceprint",), "manage enrolled speakers").path
    ('voiceprint',)
    """

    path: tuple[str, ...]
    help: str


@dataclass
class CommandSet:
    """Every command and group found, plus what failed to load (shown, never fatal)."""

    commands: dict[tuple[str, ...], Command]
    groups: dict[tuple[str, ...], str]
    failures: list[str]

    def add(self, items: Iterable[Command | CommandGroup], origin: str) -> None:
        """Add records from ``origin``; a duplicate path is refused and reported.

        >>> s = CommandSet({}, {}, [])
        >>> s.add([Command(("a",), "x", lambda a: 0)], "one")
        >>> s.add([Command(("a",), "y", lambda a: 0)], "two")
        >>> s.failures
        ["two: command 'a' is already provided; ignored"]
        """
        for item in items:
            if isinstance(item, CommandGroup):
                self.groups.setdefault(item.path, item.help)
            elif isinstance(item, Command):
                if item.path in self.commands:
                    self.failures.append(
                        f"{origin}: command {item.name!r} is already provided; ignored"
                    )
                    continue
                self.commands[item.path] = item
            else:
                self.failures.append(
                    f"{origin}: returned {type(item).__name__}, expected Command or CommandGroup"
                )


def load_commands(group: str = COMMAND_GROUP) -> CommandSet:
    """Load every command entry point of ``group``; a broken one is recorded in
    :attr:`CommandSet.failures` and the rest still load."""
    found = CommandSet({}, {}, [])
    for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
        origin = f"{ep.dist.name if ep.dist else '?'} ({ep.name} = {ep.value})"
        try:
            items = ep.load()()
            found.add(list(items), origin)
        except Exception as exc:  # isolation: one broken distribution never hides the rest
            log.warning("command plugin %s failed to load: %s: %s", origin, type(exc).__name__, exc)
            found.failures.append(f"{origin}: {type(exc).__name__}: {exc}")
    return found
