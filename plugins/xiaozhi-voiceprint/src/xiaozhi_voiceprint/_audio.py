"""Audio front end of the Resemblyzer speaker encoder, in plain numpy.

The numbers are Resemblyzer's (``resemblyzer/hparams.py``): 16 kHz audio, a 25 ms Hann
window (400 samples) hopped by 10 ms (160 samples), a 40-band power mel spectrogram
with librosa's defaults (Slaney mel scale and area normalisation, 0 Hz to Nyquist,
centred frames zero-padded at both ends), volume raised (never lowered) to -30 dBFS.
The model consumes the *power* mel spectrogram, not its logarithm.

Resemblyzer also trims long silences with webrtcvad; :func:`trim_long_silences` keeps
that procedure (30 ms windows, 8-window moving average, dilation by 7 windows) but
decides speech by window energy; see its docstring.

Example:
    >>> wav = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    >>> mel_spectrogram(wav).shape
    (101, 40)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = [
    "HOP_LENGTH",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "mel_filterbank",
    "mel_spectrogram",
    "normalize_volume",
    "trim_long_silences",
]

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 40
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1

# Long-silence trimming (same window, smoothing and dilation as Resemblyzer's VAD step).
VAD_WINDOW = 480  # 30 ms
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6
NOISE_WINDOWS = 10  # 0.3 s


# ------------------------------------------------------------------ mel spectrogram
def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    logstep = math.log(6.4) / 27.0
    mel = hz / f_sp
    above = hz >= min_log_hz
    return np.where(
        above, min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mel
    )


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(
        mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), mel * f_sp
    )


@lru_cache(maxsize=4)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular mel filters, shape ``(n_mels, n_fft // 2 + 1)``, each of unit area.

    >>> fb = mel_filterbank()
    >>> fb.shape, bool((fb >= 0).all())
    ((40, 201), True)
    """
    fft_hz = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sr / 2)), n_mels + 2)
    )
    widths = np.diff(edges)
    rising = (fft_hz[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    out: np.ndarray = weights
    return out


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (the one an FFT analysis uses)."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """Power mel spectrogram of 16 kHz float audio, shape ``(frames, 40)``, float32.

    Frame ``t`` is centred on sample ``t * 160``; the signal is zero-padded by half a
    window at both ends, so there are ``1 + len(wav) // 160`` frames.
    """
    x = np.asarray(wav, np.float64)
    pad = N_FFT // 2
    x = np.pad(x, (pad, pad))
    n_frames = 1 + (len(x) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP_LENGTH][:n_frames]
    spectrum = np.fft.rfft(frames * _hann(N_FFT), axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    mel: np.ndarray = (power @ mel_filterbank().T).astype(np.float32)
    return mel


# ------------------------------------------------------------------ level and silence
def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale quiet audio up so that its RMS reaches ``target_dbfs``; louder audio is kept.

    Returns float64. The input must not be all zeros.

    >>> quiet = np.full(100, 0.001)
    >>> round(float(20 * np.log10(np.sqrt(np.mean(normalize_volume(quiet) ** 2)))), 3)
    -30.0
    """
    x = np.asarray(wav, np.float64)
    rms = float(np.sqrt(np.mean(np.square(x * INT16_MAX))))
    change_db = target_dbfs - 20 * math.log10(rms / INT16_MAX)
    if change_db <= 0:
        return x
    return x * 10 ** (change_db / 20)


def _moving_average(flags: np.ndarray, width: int) -> np.ndarray:
    padded = np.concatenate([np.zeros((width - 1) // 2), flags, np.zeros(width // 2)])
    sums = np.cumsum(padded, dtype=np.float64)
    sums[width:] = sums[width:] - sums[:-width]
    return sums[width - 1 :] / width


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a window of ``2 * radius + 1`` (``radius`` on each side)."""
    padded = np.concatenate([np.zeros(radius, bool), mask, np.zeros(radius, bool)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1)
    return np.asarray(windows.any(axis=1), bool)


def speech_mask(
    wav: np.ndarray,
    *,
    floor_dbfs: float = -60.0,
    range_db: float = 30.0,
    noise_margin_db: float = 6.0,
    hangover: int = 2,
) -> np.ndarray:
    """Per 30 ms window: is it part of a stretch of speech? (``bool``, one per window).

    A window is *voiced* when its energy is above ``floor_dbfs``, within ``range_db`` of
    the loud windows (the 95th percentile of window energies) and, when the audio holds
    a background stretch (0.3 s at least 20 dB below the loud windows), at least
    ``noise_margin_db`` above that background. A voiced window also marks the
    ``hangover`` windows after it (speech decays into silence; webrtcvad behaves
    alike). The flags are then smoothed and dilated exactly like Resemblyzer's VAD
    step, so only pauses longer than about a quarter of a second are dropped. On the
    test utterances this agrees with webrtcvad to within one or two windows at the
    ends of the speech, and it removes long pauses in noise 30 dB below the speech.
    """
    n = len(wav) // VAD_WINDOW
    if n == 0:
        return np.zeros(0, bool)
    windows = np.asarray(wav[: n * VAD_WINDOW], np.float64).reshape(n, VAD_WINDOW)
    energy_db = 10 * np.log10(np.mean(np.square(windows), axis=1) + 1e-12)
    loud = float(np.percentile(energy_db, 95))
    threshold = max(floor_dbfs, loud - range_db)
    if n >= NOISE_WINDOWS:
        # Background level: the quietest 0.3 s stretch. Speech never stays that quiet for
        # that long, so a stretch far (20 dB) below the loud windows is background noise.
        power = np.convolve(
            10 ** (energy_db / 10), np.ones(NOISE_WINDOWS) / NOISE_WINDOWS, mode="valid"
        )
        noise = 10 * float(np.log10(power.min() + 1e-12))
        if loud - noise >= 20.0:
            threshold = max(threshold, noise + noise_margin_db)
    voiced = energy_db > threshold
    for k in range(1, hangover + 1):
        voiced[k:] |= voiced[:-k]
    smoothed = np.round(_moving_average(voiced.astype(np.float64), VAD_AVERAGE_WIDTH))
    # Resemblyzer dilates with VAD_MAX_SILENCE + 1 ones: 3 windows on each side.
    return _dilate(smoothed.astype(bool), (VAD_MAX_SILENCE + 1) // 2)


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """Drop pauses longer than ~0.25 s (and the tail that is not a whole 30 ms window).

    Resemblyzer runs webrtcvad (mode 3) on 30 ms windows, smooths the decisions with an
    8-window moving average, dilates the voiced regions by 3 windows each side and keeps the
    voiced samples. This function does the same with an energy decision
    (:func:`speech_mask`) instead of webrtcvad's, which is native code: the audio this
    server sees was already cut by its own VAD, so all that is left to do here is to
    drop long pauses and the trailing silence that ends a turn.

    >>> speech = np.sin(np.arange(16000) / 5) * 0.1  # 1 s
    >>> wav = np.concatenate([speech, np.zeros(16000), speech])  # a 1 s pause inside
    >>> len(trim_long_silences(wav)) / 16000  # 2 s of speech + 0.28 s of the pause
    2.28
    """
    mask = speech_mask(wav)
    n = len(mask) * VAD_WINDOW
    kept: np.ndarray = np.asarray(wav[:n])[np.repeat(mask, VAD_WINDOW)]
    return kept
