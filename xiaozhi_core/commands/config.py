"""``xiaozhi config check``: load, merge and validate deployment configs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from ..command import Command, CommandGroup
from ._output import table

if TYPE_CHECKING:
    from ..config import DeploymentConfig
    from ..registry import Registry

__all__ = ["commands", "describe_config"]


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="YAML files, deep-merged in order (later files win)",
    )
    p.add_argument(
        "--no-local", action="store_true", help="do not merge the local.yaml beside the first file"
    )


def describe_config(config: DeploymentConfig, registry: Registry, out: TextIO) -> None:
    """Print which provider fills each role and where the server listens."""
    rows = []
    for role, choice in config.choices().items():
        origin = registry.lookup(role, choice.provider).origin
        rows.append(
            [
                f"  {role}",
                choice.provider,
                str(choice.spec.execution),
                f"{origin.distribution} {origin.version}".strip(),
            ]
        )
    table(rows, out)
    server = config.server
    auth = "on" if server.auth_enabled else "off"
    print(
        f"  server: ws://{server.host}:{server.port}/xiaozhi/v1/ (auth {auth}), "
        f"http port {server.http_port}",
        file=out,
    )
    ex = config.executor
    print(
        f"  executor: {ex.kind} pool, {ex.workers} workers, max_pending {ex.max_pending}", file=out
    )
    if config.store.enabled:
        from ..store.engine import describe, resolve_url  # imports SQLAlchemy

        print(
            f"  store: {describe(resolve_url(config.store))} (transcripts "
            f"{'on' if config.store.transcripts else 'off'})",
            file=out,
        )
    else:
        print("  store: off", file=out)
    from ..session.profiles import build_profiles

    profiles = build_profiles(config)  # what only the session layer checks (tools)
    print(
        f"  profiles: {', '.join(profiles.names()) or '(none)'}; default "
        f"{profiles.default.name!r}; {len(profiles.devices)} device mapping(s)",
        file=out,
    )


def _config_check(args: argparse.Namespace) -> int:
    from ..config import check_config
    from ..registry import default_registry

    registry = default_registry()
    config, errors = check_config(args.files, registry, auto_local=not args.no_local)
    if errors or config is None:
        for error in errors:
            print(f"xiaozhi: config error: {' '.join(str(error).split())}", file=sys.stderr)
        if len(errors) > 1:
            print(f"{len(errors)} errors in {' + '.join(args.files)}", file=sys.stderr)
        return 2
    print(f"OK: {' + '.join(config.files)}")
    describe_config(config, registry, sys.stdout)
    print("  provider factories imported and policy-checked (no model loaded)")
    return 0


def commands() -> list[Command | CommandGroup]:
    """``xiaozhi config check`` (entry point ``xiaozhi_core.commands: config``)."""
    return [
        CommandGroup(("config",), "inspect deployment configs"),
        Command(
            ("config", "check"),
            "load, merge and validate config files",
            _config_check,
            _config_args,
        ),
    ]
