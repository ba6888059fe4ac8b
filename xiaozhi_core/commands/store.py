"""``xiaozhi devices list|show ID|set-profile ID NAME`` and ``xiaozhi db upgrade|status``:
the device store from the command line.

The store is the one a deployment's ``store:`` section names (``-c FILE``, repeatable,
merged like ``xiaozhi serve``'s), or given directly with ``--store-url`` /
``--data-dir`` (these win); with neither, the SQLite store in ``./data``. Only the
``store:`` section of the files is read, so the commands work without the providers the
deployment selects being installed.

Example::

    xiaozhi db upgrade -c configs/default.yaml
    xiaozhi devices list --store-url postgresql://xz:${PW}@db.local/xiaozhi
    xiaozhi devices set-profile aa:bb:cc:dd:ee:ff kids --data-dir /var/lib/xiaozhi
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..command import Command, CommandGroup
from ..errors import ConfigError
from ..store.errors import StoreError
from ..store.settings import StoreSettings
from ._deployment import add_config_option
from ._output import table

if TYPE_CHECKING:
    import datetime as dt

    from ..store.facade import Store
    from ..store.records import DeviceRecord, SessionRecord, TurnRecord
    from ..types import JSONObject

__all__ = ["commands", "load_store_settings"]

T = TypeVar("T")


def load_store_settings(
    files: Sequence[str], *, url: str | None = None, data_dir: str | None = None
) -> StoreSettings:
    """The ``store:`` section of the deployment ``files`` (merged in order, ``local.yaml``
    beside the first merged last, ``${ENV}`` expanded), overridden by ``url`` /
    ``data_dir``; defaults when no file has one.

    >>> load_store_settings([], data_dir="/srv/xz").data_dir
    '/srv/xz'
    """
    from ..config import config_files, expand_env, merge, read_yaml
    from ..options import validate_options

    section: JSONObject = {}
    origin = ""
    for file in config_files(files):
        data = read_yaml(file)
        if "store" not in data:
            continue
        try:
            value = expand_env(data["store"], path="store")
        except ConfigError as exc:
            raise exc.with_file(file) from None
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"expected a mapping, got {type(value).__name__}", path="store", file=file
            )
        section, origin = merge(section, value), file
    if url is not None:
        section["url"] = url
    if data_dir is not None:
        section["data_dir"] = data_dir
    try:
        return validate_options(StoreSettings, section, path="store")
    except ConfigError as exc:
        raise exc.with_file(origin) if origin else exc from None


def _store_args(p: argparse.ArgumentParser) -> None:
    add_config_option(
        p, "deployment config(s) whose store: section names the store", required=False
    )
    p.add_argument(
        "--store-url",
        metavar="URL",
        help="database URL (sqlite:///PATH or postgresql://USER:PW@HOST/DB); overrides store.url",
    )
    p.add_argument(
        "--data-dir", metavar="DIR", help="directory of the SQLite store (overrides store.data_dir)"
    )


def _run(
    args: argparse.Namespace, work: Callable[[Store], Awaitable[T]], *, upgrade: bool = False
) -> T:
    settings = load_store_settings(args.config, url=args.store_url, data_dir=args.data_dir)
    if not settings.enabled:
        raise ConfigError("is off (store.enabled: false); nothing to read", path="store.enabled")

    async def main() -> T:
        from ..store.facade import Store

        store = Store(settings)
        await store.open(upgrade=upgrade, strict=True)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _safe(value: object, limit: int = 80) -> str:
    """Device-supplied text made safe for a terminal: control characters out, one line,
    at most ``limit`` characters.

    >>> _safe("evil\\x1b[2Jname\\nnext", 12), _safe(None)
    ('evil [2Jnam…', '-')
    """
    if value is None or value == "":
        return "-"
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------------------- devices
def _list_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=1000, help="most devices shown (default 1000)")


def _devices_list(args: argparse.Namespace) -> int:
    devices = _run(args, lambda store: store.list_devices(args.limit))
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=2, ensure_ascii=False))
        return 0
    if not devices:
        print("no devices yet (a device appears after its first OTA check or connection)")
        return 0
    rows = [["DEVICE", "CLIENT", "BOARD", "FIRMWARE", "PROFILE", "FIRST SEEN", "LAST SEEN"]]
    rows += [
        [
            _safe(d.device_id),
            _safe(d.client_id, 36),
            _safe(d.board, 32),
            _safe(d.firmware, 20),
            _safe(d.profile or "(default)", 32),
            _time(d.first_seen),
            _time(d.last_seen),
        ]
        for d in devices
    ]
    table(rows, sys.stdout)
    return 0


def _show_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("device_id", metavar="ID", help="the device id (MAC address)")
    p.add_argument("--turns", type=int, default=10, help="latest turns shown (default 10)")
    p.add_argument("--sessions", type=int, default=5, help="latest sessions shown (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _devices_show(args: argparse.Namespace) -> int:
    device_id = args.device_id.strip().lower()

    async def work(
        store: Store,
    ) -> tuple[DeviceRecord, str | None, list[SessionRecord], list[TurnRecord]]:
        device = await store.get_device(device_id)
        if device is None:
            raise StoreError(
                f"no device {_safe(device_id)!r} in {store.location} (a device "
                "appears after its first OTA check or connection)"
            )
        return (
            device,
            await store.get_memory(device_id),
            await store.device_sessions(device_id, args.sessions),
            await store.device_turns(device_id, args.turns),
        )

    device, summary, sessions, turns = _run(args, work)
    if args.json:
        print(
            json.dumps(
                {
                    **device.as_dict(),
                    "memory": {"summary": summary},
                    "sessions": [s.as_dict() for s in sessions],
                    "turns": [t.as_dict() for t in turns],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    out = sys.stdout
    table(
        [
            ["device", _safe(device.device_id)],
            ["client", _safe(device.client_id)],
            ["board", _safe(device.board)],
            ["firmware", _safe(device.firmware)],
            ["profile", _safe(device.profile or "(default)")],
            ["first seen", _time(device.first_seen)],
            ["last seen", _time(device.last_seen)],
            ["memory", _safe(summary, 200)],
        ],
        out,
    )
    print(f"\nlatest sessions ({len(sessions)}):", file=out)
    if sessions:
        table(
            [["STARTED", "ENDED", "TRANSPORT", "CLOSE REASON"]]
            + [
                [_time(s.started), _time(s.ended), _safe(s.transport), _safe(s.close_reason, 40)]
                for s in sessions
            ],
            out,
        )
    print(f"\nlatest turns ({len(turns)}):", file=out)
    if turns:
        rows = [["TIME", "KIND", "OUTCOME", "TOTAL MS", "SPEAKER", "HEARD", "REPLY"]]
        for t in reversed(turns):
            total = (t.latency or {}).get("total_ms")
            rows.append(
                [
                    _time(t.at),
                    _safe(t.kind),
                    _safe(t.outcome),
                    f"{total:g}" if isinstance(total, int | float) else "-",
                    _safe(t.speaker, 20),
                    _safe(t.text, 40),
                    _safe(t.reply if not t.error else t.error, 60),
                ]
            )
        table(rows, out)
    return 0


def _set_profile_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("device_id", metavar="ID", help="the device id (MAC address)")
    p.add_argument(
        "profile", metavar="NAME", nargs="?", help="the profile to use for the device's next turns"
    )
    p.add_argument(
        "--default",
        action="store_true",
        help="map the device back to the default profile (instead of NAME)",
    )
    p.add_argument(
        "--create", action="store_true", help="add the device if the store has not seen it yet"
    )


def _devices_set_profile(args: argparse.Namespace) -> int:
    if (args.profile is None) == (not args.default):
        raise ConfigError("give either a profile NAME or --default")
    device_id = args.device_id.strip().lower()
    profile = None if args.default else args.profile.strip()
    if profile == "":
        raise ConfigError("the profile NAME is empty (use --default for the default profile)")

    if profile is not None and args.config:
        defined = _profile_names(args.config)
        if profile not in defined:
            known = ", ".join(sorted(defined)) or "(none)"
            raise ConfigError(
                f"unknown profile {profile!r}; defined in {' + '.join(args.config)}: {known}",
                path="profiles",
            )

    async def work(store: Store) -> None:
        if not await store.set_profile(device_id, profile, create=args.create):
            raise StoreError(
                f"no device {_safe(device_id)!r} in {store.location} (it appears "
                "after its first OTA check or connection; --create adds it now)"
            )

    _run(args, work)
    print(
        f"device {_safe(device_id)}: profile {_safe(profile or '(default)')} (from the "
        "device's next session; a server's own API applies it from the next turn)"
    )
    return 0


def _profile_names(files: Sequence[str]) -> set[str]:
    """The profile names the ``profiles:`` sections of ``files`` define."""
    from ..config import config_files, read_yaml

    names: set[str] = set()
    for file in config_files(files):
        section = read_yaml(file).get("profiles")
        if isinstance(section, dict):
            names.update(str(k) for k in section)
    return names


# ------------------------------------------------------------------------- db
def _db_upgrade(args: argparse.Namespace) -> int:
    async def work(store: Store) -> tuple[str, str | None]:
        return store.location, await store.revision()

    location, revision = _run(args, work, upgrade=True)
    print(f"store {location}: schema at revision {revision} (newest)")
    return 0


def _db_status(args: argparse.Namespace) -> int:
    settings = load_store_settings(args.config, url=args.store_url, data_dir=args.data_dir)

    async def main() -> tuple[str, str | None, str]:
        from ..store.engine import create_engine, describe, resolve_url, sqlite_path
        from ..store.migrate import current_revision, head_revision
        from ..store.writer import error_line

        url = resolve_url(settings)
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise StoreError(f"no store at {path} (run `xiaozhi db upgrade` to create it)")
        engine = create_engine(url, settings, create_dir=False)
        try:
            return describe(url), await current_revision(engine), head_revision()
        except Exception as exc:
            raise StoreError(f"store {describe(url)}: {error_line(exc)}") from exc
        finally:
            await engine.dispose()

    location, revision, head = asyncio.run(main())
    state = (
        "empty: run `xiaozhi db upgrade`"
        if revision is None
        else "newest"
        if revision == head
        else f"not {head}: run `xiaozhi db upgrade`"
    )
    print(f"store {location}: schema revision {revision or '-'} ({state})")
    return 0 if revision == head else 1


def commands() -> list[Command | CommandGroup]:
    """``xiaozhi devices ...`` and ``xiaozhi db ...`` (entry point
    ``xiaozhi_core.commands: store``)."""
    return [
        CommandGroup(("devices",), "devices in the store: list, show, map to a profile"),
        Command(
            ("devices", "list"), "list devices, most recently seen first", _devices_list, _list_args
        ),
        Command(
            ("devices", "show"),
            "one device: details, latest sessions and turns",
            _devices_show,
            _show_args,
        ),
        Command(
            ("devices", "set-profile"),
            "map a device to a profile (or --default)",
            _devices_set_profile,
            _set_profile_args,
        ),
        CommandGroup(("db",), "the store's database"),
        Command(
            ("db", "upgrade"),
            "create or migrate the store's schema to the newest",
            _db_upgrade,
            _store_args,
        ),
        Command(
            ("db", "status"),
            "where the store is and its schema revision (exit 1 when not current)",
            _db_status,
            _store_args,
        ),
    ]
