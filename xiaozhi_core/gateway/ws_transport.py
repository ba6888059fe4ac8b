"""The WebSocket transport: one ``websockets`` server connection as a
:class:`~xiaozhi_core.session.transport.Transport`.

JSON travels in text frames; Opus in binary frames with the v1/v2/v3 framing of
PROTOCOL.md §3, removed on the way in and added on the way out. A malformed binary frame
is counted (``xiaozhi_frame_errors_total{kind="framing"}``) and dropped here, so the
session only ever sees Opus packets.

A device that stops reading (its TCP window closed) is noticed while audio is sent to it:
when the bytes not yet acknowledged have not drained for ``send_stall_s`` seconds, the
connection is closed (1008) and the send raises :class:`TransportClosed`, which ends the
turn and cancels its LLM and TTS calls — instead of streaming into a full socket until
the keep-alive gives up.

Audio takes a fast path (:class:`~xiaozhi_core.session.transport.AudioFastPath`): the
server's connections are :class:`AudioConnection`, which hand a complete binary message
to the session's handler right where ``websockets`` parses it, while the session waits
for its next message and nothing is queued before it. Text, control frames and any
audio that cannot go at once take ``websockets``' own queue and the iterator, in order.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from ..logutil import LogLimiter
from ..protocol.framing import FrameError, decode_frame, encode_frame
from ..session.host import SessionMetrics
from ..session.transport import AudioHandler, Peer, TransportClosed

__all__ = ["AudioConnection", "WebSocketTransport", "describe_close"]

log = logging.getLogger(__name__)


class AudioConnection(ServerConnection):
    """A server connection that can pass binary messages to a synchronous handler
    (:attr:`audio_handler`, set by :class:`WebSocketTransport`) as soon as they are
    parsed, instead of queueing them for ``recv()``. The handler says whether it took
    the message; if not, or for anything else, ``websockets`` goes on as usual.

    (``process_event`` is where ``websockets`` 15 hands each parsed frame to its
    receive queue; tests/gateway/test_ws_fast_path.py fails if that changes.)
    """

    audio_handler: Callable[[bytes], bool] | None = None

    def process_event(self, event: Event) -> None:
        handler = self.audio_handler
        if (
            handler is not None
            and type(event) is Frame
            and event.opcode is Opcode.BINARY
            and event.fin
            and type(event.data) is bytes
        ):
            try:
                if handler(event.data):
                    return
            except Exception:  # e.g. websockets' internals changed: the usual way instead
                log.exception("audio fast path failed; this connection goes without it")
                self.audio_handler = None
        super().process_event(event)


class WebSocketTransport:
    """A device's WebSocket connection, seen from its session."""

    kind = "websocket"

    def __init__(
        self, ws: ServerConnection, peer: Peer, metrics: SessionMetrics, send_stall_s: float = 0.0
    ) -> None:
        self.ws = ws
        self.peer = peer
        self.metrics = metrics
        #: Binary framing in use: the handshake's, until the hello settles it.
        self.version = peer.protocol_version or 1
        self.frame_errors = 0
        self._log_limit = LogLimiter(on_suppressed=metrics.count_suppressed_log)
        self._stall = _StallWatch(ws, send_stall_s) if send_stall_s > 0 else None
        self._closing: asyncio.Future[None] | None = None
        self._audio_handler: AudioHandler | None = None
        #: The iterator's consumer waits in ``recv()``, done with every earlier message.
        self._waiting = False
        #: Opus packets the session took on the fast path (the rest went through recv).
        self.fast_frames = 0

    def set_audio_handler(self, handler: AudioHandler | None) -> None:
        self._audio_handler = handler
        if isinstance(self.ws, AudioConnection):
            self.ws.audio_handler = self._fast_audio if handler is not None else None

    def _fast_audio(self, data: bytes) -> bool:
        """A binary message, straight from the parser: to the session now if it is
        next in line (the consumer waits and nothing is queued before it)."""
        handler = self._audio_handler
        if handler is None or not self._waiting or len(self.ws.recv_messages.frames):
            return False
        try:
            payload, _ts = decode_frame(data, self.version)
        except FrameError:
            return False  # the iterator counts and logs it
        if handler(payload):
            self.fast_frames += 1
            return True
        return False

    def hello_fields(self) -> dict[str, object]:
        return {}

    def negotiated(self, protocol_version: int) -> None:
        self.version = protocol_version

    async def send_json(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    def _check_stall(self) -> None:
        stall = self._stall
        if stall is not None and stall.stalled():
            log.info(
                "device %s stopped reading: nothing acknowledged for %g s; closing",
                self.peer.device_id,
                stall.timeout,
            )
            self._closing = asyncio.ensure_future(
                self.ws.close(1008, "not reading: send buffer full")
            )
            raise TransportClosed("device stopped reading")

    async def send_audio(self, packet: bytes, timestamp_ms: int) -> None:
        self._check_stall()
        try:
            await self.ws.send(encode_frame(packet, self.version, timestamp_ms))
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def send_audio_many(self, packets: Sequence[bytes], timestamp_ms: int) -> None:
        """Several binary messages in one socket write (``ws.send`` writes each message
        on its own: a system call per frame, and on loopback the receiver's TCP work
        too)."""
        if len(packets) == 1:
            await self.send_audio(packets[0], timestamp_ms)
            return
        self._check_stall()
        ws, version = self.ws, self.version
        try:
            async with ws.send_context():
                protocol = ws.protocol
                for packet in packets:
                    protocol.send_binary(encode_frame(packet, version, timestamp_ms))
                data = protocol.data_to_send()
                if all(data):  # b"" would be the end of the stream: leave it to websockets
                    ws.transport.write(b"".join(data))
                else:
                    protocol.writes[:0] = data
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self.ws.close(code, reason)
        except Exception as exc:  # closing a broken connection: nothing left to do
            log.debug("closing %s: %s", self.peer.remote, exc)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        ws = self.ws
        try:
            while True:
                self._waiting = True
                try:
                    message = await ws.recv()
                finally:
                    self._waiting = False
                if isinstance(message, str):
                    yield message
                    continue
                try:
                    payload, _ts = decode_frame(message, self.version)
                except FrameError as exc:
                    self.frame_errors += 1
                    self.metrics.frame_error("framing")
                    if self._log_limit.allow("bad_frame:"):
                        log.info("device %s: dropped malformed frame: %s", self.peer.device_id, exc)
                    continue
                yield payload
        except ConnectionClosed:
            return


_TIOCOUTQ = 0x5411  # Linux SIOCOUTQ: bytes in the socket's send queue, unacked


class _StallWatch:
    """Whether a connection's unacknowledged output has failed to drain for ``timeout``
    seconds. Reads the kernel send queue (Linux) plus asyncio's write buffer on every
    4th audio frame: one ioctl, no allocation worth the name."""

    #: A healthy device acknowledges within a round trip: the queue keeps falling
    #: below this many bytes.
    LOW_WATER = 2048

    def __init__(self, ws: ServerConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout
        sock = ws.transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.drained_at = time.monotonic()
        self.count = 0

    def backlog(self) -> int:
        queued = self.ws.transport.get_write_buffer_size()
        if self.fd >= 0:
            try:
                queued += struct.unpack("i", fcntl.ioctl(self.fd, _TIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                self.fd = -1
        return queued

    def stalled(self) -> bool:
        self.count += 1
        if self.count & 3:
            return False
        now = time.monotonic()
        if self.backlog() <= self.LOW_WATER:
            self.drained_at = now
            return False
        return now - self.drained_at > self.timeout


def describe_close(ws: ServerConnection) -> str:
    """How a connection ended, in words for the log. The firmware ends a session by
    closing TCP without a close frame: that is a normal hang-up, not "1006".

    ``closed by the device (code 1000)``, ``closed by the server (code 4001 no hello
    within 10 s)``, ``device hung up``, ``connection lost (ConnectionResetError)``.
    """
    protocol = ws.protocol
    received, sent = protocol.close_rcvd, protocol.close_sent
    if received is not None:
        reason = f" {received.reason}" if received.reason else ""
        return f"closed by the device (code {received.code}{reason})"
    if sent is not None:
        reason = f" {sent.reason}" if sent.reason else ""
        answered = "" if protocol.state is not State.CLOSED else ", no answer"
        return f"closed by the server (code {sent.code}{reason}{answered})"
    if protocol.state is not State.CLOSED:
        return "closed by the server"
    exc = getattr(ws, "connection_exc", None)
    if exc is None:
        return "device hung up"
    return f"connection lost ({type(exc).__name__})"
