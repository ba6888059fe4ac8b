"""The WebSocket transport: one ``websockets`` server connection as a
:class:`~xiaozhi_core.session.transport.Transport`.

JSON travels in text frames; Opus in binary frames with the v1/v2/v3 framing of
PROTOCOL.md §3, removed on the way in and added on the way out. A malformed binary frame
is counted (``xiaozhi_frame_errors_total{kind="framing"}``) and dropped here, so the
session only ever sees Opus packets.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..protocol.framing import FrameError, decode_frame, encode_frame
from ..session.host import SessionMetrics
from ..session.transport import Peer, TransportClosed

__all__ = ["WebSocketTransport"]

log = logging.getLogger(__name__)


class WebSocketTransport:
    """A device's WebSocket connection, seen from its session."""

    kind = "websocket"

    def __init__(self, ws: ServerConnection, peer: Peer, metrics: SessionMetrics) -> None:
        self.ws = ws
        self.peer = peer
        self.metrics = metrics
        #: Binary framing in use: the handshake's, until the hello settles it.
        self.version = peer.protocol_version or 1
        self.frame_errors = 0

    def hello_fields(self) -> dict[str, object]:
        return {}

    def negotiated(self, protocol_version: int) -> None:
        self.version = protocol_version

    async def send_json(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def send_audio(self, packet: bytes, timestamp_ms: int) -> None:
        try:
            await self.ws.send(encode_frame(packet, self.version, timestamp_ms))
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self.ws.close(code, reason)
        except Exception as exc:  # closing a broken connection: nothing left to do
            log.debug("closing %s: %s", self.peer.remote, exc)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    yield message
                    continue
                try:
                    payload, _ts = decode_frame(message, self.version)
                except FrameError as exc:
                    self.frame_errors += 1
                    self.metrics.frame_error("framing")
                    log.info("device %s: dropped malformed frame: %s", self.peer.device_id, exc)
                    continue
                yield payload
        except ConnectionClosed:
            return
