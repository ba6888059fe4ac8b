"""A streaming polyphase resampler (Kaiser-windowed sinc), in numpy only.

libespeak-ng renders at 22050 Hz; the provider speaks 16000 or 24000 Hz. The ratio is
rational (``out/in = L/M`` after dividing by the gcd: 160/147 for 24 kHz, 320/441 for
16 kHz), so each output sample is one dot product of ``taps`` input samples with one
*phase* of a low-pass prototype filter designed at ``L * in_rate``. The filter's cut-off
sits below the lower of the two Nyquist frequencies so that nothing aliases (down) and no
images appear (up).

The resampler keeps its state between calls, so audio can be pushed in arbitrary pieces
and the output is identical to resampling everything at once; ``final=True`` drains the
filter's tail. The output has ``ceil(n_in * out_rate / in_rate)`` samples, time-aligned
with the input (the filter delay is compensated).

Example:
    >>> import numpy as np
    >>> r = PolyphaseResampler(22050, 16000)
    >>> x = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)
    >>> y = np.concatenate([r.process(x[:1000]), r.process(x[1000:], final=True)])
    >>> len(y)
    16000
    >>> bool(np.allclose(y, resample(x, 22050, 16000)))
    True
    >>> t = np.arange(16000) / 16000
    >>> bool(np.max(np.abs(y[500:-500] - np.sin(2 * np.pi * 440 * t[500:-500]))) < 1e-3)
    True
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["PolyphaseResampler", "design_filter_bank", "resample"]

#: Output samples computed per vectorised block (bounds the temporary gather matrix).
_BLOCK = 1024


def _kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical beta for a stop-band attenuation in dB."""
    a = attenuation_db
    if a > 50:
        return float(0.1102 * (a - 8.7))
    if a >= 21:
        return float(0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21))
    return 0.0


@functools.lru_cache(maxsize=16)
def design_filter_bank(
    in_rate: int, out_rate: int, taps: int = 96, attenuation_db: float = 80.0
) -> tuple[int, int, int, np.ndarray]:
    """Design the polyphase bank for ``in_rate -> out_rate``.

    Returns ``(L, M, delay, bank)`` where ``bank[p, i]`` is coefficient ``p + i * L`` of
    the prototype filter (``bank`` has shape ``(L, taps_per_phase)``) and ``delay`` is
    the prototype's group delay in samples at ``L * in_rate``.

    ``taps`` is the filter length per phase, in input samples: the transition band is
    about ``(attenuation_db - 8) * in_rate / (14.36 * taps)`` Hz wide (~1.15 kHz at
    22.05 kHz with the defaults) and ends at the lower Nyquist frequency.

    >>> L, M, delay, bank = design_filter_bank(22050, 24000)
    >>> (L, M), bank.shape[0]
    ((160, 147), 160)
    >>> round(float(bank.sum()) / L, 6)  # unity gain at DC
    1.0
    """
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    if taps < 4:
        raise ValueError("taps must be >= 4")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    # Odd prototype length so that its group delay is a whole number of samples.
    n = up * taps + (1 - (up * taps) % 2)
    delay = (n - 1) // 2
    nyquist = min(in_rate, out_rate) / 2
    transition = (attenuation_db - 7.95) * in_rate / (14.36 * taps)
    cutoff = max(nyquist - transition / 2, nyquist * 0.5)  # -6 dB point, in Hz
    fs_up = up * in_rate
    k = np.arange(n) - delay
    proto = (2 * cutoff / fs_up) * np.sinc(2 * cutoff / fs_up * k)
    proto *= np.kaiser(n, _kaiser_beta(attenuation_db))
    proto *= up / proto.sum()  # interpolation gain L, exactly unity at DC
    per_phase = -(-n // up)
    padded = np.zeros(up * per_phase)
    padded[:n] = proto
    bank = padded.reshape(per_phase, up).T.copy()  # bank[p, i] = proto[p + i * up]
    bank.setflags(write=False)
    return up, down, delay, bank


class PolyphaseResampler:
    """Stateful resampler: feed blocks with :meth:`process`, finish with ``final=True``.

    Works in float64 on whatever scale the input has (int16 input stays on the int16
    scale; convert and clip the output yourself).
    """

    def __init__(self, in_rate: int, out_rate: int, *, taps: int = 96,
                 attenuation_db: float = 80.0) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._up, self._down, self._delay, self._bank = design_filter_bank(
            in_rate, out_rate, taps, attenuation_db
        )
        self._k = self._bank.shape[1]
        # Input history; _x[i] is input sample number _x0 + i (negative ones are zeros).
        self._x = np.zeros(self._k - 1)
        self._x0 = -(self._k - 1)
        self._n_in = 0  # input samples received
        self._n_out = 0  # output samples produced
        self._done = False

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def _compute(self, n_end: int) -> np.ndarray:
        up, down, delay, bank = self._up, self._down, self._delay, self._bank
        taps = np.arange(self._k)
        pieces = []
        for start in range(self._n_out, n_end, _BLOCK):
            n = np.arange(start, min(start + _BLOCK, n_end), dtype=np.int64)
            t = n * down + delay
            newest = t // up - self._x0  # buffer index of the newest input sample used
            window = self._x[newest[:, None] - taps[None, :]]
            pieces.append(np.einsum("ij,ij->i", window, bank[t % up]))
        self._n_out = max(self._n_out, n_end)
        return np.concatenate(pieces) if pieces else np.zeros(0)

    def process(self, x: np.ndarray, *, final: bool = False) -> np.ndarray:
        """Resample the next block of input; returns the output samples now computable.

        With ``final=True`` the stream ends: the remaining output (the filter's tail,
        computed against zeros after the last input sample) is returned, and the
        resampler refuses further input.
        """
        if self._done:
            raise RuntimeError("resampler already finished (process(..., final=True) was called)")
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.passthrough:
            self._done = final
            return x.copy()
        self._x = np.concatenate([self._x, x])
        self._n_in += len(x)
        up, down, delay = self._up, self._down, self._delay
        if final:
            self._done = True
            n_end = -(-self._n_in * up // down)
            if n_end > self._n_out:
                newest = ((n_end - 1) * down + delay) // up
                missing = newest - (self._x0 + len(self._x) - 1)
                if missing > 0:
                    self._x = np.concatenate([self._x, np.zeros(missing)])
        else:
            # Largest n whose newest input sample (n*M + delay) // L has arrived.
            last = self._n_in * up - 1 - delay
            n_end = last // down + 1 if last >= 0 else 0
        y = self._compute(n_end)
        # Drop history no future output needs.
        oldest = (self._n_out * down + delay) // up - (self._k - 1)
        drop = oldest - self._x0
        if drop > 0:
            self._x = self._x[drop:]
            self._x0 = oldest
        return y


def resample(x: np.ndarray, in_rate: int, out_rate: int, *, taps: int = 96,
             attenuation_db: float = 80.0) -> np.ndarray:
    """Resample a whole signal at once (float64 out, same scale as the input).

    >>> resample(np.ones(441), 22050, 16000).shape
    (320,)
    """
    return PolyphaseResampler(in_rate, out_rate, taps=taps,
                              attenuation_db=attenuation_db).process(x, final=True)
