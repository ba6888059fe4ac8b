"""On real speech (espeak-ng) the provider + segmenter find it; on silence/noise they do not."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from xiaozhi_silero.plugin import SileroOptions
from xiaozhi_silero.vad import SileroVAD

from xiaozhi_core.config import SessionSettings
from xiaozhi_core.session.segmenter import segmentation_params

W = 512
SR = 16000


def probabilities(vad: SileroVAD, audio: np.ndarray) -> np.ndarray:
    state = vad.initial_state()
    out = []
    for k in range(len(audio) // W):
        p, (state,) = vad.speech_probs(audio[None, k * W : (k + 1) * W], [state])
        out.append(p[0])
    return np.array(out)


def detected(vad: SileroVAD, audio: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of each utterance the core's segmenter cuts from this VAD's
    probabilities with the segmentation the provider declares (end = the first window of
    the silence that ended it)."""
    params = segmentation_params(SessionSettings(), vad.segmentation)
    seg = params.segmenter(SR, W)
    silence = -(-params.silence_ms * SR // 1000 // W) * W  # whole windows
    pcm = (audio * 32767).astype(np.int16)
    out: list[tuple[int, int]] = []
    start = 0
    for k, p in enumerate(probabilities(vad, audio)):
        pos = (k + 1) * W
        for event in seg.feed(pcm[k * W : pos], float(p)):
            assert event.audio is not None
            if event.kind == "start":
                start = pos - len(event.audio)
            else:
                out.append((start, pos - silence))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("noise_rms", [0.0, 0.003])
def test_speech_between_silences_is_one_utterance(
    vad: SileroVAD, speech: Callable[..., np.ndarray], noise_rms: float
) -> None:
    rng = np.random.default_rng(1)
    talk = speech("Hello, this is a test of the voice activity detector. It should find my speech.")
    pad = SR * 3 // 2
    audio = np.concatenate([np.zeros(pad), talk, np.zeros(pad)]).astype(np.float32)
    audio += (rng.standard_normal(len(audio)) * noise_rms).astype(np.float32)
    onset, offset = pad, pad + len(talk)
    o = vad.options
    tol = SR // 10  # 100 ms

    (segment,) = detected(vad, audio)
    start, end = segment
    # Covers the spoken part (start includes the pre-roll, end is the first silent window)...
    assert start <= onset and end >= offset - tol
    # ...and not the silence around it beyond pre-roll and window granularity.
    pre_roll = o.pre_roll_ms * SR // 1000
    assert start >= onset - pre_roll - W - tol
    assert end <= offset + W + tol

    probs = probabilities(vad, audio)
    in_pad = np.r_[: (onset - tol) // W, (offset + tol) // W + 1 : len(probs)]
    assert probs[in_pad].max() < o.release_threshold
    spoken = probs[onset // W : offset // W]
    assert np.mean(spoken >= o.threshold) > 0.8


@pytest.mark.slow
def test_two_utterances_split_by_a_long_pause(
    vad: SileroVAD, speech: Callable[..., np.ndarray]
) -> None:
    a = speech("Turn on the light.")
    b = speech("Thank you.")
    gap = SR * 2
    audio = np.concatenate([np.zeros(SR // 2), a, np.zeros(gap), b, np.zeros(SR)])
    segments = detected(vad, audio.astype(np.float32))
    assert len(segments) == 2
    (s1, e1), (s2, e2) = segments
    b_onset = SR // 2 + len(a) + gap
    assert s1 <= SR // 2 < e1 < b_onset <= e2
    assert e1 <= s2 <= b_onset


@pytest.mark.slow
def test_silence_and_noise_are_not_speech(vad: SileroVAD) -> None:
    rng = np.random.default_rng(2)
    t = np.arange(4 * SR) / SR
    signals = {
        "digital silence": np.zeros(4 * SR),
        "low noise": rng.standard_normal(4 * SR) * 0.003,
        "white noise": rng.standard_normal(4 * SR) * 0.05,
        "hum": 0.3 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 440 * t),
    }
    for name, audio in signals.items():
        audio = audio.astype(np.float32)
        probs = probabilities(vad, audio)
        assert probs.max() < vad.options.threshold, name
        assert detected(vad, audio) == [], name


@pytest.mark.slow
def test_short_click_is_not_an_utterance(vad: SileroVAD, speech: Callable[..., np.ndarray]) -> None:
    word = speech("Hi.")
    strict = SileroVAD(SileroOptions(min_speech_ms=len(word) * 1000 // SR + 300))
    audio = np.concatenate([np.zeros(SR), word, np.zeros(SR)]).astype(np.float32)
    assert len(detected(vad, audio)) == 1  # with the defaults "Hi." is an utterance
    assert detected(strict, audio) == []  # shorter than min_speech_ms: dropped
