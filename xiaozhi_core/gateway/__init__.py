"""The gateway: WebSocket endpoint for devices plus the HTTP side (OTA, health, metrics)."""

from .server import XiaozhiServer

__all__ = ["XiaozhiServer"]
