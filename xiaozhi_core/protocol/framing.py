"""Binary audio frames, protocol versions 1, 2 and 3 (big-endian headers).

* v1: the whole frame is one Opus packet;
* v2: ``u16 version=2, u16 type=0, u32 reserved, u32 timestamp_ms, u32 payload_size``;
* v3: ``u8 type=0, u8 reserved, u16 payload_size``.

The same layout is used in both directions. A malformed header is a :class:`FrameError`
for that frame only.

Example:
    >>> frame = encode_frame(b"\\x01\\x02", version=3)
    >>> frame.hex()
    '000000020102'
    >>> decode_frame(frame, version=3)
    (b'\\x01\\x02', None)
    >>> decode_frame(encode_frame(b"ab", version=2, timestamp=60), version=2)
    (b'ab', 60)
"""

from __future__ import annotations

import struct

__all__ = ["FrameError", "decode_frame", "encode_frame"]

_V2 = struct.Struct(">HHIII")
_V3 = struct.Struct(">BBH")
TYPE_OPUS = 0


class FrameError(ValueError):
    """A binary frame that does not follow its protocol version's layout."""


def decode_frame(data: bytes, version: int) -> tuple[bytes, int | None]:
    """Return ``(opus_payload, timestamp_ms or None)`` of one binary frame."""
    if version == 1:
        return bytes(data), None
    if version == 2:
        if len(data) < _V2.size:
            raise FrameError(f"v2 frame of {len(data)} bytes is shorter than its 16-byte header")
        ver, typ, _reserved, timestamp, size = _V2.unpack_from(data)
        if ver != 2:
            raise FrameError(f"v2 frame carries version field {ver}, expected 2")
        if typ != TYPE_OPUS:
            raise FrameError(f"v2 frame type {typ} is not Opus (0)")
        if size != len(data) - _V2.size:
            raise FrameError(
                f"v2 frame payload_size {size} does not match the {len(data) - _V2.size} "
                "bytes that follow the header"
            )
        return bytes(data[_V2.size :]), timestamp
    if version == 3:
        if len(data) < _V3.size:
            raise FrameError(f"v3 frame of {len(data)} bytes is shorter than its 4-byte header")
        typ, _reserved, size = _V3.unpack_from(data)
        if typ != TYPE_OPUS:
            raise FrameError(f"v3 frame type {typ} is not Opus (0)")
        if size != len(data) - _V3.size:
            raise FrameError(
                f"v3 frame payload_size {size} does not match the {len(data) - _V3.size} "
                "bytes that follow the header"
            )
        return bytes(data[_V3.size :]), None
    raise FrameError(f"unknown binary protocol version {version} (supported: 1, 2, 3)")


def encode_frame(payload: bytes, version: int, timestamp: int = 0) -> bytes:
    """Wrap one Opus packet for protocol ``version``."""
    if version == 1:
        return payload
    if version == 2:
        return _V2.pack(2, TYPE_OPUS, 0, timestamp & 0xFFFFFFFF, len(payload)) + payload
    if version == 3:
        if len(payload) > 0xFFFF:
            raise FrameError(f"v3 payload of {len(payload)} bytes exceeds 65535")
        return _V3.pack(TYPE_OPUS, 0, len(payload)) + payload
    raise FrameError(f"unknown binary protocol version {version} (supported: 1, 2, 3)")
