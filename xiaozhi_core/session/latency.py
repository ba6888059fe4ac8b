"""The per-turn latency record: when each milestone of a turn happened.

Every timestamp is ``time.monotonic()``; :meth:`TurnLatency.as_ms` gives them as
milliseconds after the end of speech, the form that is logged, kept per session and
exported as metrics.

Example:
    >>> lat = TurnLatency(turn_id=1, kind="voice", end_of_speech=10.0)
    >>> lat.asr_final, lat.first_frame_sent = 10.25, 10.5
    >>> lat.provider_seconds["asr"] = 0.2
    >>> lat.as_ms()["first_frame_sent_ms"], round(lat.server_overhead() or 0, 3)
    (500.0, 0.3)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TurnLatency"]


@dataclass
class TurnLatency:
    """Timestamps (``time.monotonic()``) of one turn's milestones."""

    turn_id: int
    kind: str
    end_of_speech: float
    asr_final: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_frame_sent: float | None = None
    finished: float | None = None
    error: str | None = None
    #: Time spent waiting on providers before the first frame (asr, llm_first_token,
    #: tts_first_audio), in seconds.
    provider_seconds: dict[str, float] = field(default_factory=dict)

    def as_ms(self) -> dict[str, float | None]:
        """Each milestone in milliseconds after the end of speech (None: not reached)."""

        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - self.end_of_speech) * 1000, 1)

        return {
            "asr_final_ms": ms(self.asr_final),
            "llm_first_token_ms": ms(self.llm_first_token),
            "tts_first_audio_ms": ms(self.tts_first_audio),
            "first_frame_sent_ms": ms(self.first_frame_sent),
            "total_ms": ms(self.finished),
        }

    def server_overhead(self) -> float | None:
        """End of speech → first frame sent, minus the providers' own time (seconds)."""
        if self.first_frame_sent is None:
            return None
        provider = sum(self.provider_seconds.values())
        return max(0.0, self.first_frame_sent - self.end_of_speech - provider)
