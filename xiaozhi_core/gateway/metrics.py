"""Server metrics in the Prometheus text format (prometheus_client, one registry per
server so several servers — e.g. in tests — never share counters)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from ..session.turn import TurnLatency

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge("xiaozhi_sessions_active", "Open device sessions", registry=r)
        self.connections = Counter("xiaozhi_connections_total", "Connection attempts by outcome",
                                   ["outcome"], registry=r)
        self.frames_in = Counter("xiaozhi_audio_frames_in_total", "Opus frames received",
                                 registry=r)
        self.frames_out = Counter("xiaozhi_audio_frames_out_total", "Opus frames sent",
                                  registry=r)
        self.frame_errors = Counter("xiaozhi_frame_errors_total", "Malformed frames by kind",
                                    ["kind"], registry=r)
        self.lane_lag = Histogram("xiaozhi_audio_lane_lag_seconds",
                                  "Time from frame arrival to its VAD result", registry=r,
                                  buckets=_LAG_BUCKETS)
        self.lane_backpressure = Counter("xiaozhi_audio_lane_backpressure_total",
                                         "Frames that found their session's lane full",
                                         registry=r)
        self.turns = Counter("xiaozhi_turns_total", "Turns by outcome", ["outcome"], registry=r)
        self.turn_latency = Histogram("xiaozhi_turn_latency_seconds",
                                      "Time from end of speech to each milestone", ["stage"],
                                      registry=r, buckets=_LATENCY_BUCKETS)
        self.loop_lag = Gauge("xiaozhi_loop_lag_seconds", "Event-loop lag", ["stat"], registry=r)
        self.slow_callbacks = Gauge("xiaozhi_loop_slow_callbacks", "Slow loop callbacks seen",
                                    registry=r)
        self.executor = Gauge("xiaozhi_executor", "Worker pool state", ["stat"], registry=r)
        self.vad = Gauge("xiaozhi_vad", "Batched VAD state", ["stat"], registry=r)

    def observe_turn(self, latency: TurnLatency) -> None:
        for stage, value in latency.as_ms().items():
            if value is not None:
                self.turn_latency.labels(stage.removesuffix("_ms")).observe(value / 1000)

    def render(self, loop_stats: dict[str, Any], executor_stats: dict[str, float],
               vad_stats: dict[str, float]) -> bytes:
        for stat in ("p50_ms", "p99_ms", "max_ms", "last_ms"):
            self.loop_lag.labels(stat.removesuffix("_ms")).set(loop_stats.get(stat, 0) / 1000)
        self.slow_callbacks.set(loop_stats.get("slow_callbacks", 0))
        for k, v in executor_stats.items():
            self.executor.labels(k).set(v)
        for k, v in vad_stats.items():
            self.vad.labels(k).set(v)
        return generate_latest(self.registry)
