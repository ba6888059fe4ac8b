"""Quality of the numpy polyphase resampler used to go from espeak's 22050 Hz to 16/24 kHz."""

from __future__ import annotations

import math

import numpy as np
import pytest
from xiaozhi_espeak.resample import PolyphaseResampler, design_filter_bank, resample

IN_RATE = 22050


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5,
         phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * math.pi * freq * t + phase)


def peak_frequency(x: np.ndarray, rate: int) -> float:
    """Peak of a Hann-windowed spectrum, refined by parabolic interpolation."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * rate / len(x)


@pytest.mark.parametrize("out_rate", [16000, 24000])
@pytest.mark.parametrize("freq", [220.0, 1000.0, 3150.0])
def test_sine_keeps_frequency_amplitude_and_timing(out_rate: int, freq: float) -> None:
    x = sine(freq, IN_RATE, 2.0, amplitude=0.5, phase=0.3)
    y = resample(x, IN_RATE, out_rate)
    assert len(y) == math.ceil(len(x) * out_rate / IN_RATE)
    inner = y[2000:-2000]  # away from the edges, where the filter sees the zero padding
    assert peak_frequency(inner, out_rate) == pytest.approx(freq, rel=1e-4)
    assert np.sqrt(2 * np.mean(inner**2)) == pytest.approx(0.5, rel=2e-3)
    # Sample-accurate: the output IS the same sine sampled at the new rate (delay
    # compensated), to better than -70 dB.
    ideal = sine(freq, out_rate, len(y) / out_rate, amplitude=0.5, phase=0.3)
    assert np.max(np.abs(inner - ideal[2000:-2000])) < 0.5 * 10 ** (-70 / 20)


def test_passband_is_flat_up_to_speech_band() -> None:
    for out_rate, top in ((16000, 6500.0), (24000, 9500.0)):
        for freq in (100.0, 2000.0, top):
            y = resample(sine(freq, IN_RATE, 1.0), IN_RATE, out_rate)[1000:-1000]
            gain = np.sqrt(2 * np.mean(y**2)) / 0.5
            assert gain == pytest.approx(1.0, abs=0.01), (out_rate, freq, gain)


@pytest.mark.parametrize("freq", [8600.0, 9500.0, 10500.0])
def test_no_aliasing_when_downsampling_to_16k(freq: float) -> None:
    # Above 8 kHz nothing may survive: it would fold back into the audible band.
    y = resample(sine(freq, IN_RATE, 1.0), IN_RATE, 16000)[1000:-1000]
    level_db = 20 * np.log10(np.sqrt(2 * np.mean(y**2)) / 0.5)
    assert level_db < -70, level_db


def test_no_imaging_when_upsampling_to_24k() -> None:
    # A 10 kHz tone at 22.05 kHz has an image at 12.05 kHz once upsampled; it must be gone.
    y = resample(sine(10000.0, IN_RATE, 1.0), IN_RATE, 24000)[1000:-1000]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 24000)
    tone = spec[np.abs(freqs - 10000) < 50].max()
    image = spec[np.abs(freqs - 12050) < 50].max()
    assert 20 * np.log10(image / tone) < -70


@pytest.mark.parametrize("out_rate", [16000, 24000])
def test_streaming_equals_one_shot(out_rate: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal(IN_RATE * 2) * 3000
    whole = resample(x, IN_RATE, out_rate)
    r = PolyphaseResampler(IN_RATE, out_rate)
    pieces, i = [], 0
    while i < len(x):
        n = int(rng.integers(0, 2500))  # includes empty pushes
        pieces.append(r.process(x[i:i + n]))
        i += n
    pieces.append(r.process(np.zeros(0), final=True))
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [0, 1, 2, 146, 147, 148, 441, 1000, 22050])
@pytest.mark.parametrize("out_rate", [16000, 24000])
def test_output_length(n: int, out_rate: int) -> None:
    assert len(resample(np.ones(n), IN_RATE, out_rate)) == math.ceil(n * out_rate / IN_RATE)


def test_dc_gain_and_filter_bank() -> None:
    for out_rate in (16000, 24000):
        up, down, delay, bank = design_filter_bank(IN_RATE, out_rate)
        assert (up * IN_RATE) % out_rate == 0 and up * IN_RATE // down == out_rate
        assert bank.sum() == pytest.approx(up)
        y = resample(np.full(IN_RATE, 1000.0), IN_RATE, out_rate)[200:-200]
        np.testing.assert_allclose(y, 1000.0, atol=1e-6 * 1000 + 0.05)


def test_same_rate_is_identity_and_finished_resampler_refuses_input() -> None:
    x = np.arange(10.0)
    r = PolyphaseResampler(22050, 22050)
    np.testing.assert_array_equal(r.process(x, final=True), x)
    r = PolyphaseResampler(22050, 16000)
    r.process(x, final=True)
    with pytest.raises(RuntimeError, match="already finished"):
        r.process(x)
