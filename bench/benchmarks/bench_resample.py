"""Benchmark: the hand-written resamplers against libsoxr (python-soxr) on the hot path.

The turn pipeline resamples every TTS chunk to the device's rate in the worker pool, one
``Resampler.process`` per chunk. This times one 60 ms chunk at 16000 -> 24000 Hz (a 16 kHz
TTS to a 24 kHz device) and 22050 -> 24000 Hz (espeak's native rate), for

* ``old-core``: the core's former Kaiser-windowed sinc (24 taps, kernel evaluated per
  output sample), copied here verbatim for the comparison;
* ``old-espeak``: espeak's former polyphase filter bank (96 taps per phase, numpy);
* ``soxr-HQ`` / ``soxr-LQ``: :class:`xiaozhi_core.audio.Resampler` (libsoxr's streaming
  ``ResampleStream``), the default recipe "HQ" and the cheaper "LQ".

It also reports the delay each holds back (output missing after the first chunk), which
is added to the first frame of a reply when the TTS provider streams in 60 ms chunks.

Run: ``.venv/bin/python benchmarks/bench_resample.py [--chunks 2000]``.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from xiaozhi_core.audio import Resampler


class OldCoreResampler:
    """The core's resampler before libsoxr (xiaozhi_core/audio.py at 687b116)."""

    def __init__(self, src_rate: int, dst_rate: int, taps: int = 24) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self.step = src_rate / dst_rate
        self.half = taps // 2
        self.cutoff = min(1.0, dst_rate / src_rate) * 0.94
        self._offsets = np.arange(-self.half + 1, self.half + 1)
        self._beta = 6.0
        self._hist = np.zeros(self.half, np.float32)
        self._pos = float(self.half)

    def _kernel(self, frac: np.ndarray) -> np.ndarray:
        x = frac[:, None] - self._offsets[None, :]
        win = np.i0(self._beta * np.sqrt(np.clip(1 - (x / (self.half + 1)) ** 2, 0, 1)))
        w: np.ndarray = self.cutoff * np.sinc(self.cutoff * x) * win / np.i0(self._beta)
        return w

    def process(self, pcm: np.ndarray) -> np.ndarray:
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


# --- espeak's former polyphase resampler (plugins/xiaozhi-espeak resample.py at 687b116)
_BLOCK = 1024


def _kaiser_beta(a: float) -> float:
    if a > 50:
        return float(0.1102 * (a - 8.7))
    if a >= 21:
        return float(0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21))
    return 0.0


@functools.lru_cache(maxsize=16)
def _design(
    in_rate: int, out_rate: int, taps: int = 96, attenuation_db: float = 80.0
) -> tuple[int, int, int, np.ndarray]:
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    n = up * taps + (1 - (up * taps) % 2)
    delay = (n - 1) // 2
    nyquist = min(in_rate, out_rate) / 2
    transition = (attenuation_db - 7.95) * in_rate / (14.36 * taps)
    cutoff = max(nyquist - transition / 2, nyquist * 0.5)
    fs_up = up * in_rate
    k = np.arange(n) - delay
    proto = (2 * cutoff / fs_up) * np.sinc(2 * cutoff / fs_up * k)
    proto *= np.kaiser(n, _kaiser_beta(attenuation_db))
    proto *= up / proto.sum()
    per_phase = -(-n // up)
    padded = np.zeros(up * per_phase)
    padded[:n] = proto
    return up, down, delay, padded.reshape(per_phase, up).T.copy()


class OldEspeakResampler:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._up, self._down, self._delay, self._bank = _design(in_rate, out_rate)
        self._k = self._bank.shape[1]
        self._x = np.zeros(self._k - 1)
        self._x0 = -(self._k - 1)
        self._n_in = 0
        self._n_out = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        self._x = np.concatenate([self._x, x])
        self._n_in += len(x)
        up, down, delay, bank = self._up, self._down, self._delay, self._bank
        last = self._n_in * up - 1 - delay
        n_end = last // down + 1 if last >= 0 else 0
        taps = np.arange(self._k)
        pieces = []
        for start in range(self._n_out, n_end, _BLOCK):
            n = np.arange(start, min(start + _BLOCK, n_end), dtype=np.int64)
            t = n * down + delay
            newest = t // up - self._x0
            window = self._x[newest[:, None] - taps[None, :]]
            pieces.append(np.einsum("ij,ij->i", window, bank[t % up]))
        self._n_out = max(self._n_out, n_end)
        y = np.concatenate(pieces) if pieces else np.zeros(0)
        oldest = (self._n_out * down + delay) // up - (self._k - 1)
        drop = oldest - self._x0
        if drop > 0:
            self._x = self._x[drop:]
            self._x0 = oldest
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _time(make: Callable[[], object], chunk: np.ndarray, n: int) -> tuple[float, float, int]:
    """(median us, p99 us) per chunk over ``n`` chunks, and the samples missing after
    the first chunk (what the filter holds back)."""
    r = make()
    first = len(r.process(chunk))  # type: ignore[attr-defined]
    for _ in range(20):
        r.process(chunk)  # type: ignore[attr-defined]
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        r.process(chunk)  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(0.99 * (n - 1))] * 1e6, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=2000, help="chunks timed per case")
    args = ap.parse_args()
    print(f"{'rates':>14} {'resampler':>11} {'median us':>10} {'p99 us':>8} {'held back ms':>13}")
    for src, dst in ((16000, 24000), (22050, 24000)):
        n_in = src * 60 // 1000
        t = np.arange(n_in) / src
        chunk = np.round(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        want = n_in * dst / src
        cases: dict[str, Callable[[], object]] = {
            "old-core": lambda s=src, d=dst: OldCoreResampler(s, d),
            "old-espeak": lambda s=src, d=dst: OldEspeakResampler(s, d),
            "soxr-HQ": lambda s=src, d=dst: Resampler(s, d, "HQ"),
            "soxr-LQ": lambda s=src, d=dst: Resampler(s, d, "LQ"),
        }
        n = args.chunks
        for name, make in cases.items():
            med, p99, first = _time(make, chunk, n // 10 if name.startswith("old") else n)
            held = (want - first) / dst * 1000
            print(f"{src:>6}->{dst:<6} {name:>11} {med:>10.1f} {p99:>8.1f} {held:>13.1f}")


if __name__ == "__main__":
    main()
