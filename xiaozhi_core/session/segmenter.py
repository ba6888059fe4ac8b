"""Utterance segmentation from per-window speech probabilities, in audio time.

Every decision counts samples, never wall-clock time: a burst of buffered audio that
arrives faster than real time is segmented exactly like the same audio in real time.

* speech starts when a window's probability reaches ``threshold``; it stays "voiced"
  while the probability is at least ``release_threshold`` (hysteresis);
* a start is *confirmed* after ``min_speech_ms`` of voiced audio (shorter blips are
  dropped);
* the utterance ends after ``silence_ms`` of unvoiced audio, or at ``max_utterance_ms``;
* ``pre_roll_ms`` of audio before the first voiced window is kept, so the first
  syllable survives.

Example:
    >>> import numpy as np
    >>> seg = Segmenter(16000, 512, threshold=0.5, release_threshold=0.3, min_speech_ms=64,
    ...                 silence_ms=96, pre_roll_ms=64, max_utterance_ms=10000)
    >>> w = np.ones(512, np.int16)
    >>> events = []
    >>> for p in [0, 0, 0.9, 0.9, 0.9, 0.4, 0.1, 0.1, 0.1, 0]:
    ...     events += seg.feed(w, p)
    >>> [(e.kind, len(e.audio) // 512 if e.audio is not None else None) for e in events]
    [('start', 4), ('end', 9)]
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "Segmenter", "segmentation_params"]


@dataclass
class Segment:
    """``start``: speech confirmed (``audio`` = pre-roll + speech so far);
    ``end``: utterance complete (``audio`` = the whole utterance)."""

    kind: str
    audio: np.ndarray | None = None
    forced: bool = False


class Segmenter:
    """Per-stream segmentation state machine (idle → candidate → speech → idle)."""

    def __init__(self, sample_rate: int, window: int, *, threshold: float,
                 release_threshold: float, min_speech_ms: int, silence_ms: int,
                 pre_roll_ms: int, max_utterance_ms: int) -> None:
        self.threshold = threshold
        self.release = min(release_threshold, threshold)
        ms = sample_rate / 1000
        self.min_speech = int(min_speech_ms * ms)
        self.silence = int(silence_ms * ms)
        self.max_samples = int(max_utterance_ms * ms)
        self._pre_roll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(0, int(pre_roll_ms * ms) // window))
        self.reset()

    def reset(self) -> None:
        self._pre_roll.clear()
        self._chunks: list[np.ndarray] = []
        self._length = 0
        self._voiced = 0
        self._silence_run = 0
        self.active = False      # inside a candidate or confirmed utterance
        self.confirmed = False

    def _audio(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    def feed(self, window: np.ndarray, prob: float) -> list[Segment]:
        """Consume one window and its probability; return the events it caused."""
        n = len(window)
        if not self.active:
            if prob >= self.threshold:
                self.active = True
                self._chunks = [*self._pre_roll, window]
                self._length = sum(len(c) for c in self._chunks)
                self._voiced = n
                self._silence_run = 0
                self._pre_roll.clear()
                return self._maybe_confirm()
            self._pre_roll.append(window)
            return []
        self._chunks.append(window)
        self._length += n
        if prob >= self.release:
            self._voiced += n
            self._silence_run = 0
        else:
            self._silence_run += n
        events = self._maybe_confirm()
        if self._silence_run >= self.silence:
            if self.confirmed:
                events.append(Segment("end", self._audio()))
            self.reset()
        elif self.confirmed and self._length >= self.max_samples:
            events.append(Segment("end", self._audio(), forced=True))
            self.reset()
        return events

    def _maybe_confirm(self) -> list[Segment]:
        if not self.confirmed and self._voiced >= self.min_speech:
            self.confirmed = True
            return [Segment("start", self._audio())]
        return []

    def take(self) -> np.ndarray | None:
        """End the utterance now (manual ``listen stop``); None if nothing was heard."""
        audio = self._audio() if self.active else None
        self.reset()
        return audio


#: core setting → (option names a VAD provider may declare, built-in default)
_PARAMS: dict[str, tuple[tuple[str, ...], float]] = {
    "threshold": (("threshold",), 0.5),
    "release_threshold": (("release_threshold",), 0.35),
    "silence_ms": (("min_silence_ms", "silence_ms"), 700),
    "min_speech_ms": (("min_speech_ms",), 250),
    "pre_roll_ms": (("pre_roll_ms",), 300),
}


def segmentation_params(session: object, vad_options: object) -> dict[str, float]:
    """Resolve the segmentation settings: ``session.*`` when set, else the VAD provider's
    option of the same meaning, else the default.

    >>> from types import SimpleNamespace as NS
    >>> p = segmentation_params(NS(vad_threshold=None, vad_release_threshold=None,
    ...     silence_ms=500, min_speech_ms=None, pre_roll_ms=None),
    ...     NS(threshold=0.6, min_silence_ms=900))
    >>> p["threshold"], p["silence_ms"], p["pre_roll_ms"]
    (0.6, 500, 300)
    """
    session_names = {"threshold": "vad_threshold", "release_threshold": "vad_release_threshold"}
    out: dict[str, float] = {}
    for key, (option_names, default) in _PARAMS.items():
        value = getattr(session, session_names.get(key, key), None)
        if value is None:
            value = next((getattr(vad_options, n) for n in option_names
                          if getattr(vad_options, n, None) is not None), default)
        out[key] = value
    out["release_threshold"] = min(out["release_threshold"], out["threshold"])
    return out
