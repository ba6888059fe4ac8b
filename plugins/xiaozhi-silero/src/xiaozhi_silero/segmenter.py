"""Utterance segmentation of ONE stream from its per-window speech probabilities.

Pure Python + numpy, no model. Every duration is counted in samples of the stream
(audio time), never wall-clock time: feeding ten seconds of buffered windows in one
call gives exactly the events of feeding them one by one in real time.

Rules (window ``k`` covers samples ``[k * window, (k + 1) * window)``):

1. **Hysteresis.** A window is *voiced* if its probability is ``>= threshold``, or, when
   the previous window was voiced, ``>= release_threshold``. So speech needs a strong
   window to begin (or to resume after an unvoiced window) and a weaker one to go on.
2. **Candidate.** The first voiced window while idle opens a candidate at its first
   sample. Voiced samples of the candidate are counted (pauses between them are not).
3. **Min speech.** When the candidate holds ``min_speech`` voiced samples, a ``start``
   event is reported. A candidate whose unvoiced run reaches ``min_silence`` first is
   dropped silently (a click, a cough).
4. **Pre-roll.** The ``start`` sample is ``pre_roll`` samples before the candidate's first
   voiced sample, but never before 0 nor before the previous utterance's end.
5. **Min silence.** In speech, a run of unvoiced windows of ``min_silence`` samples ends
   the utterance: an ``end`` event whose sample is the first unvoiced sample of the run.
   Shorter pauses are part of the utterance.

Each event also carries ``at``, the stream position (samples consumed) when it was
decided, so ``at - sample`` is the decision latency in audio time.

Example:
    >>> seg = Segmenter(threshold=0.5, release_threshold=0.3, min_speech_ms=64,
    ...                 min_silence_ms=64, pre_roll_ms=32)   # 1 window = 32 ms
    >>> seg.push([0.1, 0.1, 0.9, 0.4, 0.9, 0.2, 0.1, 0.0])
    [SpeechEvent(kind='start', sample=512, at=2048), SpeechEvent(kind='end', sample=2560, at=3584)]
    >>> segments([0.1, 0.1, 0.9, 0.4, 0.9, 0.2, 0.1, 0.0], threshold=0.5,
    ...          release_threshold=0.3, min_speech_ms=64, min_silence_ms=64, pre_roll_ms=32)
    [(512, 2560)]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["SpeechEvent", "Segmenter", "segments"]


@dataclass(frozen=True)
class SpeechEvent:
    """``start`` or ``end`` of an utterance at stream sample ``sample``, decided when the
    stream had reached sample ``at`` (``at >= sample``)."""

    kind: Literal["start", "end"]
    sample: int
    at: int


class Segmenter:
    """Per-stream state machine: idle -> candidate -> speech -> idle.

    Durations are given in milliseconds and converted once to samples
    (``round(ms * sample_rate / 1000)``); all decisions compare sample counts.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        release_threshold: float = 0.35,
        min_speech_ms: int = 250,
        min_silence_ms: int = 700,
        pre_roll_ms: int = 300,
        sample_rate: int = 16000,
        window: int = 512,
    ) -> None:
        if not 0.0 <= release_threshold <= threshold:
            raise ValueError(
                f"need 0 <= release_threshold ({release_threshold}) <= threshold ({threshold})"
            )
        if min(min_speech_ms, min_silence_ms, pre_roll_ms) < 0:
            raise ValueError("min_speech_ms, min_silence_ms and pre_roll_ms must be >= 0")
        if sample_rate <= 0 or window <= 0:
            raise ValueError("sample_rate and window must be > 0")
        self.threshold = float(threshold)
        self.release_threshold = float(release_threshold)
        self.sample_rate = sample_rate
        self.window = window
        self.min_speech = self.ms_to_samples(min_speech_ms)
        self.min_silence = self.ms_to_samples(min_silence_ms)
        self.pre_roll = self.ms_to_samples(pre_roll_ms)
        self.reset()

    @classmethod
    def from_options(cls, options: Any, *, sample_rate: int = 16000,
                     window: int = 512) -> Segmenter:
        """Build from any object with the segmentation fields of ``SileroOptions``."""
        return cls(
            threshold=options.threshold,
            release_threshold=options.release_threshold,
            min_speech_ms=options.min_speech_ms,
            min_silence_ms=options.min_silence_ms,
            pre_roll_ms=options.pre_roll_ms,
            sample_rate=sample_rate,
            window=window,
        )

    def ms_to_samples(self, ms: float) -> int:
        return round(ms * self.sample_rate / 1000)

    def reset(self, position: int = 0) -> None:
        """Forget everything; the next window starts at sample ``position``."""
        self.position = position          # samples consumed so far
        self.state: Literal["idle", "candidate", "speech"] = "idle"
        self._voiced = False              # was the previous window voiced?
        self._onset = 0                   # first sample of the candidate / utterance
        self._start = 0                   # reported start sample of the open utterance
        self._voiced_samples = 0          # voiced samples in the candidate
        self._silence_from: int | None = None  # first sample of the current unvoiced run
        self._last_end = position         # end of the previous utterance (pre-roll floor)

    @property
    def in_speech(self) -> bool:
        """True between a ``start`` and its ``end``."""
        return self.state == "speech"

    @property
    def keep_from(self) -> int:
        """The earliest sample a caller must still hold to serve the next ``start`` (or
        the open utterance). Audio before it can be dropped."""
        if self.state == "speech":
            return self._start
        onset = self._onset if self.state == "candidate" else self.position
        return max(onset - self.pre_roll, self._last_end, 0)

    def push(self, probs: float | Iterable[float] | np.ndarray) -> list[SpeechEvent]:
        """Consume the probabilities of the next window(s); return the events caused."""
        events: list[SpeechEvent] = []
        for p in np.atleast_1d(np.asarray(probs, dtype=np.float64)).ravel():
            event = self._step(float(p))
            if event is not None:
                events.append(event)
        return events

    def _step(self, p: float) -> SpeechEvent | None:
        begin = self.position
        self.position += self.window
        voiced = p >= (self.release_threshold if self._voiced else self.threshold)
        self._voiced = voiced
        if self.state == "idle":
            if voiced:
                self.state = "candidate"
                self._onset = begin
                self._voiced_samples = 0
                self._silence_from = None
                return self._count_voiced()
            return None
        if voiced:
            self._silence_from = None
            return self._count_voiced() if self.state == "candidate" else None
        if self._silence_from is None:
            self._silence_from = begin
        if self.position - self._silence_from < self.min_silence:
            return None
        end = self._silence_from
        was_speech = self.state == "speech"
        self.state = "idle"
        self._silence_from = None
        if not was_speech:
            return None  # a candidate that never reached min_speech: dropped
        self._last_end = end
        return SpeechEvent("end", end, self.position)

    def _count_voiced(self) -> SpeechEvent | None:
        self._voiced_samples += self.window
        if self._voiced_samples < self.min_speech:
            return None
        self.state = "speech"
        self._start = max(self._onset - self.pre_roll, self._last_end, 0)
        return SpeechEvent("start", self._start, self.position)

    def flush(self) -> list[SpeechEvent]:
        """The stream ended: close an open utterance (at the start of a trailing unvoiced
        run, else at the current position); drop an unconfirmed candidate."""
        events: list[SpeechEvent] = []
        if self.state == "speech":
            end = self.position if self._silence_from is None else self._silence_from
            self._last_end = end
            events.append(SpeechEvent("end", end, self.position))
        self.state = "idle"
        self._voiced = False
        self._silence_from = None
        return events


def segments(probs: Iterable[float] | np.ndarray, **params: Any) -> list[tuple[int, int]]:
    """``(start, end)`` sample pairs of a whole stream's probabilities (flushed at the end).

    >>> segments([0.9] * 10, min_speech_ms=0, pre_roll_ms=0)
    [(0, 5120)]
    """
    seg = Segmenter(**params)
    events = seg.push(probs) + seg.flush()
    starts = [e.sample for e in events if e.kind == "start"]
    ends = [e.sample for e in events if e.kind == "end"]
    return list(zip(starts, ends, strict=True))
