"""Small audio helpers: a streaming windowed-sinc resampler and format conversions.

Example:
    >>> import numpy as np
    >>> r = Resampler(16000, 24000)
    >>> out = np.concatenate([r.process(np.zeros(1600, np.int16)), r.flush()])
    >>> len(out)
    2400
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Resampler", "float_to_int16", "int16_to_float", "read_wav", "resample", "write_wav"]


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
        self._in = 0
        self._out = 0

    def _kernel(self, frac: np.ndarray) -> np.ndarray:
        x = frac[:, None] - self._offsets[None, :]
        win = np.i0(self._beta * np.sqrt(np.clip(1 - (x / (self.half + 1)) ** 2, 0, 1)))
        w: np.ndarray = self.cutoff * np.sinc(self.cutoff * x) * win / np.i0(self._beta)
        return w

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Resample one chunk; output is int16."""
        if self._passthrough:
            return pcm.astype(np.int16, copy=False)
        self._in += len(pcm)
        out = self._run(pcm)
        self._out += len(out)
        return out

    def _run(self, pcm: np.ndarray) -> np.ndarray:
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
        """Emit the tail held back for the filter, so that the whole stream comes out
        with exactly ``round(n_in * dst / src)`` samples; then start afresh."""
        if self._passthrough:
            return np.zeros(0, np.int16)
        want = round(self._in * self.dst_rate / self.src_rate) - self._out
        out = self._run(np.zeros(self.half + int(math.ceil(self.step)) + 1, np.int16))
        self._hist = np.zeros(self.half, np.float32)
        self._pos = float(self.half)
        self._in = self._out = 0
        return out[:max(0, want)]


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole int16 signal."""
    r = Resampler(src_rate, dst_rate)
    return np.concatenate([r.process(pcm), r.flush()])


def read_wav(path: str, rate: int = 16000) -> np.ndarray:
    """A PCM WAV file (8/16/24/32-bit, any rate, mono or stereo) as int16 mono at ``rate``.

    >>> import tempfile, wave, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.wav")
    >>> with wave.open(p, "wb") as w:
    ...     w.setnchannels(2); w.setsampwidth(2); w.setframerate(8000)
    ...     w.writeframes(np.zeros(1600, np.int16).tobytes())
    >>> read_wav(p).shape
    (1600,)
    """
    import wave

    try:
        with wave.open(path, "rb") as w:
            channels, width, src = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc}); convert it, e.g. "
                         f"'sox in.mp3 -b 16 out.wav'") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        v = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8)
             | (b[:, 2].astype(np.int32) << 16))
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float32) / (1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    else:
        raise ValueError(f"{path}: unsupported sample width {width * 8} bits")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    pcm = float_to_int16(x)
    return resample(pcm, src, rate) if src != rate else pcm


def write_wav(path: str, pcm: np.ndarray, rate: int) -> None:
    """Write int16 mono audio as a 16-bit PCM WAV file."""
    import wave

    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
