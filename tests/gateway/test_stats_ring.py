"""The console's stats ring: per-interval aggregates, bounded, closed by its own task."""

from __future__ import annotations

import asyncio

import pytest

from xiaozhi_core.gateway.stats import StatsRing


def test_ring_keeps_an_hour_and_aggregates_each_interval() -> None:
    ring = StatsRing(interval=10, span=60)
    for i in range(10):
        for ms in (100.0, 200.0, 300.0, 400.0):
            ring.observe_ttfa(ms + i)
        ring.observe_lane_lag([0.001, 0.003])
        ring.close(at=1000.0 + 10 * i, sessions=i, loop_lags=[0.002] * 190 + [0.050] * 10)
    samples = ring.samples()
    assert len(samples) == 6  # span / interval, oldest dropped
    assert [s["sessions"] for s in samples] == [4, 5, 6, 7, 8, 9]
    last = samples[-1]
    assert (last["turns"], last["ttfa_p50_ms"], last["ttfa_max_ms"]) == (4, 309.0, 409.0)
    assert (last["lane_lag_mean_ms"], last["lane_lag_max_ms"]) == (2.0, 3.0)
    assert (last["loop_lag_p99_ms"], last["loop_lag_max_ms"]) == (50.0, 50.0)
    # an interval without turns or frames says so (null), it does not repeat the last one
    empty = ring.close(at=2000.0, sessions=0, loop_lags=[])
    assert empty["turns"] == 0 and empty["ttfa_p50_ms"] is None
    assert empty["lane_lag_max_ms"] is None and empty["loop_lag_max_ms"] is None


def test_ttfa_kept_per_interval_is_bounded() -> None:
    ring = StatsRing()
    for _ in range(10_000):
        ring.observe_ttfa(5.0)
    assert ring.close(at=1.0, sessions=0, loop_lags=[])["turns"] == 10_000
    assert len(ring._ttfa) == 0


def test_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        StatsRing(interval=0)
    with pytest.raises(ValueError, match="interval"):
        StatsRing(interval=10, span=5)


async def test_run_closes_a_sample_every_interval() -> None:
    ring = StatsRing(interval=0.05, span=10)
    calls: list[int] = []

    def probe() -> tuple[int, list[float]]:
        calls.append(1)
        return 3, [0.001]

    task = asyncio.create_task(ring.run(probe))
    await asyncio.sleep(0.28)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 4 <= len(ring.samples()) <= 6 and len(calls) == len(ring.samples())
    assert all(s["sessions"] == 3 for s in ring.samples())
