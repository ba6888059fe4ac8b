"""The device store: devices, sessions, turns, memory and voiceprints in SQLite or
PostgreSQL (SQLAlchemy 2 async, Alembic migrations).

Importing this package loads no database library: :class:`StoreSettings` and
:class:`StoreError` are plain, and :class:`Store` and the records are imported (with
SQLAlchemy) on first use, so a server without a store never pays for them.

Modules: :mod:`.settings` (``store:`` config), :mod:`.device_info` (what OTA says),
:mod:`.engine` (URLs, SQLite/PostgreSQL set-up), :mod:`.models` (tables),
:mod:`.migrate` (+ ``migrations/``), :mod:`.writer` (the batched writer),
:mod:`.records` (what reads return), :mod:`.facade` (:class:`Store`), :mod:`.metrics`
(Prometheus), and
:mod:`xiaozhi_core.commands.store` (``xiaozhi devices``, ``xiaozhi db``).

>>> import sys, xiaozhi_core.store as store
>>> store.StoreSettings().url
''
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .device_info import DeviceInfo, ota_device_info
from .errors import StoreError
from .settings import StoreSettings

if TYPE_CHECKING:
    from .facade import Store
    from .metrics import StoreCollector
    from .records import (
        DeviceRecord,
        PruneResult,
        SessionRecord,
        StoreStats,
        TurnRecord,
        VoiceprintRecord,
    )

__all__ = [
    "DeviceInfo",
    "DeviceRecord",
    "PruneResult",
    "SessionRecord",
    "Store",
    "StoreCollector",
    "StoreError",
    "StoreSettings",
    "StoreStats",
    "TurnRecord",
    "VoiceprintRecord",
    "ota_device_info",
]

_LAZY = {
    "Store": ".facade",
    "StoreCollector": ".metrics",
    "DeviceRecord": ".records",
    "PruneResult": ".records",
    "SessionRecord": ".records",
    "StoreStats": ".records",
    "TurnRecord": ".records",
    "VoiceprintRecord": ".records",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
