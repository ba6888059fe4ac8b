"""What a session gets from the server that hosts it: :class:`SessionHost`.

The gateway builds one frozen :class:`SessionHost` when it starts and hands it to every
session, instead of a back-reference to the whole server. It holds the settings, the
typed providers, the executor, the audio hub, a :class:`SessionMetrics` sink, the
resolved segmentation parameters, the downstream audio format and the pre-synthesised
apology. A session never reaches further up than this.

Example (the metrics sink can be anything with these methods):
    >>> m = NullMetrics()
    >>> m.frame_in(); m.observe_lane_lag([0.01, 0.02]); m.turn_outcome("ok")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..app import Providers
from ..config import LimitSettings, SessionSettings, TimeoutSettings
from ..executor import Executor
from ..protocol.opus import EncoderPool
from .audio_hub import AudioHub
from .latency import TurnLatency
from .profiles import ProfileBook, ProfileSet, session_profile, wake_words
from .segmenter import SegmentationParams

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["NullMetrics", "OutputFormat", "SessionHost", "SessionMetrics"]


class SessionMetrics(Protocol):
    """The counters and histograms sessions feed (the gateway's Prometheus registry)."""

    def frame_in(self) -> None:
        """One Opus frame received."""
        ...

    def frame_at_once(self) -> None:
        """One Opus frame received and processed on arrival (lane lag 0)."""
        ...

    def frame_out(self, n: int = 1) -> None:
        """``n`` Opus frames sent."""
        ...

    def frame_error(self, kind: str) -> None:
        """A malformed frame (``framing``, ``json``, ``opus``)."""
        ...

    def lane_backpressure(self) -> None:
        """A frame found its session's lane full."""
        ...

    def observe_lane_lag(self, lags: Sequence[float]) -> None:
        """Frames through decode + VAD, with their lag from arrival (seconds)."""
        ...

    def lane_lost(self, frames: int) -> None:
        """Frames the lane skipped (a failed hub call)."""
        ...

    def lane_reordered(self) -> None:
        """A frame processed out of arrival order (must never happen)."""
        ...

    def turn_outcome(self, outcome: str) -> None:
        """A turn ended: ``ok``, ``failed``, ``aborted``, ``disconnected``."""
        ...

    def observe_turn(self, latency: TurnLatency) -> None:
        """A completed turn's latency record."""
        ...

    def count_suppressed_log(self, key: str) -> None:
        """A log line a device could trigger at will was rate-limited away (``kind:...``)."""
        ...

    def audio_dropped(self) -> None:
        """An Opus frame dropped: the device sent audio faster than real time."""
        ...


class NullMetrics:
    """A :class:`SessionMetrics` that records nothing (benchmarks, embedding)."""

    def frame_in(self) -> None:
        pass

    def frame_at_once(self) -> None:
        pass

    def frame_out(self, n: int = 1) -> None:
        pass

    def frame_error(self, kind: str) -> None:
        pass

    def lane_backpressure(self) -> None:
        pass

    def observe_lane_lag(self, lags: Sequence[float]) -> None:
        pass

    def lane_lost(self, frames: int) -> None:
        pass

    def lane_reordered(self) -> None:
        pass

    def turn_outcome(self, outcome: str) -> None:
        pass

    def observe_turn(self, latency: TurnLatency) -> None:
        pass

    def count_suppressed_log(self, key: str) -> None:
        pass

    def audio_dropped(self) -> None:
        pass


@dataclass(frozen=True)
class OutputFormat:
    """Downstream audio: what the server hello announces and what the TTS produces.

    >>> OutputFormat(sample_rate=24000, frame_ms=60, tts_sample_rate=16000).frame_seconds
    0.06
    """

    sample_rate: int
    frame_ms: int
    #: The TTS provider's own rate (resampled to ``sample_rate`` before encoding).
    tts_sample_rate: int

    @property
    def frame_seconds(self) -> float:
        return self.frame_ms / 1000


@dataclass(frozen=True)
class SessionHost:
    """Everything a session uses from its server, built once at start-up."""

    session: SessionSettings
    timeouts: TimeoutSettings
    limits: LimitSettings
    providers: Providers
    executor: Executor
    hub: AudioHub
    metrics: SessionMetrics
    segmentation: SegmentationParams
    output: OutputFormat
    #: The apology, synthesised and Opus-encoded once (None: synthesis failed).
    apology_frames: tuple[bytes, ...] | None = None
    #: The apology of each language a turn can speak, likewise (language code → frames;
    #: a language missing here falls back to ``apology_frames``).
    apology_by_language: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    #: ``(session_id, device_id) -> {"url", "token"}``: the MCP ``capabilities.vision``
    #: a session offers its device (where a camera board uploads photos). None: the
    #: harmless ``{"url": "", "token": ""}``, which clients that expect the field accept.
    vision_grant: Callable[[str, str], dict[str, str]] | None = None
    #: The current profiles (swapped as a whole by a config reload; turns read it when
    #: they start). Default: one profile made of ``session``.
    profiles: ProfileBook = field(default=None)  # type: ignore[assignment]
    #: The device store (None: nothing recorded, no durable memory).
    store: Store | None = None
    #: Reply encoders reused across turns (default: one pool of ``output``'s format).
    encoders: EncoderPool = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.encoders is None:
            pool = EncoderPool(
                self.output.sample_rate, self.output.frame_ms, self.session.opus_complexity
            )
            object.__setattr__(self, "encoders", pool)
        if self.profiles is None:
            s, tts = self.session, self.providers.tts
            default = session_profile(s, tts.spec, getattr(tts, "options", None))
            book = ProfileBook(ProfileSet({}, default, {}, wake_words(s)))
            object.__setattr__(self, "profiles", book)

    def apology_audio(self, language: str | None) -> tuple[bytes, ...] | None:
        """The pre-synthesised apology of ``language`` (else the default one)."""
        if language is not None and language in self.apology_by_language:
            return self.apology_by_language[language]
        return self.apology_frames
