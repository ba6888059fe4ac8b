"""What an OTA check tells the store about a device: client id, board, firmware version.

The firmware describes itself twice: ``User-Agent: BOARD/FWVERSION`` and the JSON body
(``board.type``, ``application.version``, ``uuid``). The body wins where it has a value;
anything malformed is ignored (the body is device-supplied and otherwise opaque).

>>> info = ota_device_info(
...     {"User-Agent": "bread-compact-wifi/1.6.2", "Client-Id": "c0ffee"},
...     {"application": {"name": "xiaozhi", "version": "1.6.3"}, "board": {"type": "esp-box"}})
>>> info
DeviceInfo(client_id='c0ffee', board='esp-box', firmware='1.6.3')
>>> ota_device_info({"User-Agent": "bread-compact-wifi/1.6.2"}, {"board": 7})
DeviceInfo(client_id=None, board='bread-compact-wifi', firmware='1.6.2')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["DeviceInfo", "ota_device_info"]


class DeviceInfo(NamedTuple):
    """Keyword arguments of :meth:`Store.device_seen <xiaozhi_core.store.Store.device_seen>`
    (``store.device_seen(device_id, **info._asdict())``)."""

    client_id: str | None
    board: str | None
    firmware: str | None


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def ota_device_info(headers: Mapping[str, str], body: Mapping[str, object]) -> DeviceInfo:
    """The device facts of one OTA request (header names as aiohttp gives them)."""
    agent_board, _, agent_version = (headers.get("User-Agent") or "").partition("/")
    board = body.get("board")
    application = body.get("application")
    return DeviceInfo(
        client_id=_text(headers.get("Client-Id")) or _text(body.get("uuid")),
        board=(_text(board.get("type")) if isinstance(board, Mapping) else None)
        or _text(agent_board),
        firmware=(_text(application.get("version")) if isinstance(application, Mapping) else None)
        or _text(agent_version),
    )
