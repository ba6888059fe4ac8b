"""The ``-c/--config FILE`` option the commands share, and loading what it names."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import DeploymentConfig
    from ..registry import Registry

__all__ = ["add_config_option", "load_deployment"]


def add_config_option(
    parser: argparse.ArgumentParser, help_text: str, *, required: bool = True
) -> None:
    """Add ``-c/--config FILE``, repeatable: ``args.config`` lists the files in order (an
    empty list when the option is not ``required`` and not given).

    >>> p = argparse.ArgumentParser()
    >>> add_config_option(p, "deployment config(s)")
    >>> p.parse_args(["-c", "a.yaml", "--config", "b.yaml"]).config
    ['a.yaml', 'b.yaml']
    >>> add_config_option(q := argparse.ArgumentParser(), "config(s)", required=False)
    >>> q.parse_args([]).config
    []
    """
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        required=required,
        default=None if required else [],
        metavar="FILE",
        help=help_text,
    )


def load_deployment(
    files: Sequence[str], registry: Registry | None = None, *, auto_local: bool = True
) -> DeploymentConfig:
    """Read, deep-merge (later files win; ``local.yaml`` beside the first too, unless not
    ``auto_local``) and validate ``files`` against ``registry`` (default: the installed
    plugins). Raises :class:`~xiaozhi_core.errors.ConfigError`."""
    from ..config import load_config
    from ..registry import default_registry

    return load_config(files, registry or default_registry(), auto_local=auto_local)
