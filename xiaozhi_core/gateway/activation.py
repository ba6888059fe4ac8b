"""Device activation (``ota.activation``): an unknown device is told a 6-digit code, which
the operator confirms with ``xiaozhi activation confirm CODE``; until then it gets no
credentials and cannot connect.

The firmware's side (``main/ota.cc``, ``main/application.cc``): when the OTA answer has an
``activation`` object it shows and speaks ``code`` (with ``message``), then polls
``POST <ota url>/activate`` — 202 means "still waiting", 200 "activated" — and checks OTA
again, which now returns its WebSocket/MQTT credentials.

State lives in one JSON file (``ota.devices_file``) shared by the server and the CLI,
read-modify-written under an exclusive ``flock``, replaced atomically::

    {"activated": {"aa:bb:..": {"client_id": "..", "at": 1700000000}},
     "pending": {"123456": {"device_id": "aa:bb:..", "client_id": "..", "since": ...}}}

Example:
    >>> import tempfile, os
    >>> store = ActivationStore(os.path.join(tempfile.mkdtemp(), "devices.json"))
    >>> code = store.code_for("aa:bb:cc:dd:ee:ff", "uuid-1")
    >>> len(code), store.code_for("aa:bb:cc:dd:ee:ff", "uuid-1") == code
    (6, True)
    >>> store.is_activated("aa:bb:cc:dd:ee:ff")
    False
    >>> store.activate(code)
    'aa:bb:cc:dd:ee:ff'
    >>> store.is_activated("AA:BB:CC:DD:EE:FF"), store.pending()
    (True, {})
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ActivationError", "ActivationStore"]

#: A code not confirmed within this long is forgotten (the device gets a new one).
CODE_TTL = 24 * 3600


class ActivationError(Exception):
    """A code that is not pending, or an unreadable devices file (one line)."""


class ActivationStore:
    """The devices file. Cheap to ask: it is re-read only when it changed on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Any] = {"activated": {}, "pending": {}}

    # ------------------------------------------------------------------ reading
    def _load(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {"activated": {}, "pending": {}}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError) as exc:
                raise ActivationError(f"devices file {self.path}: {exc}") from None
            if not isinstance(data, dict):
                raise ActivationError(f"devices file {self.path}: not a JSON object")
            data.setdefault("activated", {})
            data.setdefault("pending", {})
            self._data, self._stamp = data, stamp
        return self._data

    def is_activated(self, device_id: str) -> bool:
        return device_id.lower() in self._load()["activated"]

    def activated(self) -> dict[str, Any]:
        return dict(self._load()["activated"])

    def pending(self) -> dict[str, Any]:
        now = time.time()
        return {
            code: p
            for code, p in self._load()["pending"].items()
            if now - p.get("since", 0) < CODE_TTL
        }

    # ------------------------------------------------------------------ changing
    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with lock.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                self._stamp = None
                data = self._load()
                yield data
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
                os.replace(tmp, self.path)
                self._stamp = None
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def code_for(self, device_id: str, client_id: str) -> str:
        """The pending code of this device (a new one if it has none, or it expired)."""
        device_id = device_id.lower()
        now = time.time()
        for code, p in self.pending().items():
            if p.get("device_id") == device_id:
                return code
        with self._editing() as data:
            pending = data["pending"]
            for code in [
                c
                for c, p in pending.items()
                if now - p.get("since", 0) >= CODE_TTL or p.get("device_id") == device_id
            ]:
                del pending[code]
            code = f"{secrets.randbelow(10**6):06d}"
            while code in pending:
                code = f"{secrets.randbelow(10**6):06d}"
            pending[code] = {"device_id": device_id, "client_id": client_id, "since": now}
        return code

    def activate(self, code: str) -> str:
        """Confirm ``code``; the device id it belonged to."""
        with self._editing() as data:
            entry = data["pending"].get(code.strip())
            if entry is None or time.time() - entry.get("since", 0) >= CODE_TTL:
                raise ActivationError(
                    f"no device is waiting with code {code.strip()!r} "
                    "(see `xiaozhi activation pending`)"
                )
            del data["pending"][code.strip()]
            data["activated"][entry["device_id"]] = {
                "client_id": entry.get("client_id", ""),
                "at": int(time.time()),
            }
        return str(entry["device_id"])

    def revoke(self, device_id: str) -> bool:
        """Forget an activated device (it must activate again); False if it was not."""
        with self._editing() as data:
            return data["activated"].pop(device_id.lower(), None) is not None
