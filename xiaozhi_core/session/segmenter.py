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

from ..types import SegmentationDefaults

if TYPE_CHECKING:
    from ..config import SessionSettings
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
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..types import SegmentationDefaults

if TYPE_CHECKING:
    from ..config import SessionSettings

__all__ = ["Segment", "SegmentationParams", "Segmenter", "segmentation_params"]


@dataclass
class Segment:
    """``start``: speech confirmed (``audio`` = pre-roll + speech so far);
    ``end``: utterance complete (``audio`` = the whole utterance)."""

    kind: Literal["start", "end"]
    audio: np.ndarray | None = None
    forced: bool = False


class Segmenter:
    """Per-stream segmentation state machine (idle → candidate → speech → idle)."""

    def __init__(
        self,
        sample_rate: int,
        window: int,
        *,
        threshold: float,
        release_threshold: float,
        min_speech_ms: int,
        silence_ms: int,
        pre_roll_ms: int,
        max_utterance_ms: int,
    ) -> None:
        self.threshold = threshold
        self.release = min(release_threshold, threshold)
        ms = sample_rate / 1000
        self.min_speech = int(min_speech_ms * ms)
        self.silence = int(silence_ms * ms)
        self.max_samples = int(max_utterance_ms * ms)
        self._pre_roll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(0, int(pre_roll_ms * ms) // window)
        )
        self.reset()

    def reset(self) -> None:
        self._pre_roll.clear()
        self._chunks: list[np.ndarray] = []
        self._length = 0
        self._voiced = 0
        self._silence_run = 0
        self.active = False  # inside a candidate or confirmed utterance
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


@dataclass(frozen=True)
class SegmentationParams:
    """The resolved segmentation settings of a deployment (one per server)."""

    threshold: float = 0.5
    release_threshold: float = 0.35
    silence_ms: int = 700
    min_speech_ms: int = 250
    pre_roll_ms: int = 300
    max_utterance_ms: int = 30000

    def segmenter(self, sample_rate: int, window: int) -> Segmenter:
        """A fresh :class:`Segmenter` with these settings (one per session)."""
        return Segmenter(
            sample_rate,
            window,
            threshold=self.threshold,
            release_threshold=self.release_threshold,
            min_speech_ms=self.min_speech_ms,
            silence_ms=self.silence_ms,
            pre_roll_ms=self.pre_roll_ms,
            max_utterance_ms=self.max_utterance_ms,
        )


def segmentation_params(
    session: SessionSettings, vad: SegmentationDefaults | None
) -> SegmentationParams:
    """Resolve the segmentation settings: ``session.*`` when set, else what the VAD
    provider declares (its ``segmentation`` attribute), else the built-in defaults.

    >>> from xiaozhi_core.config import SessionSettings
    >>> p = segmentation_params(SessionSettings(silence_ms=500),
    ...                         SegmentationDefaults(threshold=0.6, silence_ms=900))
    >>> p.threshold, p.silence_ms, p.pre_roll_ms
    (0.6, 500, 300)
    """
    base = SegmentationParams(max_utterance_ms=session.max_utterance_ms)
    vad = vad or SegmentationDefaults()

    def pick(own: float | None, declared: float | None, default: float) -> float:
        return own if own is not None else declared if declared is not None else default

    threshold = pick(session.vad_threshold, vad.threshold, base.threshold)
    release = pick(session.vad_release_threshold, vad.release_threshold, base.release_threshold)
    return SegmentationParams(
        threshold=threshold,
        release_threshold=min(release, threshold),
        silence_ms=int(pick(session.silence_ms, vad.silence_ms, base.silence_ms)),
        min_speech_ms=int(pick(session.min_speech_ms, vad.min_speech_ms, base.min_speech_ms)),
        pre_roll_ms=int(pick(session.pre_roll_ms, vad.pre_roll_ms, base.pre_roll_ms)),
        max_utterance_ms=session.max_utterance_ms,
    )
