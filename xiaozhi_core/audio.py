"""Small audio helpers: a streaming windowed-sinc resampler and format conversions.

Example:
    >>> import numpy as np
    >>> r = Resampler(16000, 24000)
    >>> out = np.concatenate([r.process(np.zeros(1600, np.int16)), r.flush()])
    >>> abs(len(out) - 2400) <= 1
    True
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Resampler", "float_to_int16", "int16_to_float", "resample"]


def int16_to_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def float_to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


class Resampler:
    """Stateful resampler for mono int16 streams (chunks may have any length).

    A Kaiser-windowed sinc kernel of ``taps`` input samples, evaluated at the exact
    fractional positions; the cutoff follows the lower of the two Nyquist rates, so
    downsampling is anti-aliased.
    """

    def __init__(self, src_rate: int, dst_rate: int, taps: int = 24) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self.step = src_rate / dst_rate
        self.half = taps // 2
        self.cutoff = min(1.0, dst_rate / src_rate) * 0.94
        self._offsets = np.arange(-self.half + 1, self.half + 1)
        self._beta = 6.0
        self._hist = np.zeros(self.half, np.float32)
        self._pos = float(self.half)
        self._passthrough = src_rate == dst_rate

    def _kernel(self, frac: np.ndarray) -> np.ndarray:
        x = frac[:, None] - self._offsets[None, :]
        win = np.i0(self._beta * np.sqrt(np.clip(1 - (x / (self.half + 1)) ** 2, 0, 1)))
        w: np.ndarray = self.cutoff * np.sinc(self.cutoff * x) * win / np.i0(self._beta)
        return w

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Resample one chunk; output is int16."""
        if self._passthrough:
            return pcm.astype(np.int16, copy=False)
        buf = np.concatenate([self._hist, pcm.astype(np.float32)])
        last = len(buf) - 1 - self.half
        if last < self._pos:
            self._hist = buf
            return np.zeros(0, np.int16)
        m = int(math.floor((last - self._pos) / self.step)) + 1
        positions = self._pos + np.arange(m) * self.step
        base = np.floor(positions).astype(np.int64)
        idx = base[:, None] + self._offsets[None, :]
        out = np.sum(buf[idx] * self._kernel(positions - base), axis=1)
        new_pos = self._pos + m * self.step
        drop = max(0, int(math.floor(new_pos)) - self.half)
        self._hist = buf[drop:]
        self._pos = new_pos - drop
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)

    def flush(self) -> np.ndarray:
        """Emit the tail held back for the filter."""
        if self._passthrough:
            return np.zeros(0, np.int16)
        out = self.process(np.zeros(self.half, np.int16))
        self._hist = np.zeros(self.half, np.float32)
        self._pos = float(self.half)
        return out


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole int16 signal."""
    r = Resampler(src_rate, dst_rate)
    return np.concatenate([r.process(pcm), r.flush()])
