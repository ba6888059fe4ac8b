"""Real, tiny test images without Pillow: a PNG written by hand (zlib), a JPEG encoded by
FFmpeg's MJPEG encoder through PyAV (installed with the whisper provider's dependencies).

Example:
    >>> data = png(4, 3)
    >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", len(data) > 50
    (True, True)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["jpeg", "png", "pattern"]


def pattern(width: int, height: int) -> np.ndarray:
    """An RGB gradient with a red square in the middle, ``(height, width, 3)`` uint8.

    >>> pattern(8, 6).shape
    (6, 8, 3)
    """
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), np.full_like(x, 96)], axis=-1
    ).astype(np.uint8)
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (220, 20, 30)
    return rgb


def png(width: int = 64, height: int = 48, rgb: np.ndarray | None = None) -> bytes:
    """An 8-bit RGB PNG (filter 0 on every row, one IDAT chunk)."""
    pixels = pattern(width, height) if rgb is None else rgb
    height, width = pixels.shape[:2]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int = 64, height: int = 48, quality: int = 5) -> bytes:
    """A baseline JFIF JPEG of :func:`pattern` (``quality``: MJPEG qscale, 2..31)."""
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.options = {"qscale": str(quality)}
    frame = av.VideoFrame.from_ndarray(pattern(width, height), format="rgb24")
    packets = codec.encode(frame.reformat(format="yuvj420p")) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)
