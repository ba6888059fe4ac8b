"""The xiaozhi device protocol, pure and I/O-free: JSON messages, binary framing v1/v2/v3
and Opus helpers. See ``docs/architecture.md`` and the wire contract in PROTOCOL.md."""

from .framing import FrameError, decode_frame, encode_frame
from .messages import EMOTIONS, ProtocolError, parse_message

__all__ = [
    "EMOTIONS",
    "FrameError",
    "ProtocolError",
    "decode_frame",
    "encode_frame",
    "parse_message",
]
