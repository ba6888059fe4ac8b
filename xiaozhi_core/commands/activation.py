"""``xiaozhi activation pending|confirm|list|revoke``: the activation step (``ota.activation``).

An unknown device shows and speaks a 6-digit code; the operator confirms it here::

    xiaozhi activation pending -c configs/default.yaml
    xiaozhi activation confirm -c configs/default.yaml 123456

The server and this command share the devices file (``ota.devices_file``); the running
server sees the change at the device's next poll, no restart needed.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from ..command import Command, CommandGroup
from ..errors import ConfigError
from ._deployment import add_config_option, load_deployment

if TYPE_CHECKING:
    from ..gateway.activation import ActivationStore

__all__: list[str] = []


def _common(p: argparse.ArgumentParser) -> None:
    add_config_option(p, "the deployment config(s) the server runs with")


def _store(args: argparse.Namespace) -> ActivationStore:
    from ..gateway.activation import ActivationStore
    from ..gateway.server import devices_path

    config = load_deployment(args.config)
    if not config.ota.activation:
        print("note: ota.activation is off in this config; devices connect without it")
    return ActivationStore(devices_path(config))


def _pending(args: argparse.Namespace) -> int:
    waiting = _store(args).pending()
    if not waiting:
        print("no device is waiting for activation")
    for code, p in sorted(waiting.items(), key=lambda kv: kv[1].get("since", 0)):
        age = int(time.time() - p.get("since", 0))
        print(
            f"{code}  {p.get('device_id')}  client {p.get('client_id') or '-'}  "
            f"waiting {age // 60} min"
        )
    return 0


def _activate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("code", help="the 6-digit code the device shows and speaks")


def _activate(args: argparse.Namespace) -> int:
    from ..gateway.activation import ActivationError

    try:
        device = _store(args).activate(args.code)
    except ActivationError as exc:
        raise ConfigError(str(exc)) from None
    print(f"activated {device}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for device, info in sorted(_store(args).activated().items()):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.get("at", 0)))
        print(f"{device}  client {info.get('client_id') or '-'}  since {when}")
    return 0


def _revoke_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("device", help="the device id (MAC) to forget")


def _revoke(args: argparse.Namespace) -> int:
    if not _store(args).revoke(args.device):
        raise ConfigError(f"device {args.device} is not activated")
    print(f"revoked {args.device.lower()}; it must activate again")
    return 0


def commands() -> list[Command | CommandGroup]:
    """``xiaozhi activation ...`` (entry point ``activation``)."""
    return [
        CommandGroup(("activation",), "the activation step: confirm the code a device shows"),
        Command(
            ("activation", "pending"),
            "devices waiting for activation, with their codes",
            _pending,
            _common,
        ),
        Command(
            ("activation", "confirm"),
            "activate the device that shows CODE",
            _activate,
            _activate_args,
        ),
        Command(("activation", "list"), "activated devices", _list, _common),
        Command(("activation", "revoke"), "forget an activated device", _revoke, _revoke_args),
    ]
