"""The segmenter alone: hysteresis, min speech, min silence, pre-roll, all in samples."""

from __future__ import annotations

import numpy as np
import pytest
from xiaozhi_silero.plugin import SileroOptions
from xiaozhi_silero.segmenter import Segmenter, SpeechEvent, segments

W = 512


def make(**kw: float) -> Segmenter:
    params = {"threshold": 0.5, "release_threshold": 0.3, "min_speech_ms": 0,
              "min_silence_ms": 0, "pre_roll_ms": 0, **kw}
    return Segmenter(**params)  # type: ignore[arg-type]


def test_hysteresis_enter_at_threshold_stay_above_release() -> None:
    seg = make()
    # 0.45 < threshold: not a start; 0.6 starts; 0.4 and 0.31 stay (>= release);
    # 0.29 ends it; 0.45 does not resume (below threshold after an unvoiced window).
    events = seg.push([0.45, 0.6, 0.4, 0.31, 0.29, 0.45, 0.45, 0.5, 0.3, 0.1])
    assert events == [
        SpeechEvent("start", 1 * W, 2 * W),
        SpeechEvent("end", 4 * W, 5 * W),
        SpeechEvent("start", 7 * W, 8 * W),
        SpeechEvent("end", 9 * W, 10 * W),
    ]


def test_threshold_is_inclusive_and_release_equal_threshold_means_no_hysteresis() -> None:
    assert segments([0.5, 0.49], threshold=0.5, release_threshold=0.5, min_speech_ms=0,
                    min_silence_ms=0, pre_roll_ms=0) == [(0, W)]


def test_min_speech_drops_short_blips_and_counts_voiced_samples() -> None:
    # min speech 100 ms = 1600 samples = 3.125 windows -> 4 voiced windows needed.
    seg = make(min_speech_ms=100, min_silence_ms=200)  # 3200 samples = 6.25 windows
    assert seg.min_speech == 1600 and seg.min_silence == 3200
    # Three voiced windows, then 7 unvoiced: a blip, dropped without any event.
    assert seg.push([0.9, 0.9, 0.9] + [0.0] * 7) == []
    assert seg.state == "idle"
    # Two voiced, a short pause (< min silence), two voiced: 4 voiced windows in total;
    # confirmed at the end of the fourth voiced window, start at the first one.
    events = seg.push([0.9, 0.9, 0.0, 0.0, 0.9, 0.9])
    assert events == [SpeechEvent("start", 10 * W, 16 * W)]
    assert seg.in_speech


def test_min_silence_keeps_short_pauses_and_ends_at_first_unvoiced_sample() -> None:
    seg = make(min_silence_ms=160)  # 2560 samples = exactly 5 windows
    probs = [0.9] * 3 + [0.1] * 4 + [0.9] * 2 + [0.1] * 5 + [0.0] * 3
    events = seg.push(probs)
    assert events == [SpeechEvent("start", 0, W), SpeechEvent("end", 9 * W, 14 * W)]


def test_pre_roll_is_in_samples_and_clamped() -> None:
    # 100 ms = 1600 samples: not a whole number of windows.
    seg = make(pre_roll_ms=100, min_silence_ms=64)  # 1024 samples = 2 windows
    events = seg.push([0.0] * 5 + [0.9] * 2 + [0.0] * 2 + [0.0] + [0.9] + [0.0] * 2)
    assert events == [
        SpeechEvent("start", 5 * W - 1600, 6 * W),
        SpeechEvent("end", 7 * W, 9 * W),
        # onset at 10 W; 10 W - 1600 < 7 W (previous end): clamped to the previous end.
        SpeechEvent("start", 7 * W, 11 * W),
        SpeechEvent("end", 11 * W, 13 * W),
    ]
    # Clamped at sample 0 too.
    assert segments([0.9], pre_roll_ms=1000, min_speech_ms=0) == [(0, W)]


def test_audio_time_not_call_pattern() -> None:
    rng = np.random.default_rng(7)
    probs = np.clip(np.repeat(rng.random(60), rng.integers(1, 12, 60)), 0, 1)
    one_shot = make(min_speech_ms=250, min_silence_ms=300, pre_roll_ms=200)
    by_window = make(min_speech_ms=250, min_silence_ms=300, pre_roll_ms=200)
    events = one_shot.push(probs) + one_shot.flush()
    stepped = [e for p in probs for e in by_window.push(float(p))] + by_window.flush()
    assert events == stepped
    assert len(events) >= 4
    assert all(e.at >= e.sample for e in events)
    assert one_shot.position == len(probs) * W


def test_flush_closes_open_speech_and_drops_candidate() -> None:
    seg = make(min_silence_ms=1000)
    seg.push([0.9, 0.9, 0.1])
    assert seg.flush() == [SpeechEvent("end", 2 * W, 3 * W)]
    seg = make(min_speech_ms=1000)
    seg.push([0.9, 0.9])
    assert seg.flush() == []
    seg = make()
    seg.push([0.9, 0.9])
    assert seg.flush() == [SpeechEvent("end", 2 * W, 2 * W)]


def test_keep_from_bounds_the_audio_a_caller_must_hold() -> None:
    seg = make(min_speech_ms=64, pre_roll_ms=32, min_silence_ms=64)
    seg.push([0.0] * 4)
    assert seg.keep_from == 4 * W - W
    seg.push([0.9])  # candidate at 4 W
    assert seg.keep_from == 3 * W
    (start,) = seg.push([0.9])
    assert start.sample == seg.keep_from == 3 * W


def test_from_options_and_validation() -> None:
    seg = Segmenter.from_options(SileroOptions(min_speech_ms=250, min_silence_ms=700,
                                               pre_roll_ms=300))
    assert (seg.min_speech, seg.min_silence, seg.pre_roll) == (4000, 11200, 4800)
    with pytest.raises(ValueError, match="release_threshold"):
        Segmenter(threshold=0.4, release_threshold=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        Segmenter(min_silence_ms=-1)
