"""The numpy front end: mel filterbank, spectrogram, level, trimming, resampling, WAV I/O."""

from __future__ import annotations

import numpy as np
from xiaozhi_voiceprint import _audio
from xiaozhi_voiceprint._encoder import partial_slices


def test_mel_filterbank_shape_and_slaney_normalisation() -> None:
    fb = _audio.mel_filterbank()
    assert fb.shape == (40, 201)
    # Slaney area normalisation: each triangle's peak is 2 / (its width in Hz).
    edges = _audio._mel_to_hz(np.linspace(0, _audio._hz_to_mel(np.array(8000.0)), 42))
    bin_hz = 8000 / 200
    for m in (0, 10, 39):
        width = edges[m + 2] - edges[m]
        assert fb[m].max() <= 2 / width + 1e-12
        assert abs(fb[m].sum() * bin_hz - 1.0) < 0.35  # about unit area (coarse bins)
    # Filters are ordered by centre frequency and cover the band up to Nyquist.
    assert np.all(np.diff(fb.argmax(axis=1)) >= 0)
    assert fb[:, -1].sum() == 0.0 and fb[-1, -3] > 0


def test_slaney_mel_scale_is_linear_then_log() -> None:
    hz = np.array([0.0, 200.0, 1000.0, 6400.0])
    mel = _audio._hz_to_mel(hz)
    np.testing.assert_allclose(mel, [0.0, 3.0, 15.0, 42.0], atol=1e-9)
    np.testing.assert_allclose(_audio._mel_to_hz(mel), hz, atol=1e-9)


def test_mel_spectrogram_frames_and_peak_band() -> None:
    t = np.arange(16000) / 16000
    wav = 0.5 * np.sin(2 * np.pi * 1000 * t)
    mel = _audio.mel_spectrogram(wav)
    assert mel.shape == (1 + 16000 // 160, 40) and mel.dtype == np.float32
    centres = _audio._mel_to_hz(np.linspace(0, _audio._hz_to_mel(np.array(8000.0)), 42))[1:-1]
    peak = int(mel[50].argmax())
    assert abs(centres[peak] - 1000) < 120
    # Power spectrum: doubling the amplitude multiplies it by 4.
    np.testing.assert_allclose(_audio.mel_spectrogram(2 * wav)[50], 4 * mel[50], rtol=1e-5)


def test_normalize_volume_only_raises() -> None:
    loud = np.full(1000, 0.5)
    assert np.array_equal(_audio.normalize_volume(loud), loud)
    quiet = np.full(1000, 0.001)
    out = _audio.normalize_volume(quiet)
    assert abs(20 * np.log10(np.sqrt(np.mean(out**2))) - (-30)) < 1e-9


def test_trim_long_silences_in_background_noise() -> None:
    rng = np.random.default_rng(3)
    speech = 0.3 * np.sin(np.arange(16000) * 0.3) * (1 + np.sin(np.arange(16000) / 900))
    gap = np.zeros(24000)
    wav = np.concatenate([speech, gap, speech, gap]) + rng.normal(0, 10 ** (-50 / 20), 80000)
    trimmed = _audio.trim_long_silences(wav)
    # Both seconds of speech stay, each 1.5 s pause shrinks to the dilation margins.
    assert 32000 <= len(trimmed) <= 32000 + 2 * 480 * 8
    # A short pause (0.15 s) is kept.
    short = np.concatenate([speech, np.zeros(2400), speech])
    assert len(_audio.trim_long_silences(short)) == len(short) // 480 * 480


def test_partial_slices_follow_resemblyzer() -> None:
    # 77-frame hop, 160-frame windows; the last window needs 75 % real audio.
    assert partial_slices(16000 * 3) == [(0, 160), (77, 237), (154, 314)]
    assert partial_slices(55200) == [(0, 160), (77, 237), (154, 314)]  # 71 % coverage
    assert partial_slices(56160) == [(0, 160), (77, 237), (154, 314), (231, 391)]  # 75 %
    assert partial_slices(100) == [(0, 160)]
