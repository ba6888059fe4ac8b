"""The core's resampler (libsoxr) and WAV reader: quality, stream bookkeeping, formats.

The quality checks were written for the hand-written resamplers soxr replaced (espeak's
22050 Hz output to 16/24 kHz, the session's TTS rate to the device's rate); they hold
for soxr's "HQ" recipe unchanged, except that the output length is rounded, not ceiled.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest

from xiaozhi_core.audio import Resampler, WavError, read_wav, resample, wav_rate, write_wav

PAIRS = [(22050, 16000), (22050, 24000), (16000, 24000), (24000, 16000), (44100, 16000)]


def sine(
    freq: float, rate: int, seconds: float, amplitude: float = 0.5, phase: float = 0.0
) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * math.pi * freq * t + phase)


def peak_frequency(x: np.ndarray, rate: int) -> float:
    """Peak of a Hann-windowed spectrum, refined by parabolic interpolation."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * rate / len(x)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
@pytest.mark.parametrize("freq", [220.0, 1000.0, 3150.0])
def test_sine_keeps_frequency_amplitude_and_timing(src: int, dst: int, freq: float) -> None:
    x = sine(freq, src, 2.0, amplitude=0.5, phase=0.3)
    y = resample(x, src, dst)
    assert len(y) == round(len(x) * dst / src)
    inner = y[2000:-2000]  # away from the edges, where the filter sees the zero padding
    assert peak_frequency(inner, dst) == pytest.approx(freq, rel=1e-4)
    assert np.sqrt(2 * np.mean(inner**2)) == pytest.approx(0.5, rel=2e-3)
    # Sample-accurate: the output IS the same sine sampled at the new rate (delay
    # compensated), to better than -70 dB.
    ideal = sine(freq, dst, len(y) / dst, amplitude=0.5, phase=0.3)
    assert np.max(np.abs(inner - ideal[2000:-2000])) < 0.5 * 10 ** (-70 / 20)


def test_passband_is_flat_up_to_speech_band() -> None:
    for src, dst, top in ((22050, 16000, 6500.0), (22050, 24000, 9500.0), (16000, 24000, 7000.0)):
        for freq in (100.0, 2000.0, top):
            y = resample(sine(freq, src, 1.0), src, dst)[1000:-1000]
            gain = np.sqrt(2 * np.mean(y**2)) / 0.5
            assert gain == pytest.approx(1.0, abs=0.01), (src, dst, freq, gain)


@pytest.mark.parametrize("freq", [8600.0, 9500.0, 10500.0])
def test_no_aliasing_when_downsampling_to_16k(freq: float) -> None:
    # Above 8 kHz nothing may survive: it would fold back into the audible band.
    y = resample(sine(freq, 22050, 1.0), 22050, 16000)[1000:-1000]
    level_db = 20 * np.log10(np.sqrt(2 * np.mean(y**2)) / 0.5)
    assert level_db < -70, level_db


def test_no_imaging_when_upsampling_to_24k() -> None:
    # A 10 kHz tone at 22.05 kHz has an image at 12.05 kHz once upsampled; it must be gone.
    y = resample(sine(10000.0, 22050, 1.0), 22050, 24000)[1000:-1000]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 24000)
    tone = spec[np.abs(freqs - 10000) < 50].max()
    image = spec[np.abs(freqs - 12050) < 50].max()
    assert 20 * np.log10(image / tone) < -70


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_stream_matches_one_shot_and_has_the_promised_length(src: int, dst: int) -> None:
    rng = np.random.default_rng(7)
    x = np.round(rng.standard_normal(src * 2) * 3000).astype(np.int16)
    whole = resample(x, src, dst)
    r = Resampler(src, dst)
    for _ in range(2):  # flush() starts a fresh stream: the second pass is the same
        pieces, i = [], 0
        while i < len(x):
            n = int(rng.integers(0, 2500))  # includes empty pushes
            pieces.append(r.process(x[i : i + n]))
            i += n
        pieces.append(r.flush())
        streamed = np.concatenate(pieces)
        assert streamed.dtype == np.int16
        assert len(streamed) == round(len(x) * dst / src) == len(whole)
        # int16 in and out: libsoxr rounds (and may dither) chunk by chunk
        diff = np.abs(streamed.astype(int) - whole)
        assert diff.max() <= 3 and diff.mean() < 0.7


@pytest.mark.parametrize("n", [0, 1, 2, 146, 147, 148, 441, 959, 960, 961, 1000, 22050])
@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_stream_length_for_odd_sizes(n: int, src: int, dst: int) -> None:
    r = Resampler(src, dst)
    out = np.concatenate([r.process(np.full(n, 1000, np.int16)), r.flush()])
    assert len(out) == round(n * dst / src)


def test_dc_gain_and_passthrough() -> None:
    y = resample(np.full(22050, 1000.0), 22050, 24000)[200:-200]
    np.testing.assert_allclose(y, 1000.0, atol=0.05)
    r = Resampler(16000, 16000)
    x = np.arange(10, dtype=np.int16)
    np.testing.assert_array_equal(r.process(x), x)
    assert len(r.flush()) == 0
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 16000)


def _write(path: Path, data: np.ndarray, rate: int, width: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def test_read_wav_formats(tmp_path: Path) -> None:
    left = np.array([1000, -2000, 3000], np.int16)
    stereo = np.stack([left, -left], axis=1)
    p = _write(tmp_path / "s16.wav", stereo, 44100, 2, channels=2)
    assert wav_rate(p) == 44100 and read_wav(p, None).tolist() == [0, 0, 0]  # averaged
    assert read_wav(_write(tmp_path / "m16.wav", left, 8000, 2), None).tolist() == [
        1000,
        -2000,
        3000,
    ]
    u8 = np.array([128, 255, 0], np.uint8)
    assert read_wav(_write(tmp_path / "u8.wav", u8, 16000, 1)).tolist() == [0, 32512, -32768]
    v24 = np.array([1 << 22, -(1 << 22)], np.int32)
    raw = np.frombuffer(v24.astype("<i4").tobytes(), np.uint8).reshape(-1, 4)[:, :3].copy()
    assert read_wav(_write(tmp_path / "s24.wav", raw, 16000, 3)).tolist() == [16384, -16384]
    s32 = _write(tmp_path / "s32.wav", np.array([1 << 30], "<i4"), 16000, 4)
    assert read_wav(s32).tolist() == [16384]


def test_read_wav_resamples(tmp_path: Path) -> None:
    x = np.round(sine(440.0, 44100, 1.3, amplitude=8000)).astype(np.int16)
    pcm = read_wav(_write(tmp_path / "a.wav", np.stack([x, x], axis=1), 44100, 2, 2))
    assert pcm.dtype == np.int16 and len(pcm) == round(len(x) * 16000 / 44100)
    assert peak_frequency(pcm[1000:-1000].astype(float), 16000) == pytest.approx(440, rel=1e-3)
    out = tmp_path / "b.wav"
    write_wav(out, pcm, 16000)
    np.testing.assert_array_equal(read_wav(out), pcm)


def test_read_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="does not exist"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "not.wav").write_bytes(b"ID3 this is an mp3")
    with pytest.raises(WavError, match=r"cannot read .* as a PCM WAV file .*sox not\.wav"):
        read_wav(tmp_path / "not.wav")
    with pytest.raises(WavError, match="holds no audio"):
        read_wav(_write(tmp_path / "empty.wav", np.zeros(0, np.int16), 16000, 2))
    assert issubclass(WavError, ValueError)
