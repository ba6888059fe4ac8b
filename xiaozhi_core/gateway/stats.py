"""The last hour in memory: one sample every 10 s of TTFA, lane lag, loop lag and sessions,
for the console's charts (``GET /api/v1/stats``).

Sessions feed it through the gateway's :class:`~xiaozhi_core.gateway.metrics.Metrics`
(a turn's time to first audio, the lane lag of each group of frames: a few additions per
call); :meth:`StatsRing.run` closes a sample every ``interval`` seconds with the number
of sessions and the loop lag the server's monitor saw. The ring holds ``span / interval``
samples (360 for an hour), a few hundred bytes each.

Example:
    >>> ring = StatsRing(interval=10, span=60)
    >>> ring.observe_ttfa(420.0); ring.observe_ttfa(380.0)
    >>> ring.observe_lane_lag([0.004, 0.012])
    >>> s = ring.close(at=1000.0, sessions=3, loop_lags=[0.001, 0.003])
    >>> s["turns"], s["ttfa_p50_ms"], s["lane_lag_max_ms"], s["loop_lag_max_ms"], s["sessions"]
    (2, 420.0, 12.0, 3.0, 3)
    >>> len(ring.samples()), ring.current(at=1005.0, sessions=3, loop_lags=[])["turns"]
    (1, 0)
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["Sample", "StatsRing", "merge_rings", "merge_samples"]

#: One sample: ``t`` (epoch seconds at its end), ``sessions``, ``turns``, ``frames``, TTFA
#: p50/p95/max, lane lag mean/max, loop lag p99/max (milliseconds; None: nothing seen).
Sample = dict[str, Any]

#: TTFA values kept per interval at most (a p50 of the first 2000 turns is still a p50).
_MAX_TTFA = 2000


def _pct(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of sorted ``values``; None when empty.

    >>> _pct([1.0, 2.0, 3.0, 4.0], 50), _pct([], 99)
    (3.0, None)
    """
    if not values:
        return None
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class StatsRing:
    """Per-interval aggregates of the last ``span`` seconds (see the module docstring)."""

    def __init__(self, interval: float = 10.0, span: float = 3600.0) -> None:
        if interval <= 0 or span < interval:
            raise ValueError(f"need 0 < interval <= span, got {interval} and {span}")
        self.interval = float(interval)
        self.span = float(span)
        self._ring: collections.deque[Sample] = collections.deque(maxlen=int(span // interval))
        self._reset()

    def _reset(self) -> None:
        self._ttfa: list[float] = []
        self._turns = 0
        self._lane_n = 0
        self._lane_sum = 0.0
        self._lane_max = 0.0

    # ------------------------------------------------------------------ feeding (hot)
    def observe_ttfa(self, ms: float) -> None:
        """A turn's time from end of speech to its first audio frame sent (ms)."""
        self._turns += 1
        if len(self._ttfa) < _MAX_TTFA:
            self._ttfa.append(ms)

    def observe_lane_lag(self, lags: Iterable[float]) -> None:
        """Lane lags of frames through decode + VAD (seconds)."""
        n, total, peak = 0, 0.0, self._lane_max
        for lag in lags:
            n += 1
            total += lag
            if lag > peak:
                peak = lag
        self.add_lane_lag(n, total, peak)

    def add_lane_lag(self, n: int, total: float, peak: float) -> None:
        """``n`` frames whose lags add up to ``total`` s, the largest ``peak`` s."""
        self._lane_n += n
        self._lane_sum += total
        if peak > self._lane_max:
            self._lane_max = peak

    # ------------------------------------------------------------------ samples
    def _sample(self, at: float, sessions: int, loop_lags: Sequence[float]) -> Sample:
        ttfa = sorted(self._ttfa)
        loop = sorted(loop_lags)
        return {
            "t": round(at, 3),
            "sessions": sessions,
            "turns": self._turns,
            "frames": self._lane_n,
            "ttfa_p50_ms": _pct(ttfa, 50),
            "ttfa_p95_ms": _pct(ttfa, 95),
            "ttfa_max_ms": ttfa[-1] if ttfa else None,
            "lane_lag_mean_ms": _ms(self._lane_sum / self._lane_n) if self._lane_n else None,
            "lane_lag_max_ms": _ms(self._lane_max) if self._lane_n else None,
            "loop_lag_p99_ms": _ms(_pct(loop, 99)),
            "loop_lag_max_ms": _ms(loop[-1] if loop else None),
        }

    def close(self, at: float, sessions: int, loop_lags: Sequence[float]) -> Sample:
        """End the current interval: store its sample and start a new one."""
        sample = self._sample(at, sessions, loop_lags)
        self._ring.append(sample)
        self._reset()
        return sample

    def current(self, at: float, sessions: int, loop_lags: Sequence[float]) -> Sample:
        """The interval in progress, as a sample (not stored)."""
        return self._sample(at, sessions, loop_lags)

    def samples(self) -> list[Sample]:
        """The stored samples, oldest first."""
        return list(self._ring)

    async def run(self, probe: Callable[[], tuple[int, Sequence[float]]]) -> None:
        """Close a sample at every multiple of ``interval`` s of the wall clock (so the
        samples of several workers line up); ``probe()`` gives (sessions, loop lags of
        about the last interval, in seconds). Runs until cancelled."""
        while True:
            now = time.time()
            boundary = (now // self.interval + 1) * self.interval
            await asyncio.sleep(boundary - now)
            sessions, lags = probe()
            self.close(boundary, sessions, lags)


def _nums(samples: Sequence[Sample], key: str) -> list[float]:
    return [s[key] for s in samples if s.get(key) is not None]


def merge_samples(samples: Sequence[Sample], at: float | None = None) -> Sample:
    """One sample for several workers' samples of the same interval: sessions, turns and
    frames add up; the lane lag mean is weighted by frames; every other value is the
    worst worker's (a TTFA percentile of the whole server lies between the workers').

    >>> a = {"t": 10.0, "sessions": 2, "turns": 1, "frames": 30, "ttfa_p50_ms": 400.0,
    ...      "ttfa_p95_ms": 400.0, "ttfa_max_ms": 400.0, "lane_lag_mean_ms": 2.0,
    ...      "lane_lag_max_ms": 5.0, "loop_lag_p99_ms": 1.0, "loop_lag_max_ms": 3.0}
    >>> b = {**a, "sessions": 1, "turns": 0, "frames": 10, "ttfa_p50_ms": None,
    ...      "ttfa_p95_ms": None, "ttfa_max_ms": None, "lane_lag_mean_ms": 6.0}
    >>> m = merge_samples([a, b])
    >>> m["sessions"], m["turns"], m["ttfa_p50_ms"], m["lane_lag_mean_ms"]
    (3, 1, 400.0, 3.0)
    """
    out: Sample = {"t": at if at is not None else max(s["t"] for s in samples)}
    for key in ("sessions", "turns", "frames"):
        out[key] = sum(int(s.get(key) or 0) for s in samples)
    for key in (
        "ttfa_p50_ms",
        "ttfa_p95_ms",
        "ttfa_max_ms",
        "lane_lag_max_ms",
        "loop_lag_p99_ms",
        "loop_lag_max_ms",
    ):
        values = _nums(samples, key)
        out[key] = max(values) if values else None
    weighted = [
        (s["lane_lag_mean_ms"], s.get("frames") or 0)
        for s in samples
        if s.get("lane_lag_mean_ms") is not None
    ]
    frames = sum(n for _, n in weighted)
    out["lane_lag_mean_ms"] = round(sum(v * n for v, n in weighted) / frames, 2) if frames else None
    return out


def merge_rings(rings: Sequence[Sequence[Sample]]) -> list[Sample]:
    """Several workers' stored samples as one series: samples closed at the same
    (wall-clock aligned) time are merged with :func:`merge_samples`."""
    by_t: dict[float, list[Sample]] = {}
    for ring in rings:
        for sample in ring:
            by_t.setdefault(sample["t"], []).append(sample)
    return [merge_samples(group, at=t) for t, group in sorted(by_t.items())]
