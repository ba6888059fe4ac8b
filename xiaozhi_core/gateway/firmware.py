"""Firmware delivery over OTA: a folder of ``{board}_{version}.bin`` builds.

The OTA endpoint asks :meth:`FirmwareStore.offer` for the newest build of the device's
board that is newer than what it runs, compared the firmware's way (``Ota::
IsNewVersionAvailable``: dot-separated integers, left to right; with equal prefixes the
longer one is newer). The build is then served from the HTTP port with range requests
(the download can resume) and its SHA-256.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("box-3_1.6.0.bin", "box-3_1.10.2.bin", "lamp_2.0.bin", "notes.txt"):
    ...     _ = (d / name).write_bytes(b"\\xe9" + name.encode())
    >>> store = FirmwareStore(d)
    >>> store.offer("box-3", "1.9.9").version
    '1.10.2'
    >>> store.offer("box-3", "1.10.2") is None, store.offer("kettle", "0.1") is None
    (True, True)
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

__all__ = [
    "DOWNLOAD_PATH",
    "Firmware",
    "FirmwareStore",
    "device_build",
    "download_handler",
    "firmware_answer",
    "is_newer",
    "parse_version",
]

#: Where builds are downloaded from, on the HTTP port.
DOWNLOAD_PATH = "/xiaozhi/ota/firmware/"

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(?P<board>[A-Za-z0-9][A-Za-z0-9._-]*)_(?P<version>\d+(\.\d+)*)\.bin$")


def parse_version(version: str) -> tuple[int, ...] | None:
    """``"1.10.2"`` → ``(1, 10, 2)``; None when a part is not a number.

    >>> parse_version("1.10.2"), parse_version("2"), parse_version("1.x")
    ((1, 10, 2), (2,), None)
    """
    parts = version.strip().split(".")
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def is_newer(candidate: str, current: str) -> bool:
    """The firmware's comparison: is ``candidate`` newer than ``current``?

    >>> is_newer("1.10.0", "1.9.9"), is_newer("1.6", "1.6.0"), is_newer("1.6.0", "1.6")
    (True, False, True)
    """
    new, cur = parse_version(candidate), parse_version(current)
    if new is None:
        return False
    if cur is None:
        return True  # the device runs something unversioned: offer a real build
    for a, b in zip(new, cur, strict=False):
        if a != b:
            return a > b
    return len(new) > len(cur)


@dataclass(frozen=True)
class Firmware:
    """One build in the folder."""

    board: str
    version: str
    path: Path
    size: int
    sha256: str


class FirmwareStore:
    """The builds in ``folder``, listed afresh at every call (a few ``stat`` calls); the
    SHA-256 of a file is computed once per (size, mtime)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._sums: dict[tuple[str, int, int], str] = {}

    def builds(self) -> dict[str, Firmware]:
        """File name → build, for every well-named ``.bin`` in the folder."""
        try:
            paths = sorted(self.folder.iterdir())
        except OSError as exc:
            log.warning("firmware folder %s: %s", self.folder, exc.strerror)
            return {}
        builds: dict[str, Firmware] = {}
        for path in paths:
            m = _NAME.match(path.name)
            if m is None:
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            key = (path.name, st.st_size, st.st_mtime_ns)
            if key not in self._sums:
                digest = hashlib.sha256()
                with path.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                self._sums[key] = digest.hexdigest()
            builds[path.name] = Firmware(
                m["board"], m["version"], path, st.st_size, self._sums[key]
            )
        return builds

    def offer(self, board: str, current_version: str) -> Firmware | None:
        """The newest build for ``board`` newer than ``current_version``, else None."""
        best: Firmware | None = None
        for fw in self.builds().values():
            if (
                fw.board == board
                and is_newer(fw.version, current_version)
                and (best is None or is_newer(fw.version, best.version))
            ):
                best = fw
        return best

    def get(self, name: str) -> Firmware | None:
        """The build with exactly this file name (the only way a download finds a file)."""
        return self.builds().get(name)


def device_build(body: Mapping[str, object], user_agent: str = "") -> tuple[str, str]:
    """The device's ``(board type, firmware version)`` from its OTA request: the body's
    ``board.type`` and ``application.version``, else the ``User-Agent`` (``<board>/<ver>``).

    >>> device_build({"board": {"type": "box-3"}, "application": {"version": "1.6.0"}})
    ('box-3', '1.6.0')
    >>> device_build({}, "box-3/1.5.1")
    ('box-3', '1.5.1')
    """
    board = body.get("board")
    app = body.get("application")
    ua_board, _, ua_version = user_agent.partition("/")
    kind = board.get("type") if isinstance(board, dict) else None
    version = app.get("version") if isinstance(app, dict) else None
    return (
        kind if isinstance(kind, str) and kind else ua_board.strip(),
        version if isinstance(version, str) and version else ua_version.strip(),
    )


def firmware_answer(
    store: FirmwareStore | None, board: str, version: str, base_url: str
) -> dict[str, object] | None:
    """The OTA response's ``firmware`` object: a newer build's URL and checksum, or the
    device's own version with an empty URL (None when the device said no version).

    >>> firmware_answer(None, "box-3", "1.6.0", "http://h:8003")
    {'version': '1.6.0', 'url': ''}
    """
    build = store.offer(board, version) if store is not None and board and version else None
    if build is None:
        return {"version": version, "url": ""} if version else None
    log.info("offering firmware %s to a %s running %s", build.path.name, board, version)
    return {
        "version": build.version,
        "url": f"{base_url}{DOWNLOAD_PATH}{build.path.name}",
        "size": build.size,
        "sha256": build.sha256,
    }


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def download_handler(store: FirmwareStore) -> Handler:
    """``GET/HEAD {DOWNLOAD_PATH}{name}``: the build, with range requests (resume), its
    SHA-256 as ``Repr-Digest`` (RFC 9530) and ``X-Checksum-SHA256``. Only names listed
    in the folder are served (no paths)."""

    async def download(request: web.Request) -> web.StreamResponse:
        build = store.get(request.match_info.get("name", ""))
        if build is None:
            raise web.HTTPNotFound(text="no such firmware build\n")
        digest = base64.b64encode(bytes.fromhex(build.sha256)).decode()
        return web.FileResponse(
            build.path,
            headers={
                "Content-Type": "application/octet-stream",
                "Repr-Digest": f"sha-256=:{digest}:",
                "X-Checksum-SHA256": build.sha256,
            },
        )

    return download
