"""Loop-lag monitor: how late the event loop runs, and which callbacks made it late.

A ticker task sleeps ``interval`` seconds and records how much later than asked it woke
up. While the monitor runs, every loop callback (task steps included) is timed; one that
runs longer than ``slow_callback`` seconds is recorded by name (for task steps, the
coroutine's qualified name). Both are exposed through :meth:`LoopLagMonitor.stats` for
the metrics endpoint and logged.

Example:
    >>> import asyncio, time
    >>> async def main():
    ...     monitor = LoopLagMonitor(interval=0.01, slow_callback=0.05)
    ...     monitor.start()
    ...     async def hog():
    ...         time.sleep(0.2)          # blocks the loop on purpose
    ...     await asyncio.create_task(hog())
    ...     await asyncio.sleep(0.05)
    ...     monitor.stop()
    ...     return monitor.stats()["max_ms"] >= 150, monitor.slow[-1][0]
    >>> asyncio.run(main())
    (True, 'main.<locals>.hog')
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from asyncio import events

__all__ = ["LoopLagMonitor", "callback_name"]

log = logging.getLogger(__name__)

_original_run = events.Handle._run
_active: set[LoopLagMonitor] = set()


def callback_name(handle: events.Handle) -> str:
    """A readable name for what a loop handle runs."""
    cb: object = getattr(handle, "_callback", None)
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return getattr(coro, "__qualname__", None) or repr(coro)
    return getattr(cb, "__qualname__", None) or repr(cb)


#: The smallest ``slow_callback`` of the active monitors (callbacks faster than this,
#: nearly all of them, cost two clock reads and one comparison).
_threshold = float("inf")


def _timed_run(self: events.Handle) -> None:
    if not _active:
        _original_run(self)
        return
    t0 = time.perf_counter()
    try:
        _original_run(self)
    finally:
        dt = time.perf_counter() - t0
        if dt >= _threshold:
            loop = getattr(self, "_loop", None)
            for monitor in tuple(_active):
                # Handle._run is patched process-wide: count only the monitored loop's
                # callbacks (another thread may run its own loop).
                if dt >= monitor.slow_callback and loop is monitor._loop:
                    monitor._record_slow(self, dt)


def _update_threshold() -> None:
    global _threshold
    _threshold = min((m.slow_callback for m in _active), default=float("inf"))


class LoopLagMonitor:
    """Measures event-loop lateness and names slow callbacks."""

    def __init__(self, interval: float = 0.05, slow_callback: float = 0.05,
                 window: int = 1200) -> None:
        self.interval = interval
        self.slow_callback = slow_callback
        self.lags: collections.deque[float] = collections.deque(maxlen=window)
        self.slow: collections.deque[tuple[str, float]] = collections.deque(maxlen=50)
        self.max_lag = 0.0
        self.last_lag = 0.0
        self.slow_total = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start on the running loop."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        _active.add(self)
        _update_threshold()
        events.Handle._run = _timed_run  # type: ignore[method-assign]
        self._task = self._loop.create_task(self._tick(), name="loop-lag-monitor")

    def stop(self) -> None:
        """Stop measuring (the collected numbers stay readable)."""
        _active.discard(self)
        _update_threshold()
        if not _active:
            events.Handle._run = _original_run  # type: ignore[method-assign]
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _record_slow(self, handle: events.Handle, seconds: float) -> None:
        name = callback_name(handle)
        if name == "LoopLagMonitor._tick":
            return
        self.slow.append((name, seconds))
        self.slow_total += 1
        log.warning("slow loop callback %s took %.1f ms", name, seconds * 1000)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - start - self.interval)
            self.last_lag = lag
            self.lags.append(lag)
            self.max_lag = max(self.max_lag, lag)

    def sustained_lag(self, ticks: int = 5) -> float:
        """The smallest lag of the last ``ticks`` ticks: high only while the loop has been
        late for a while (one GC pause or one slow callback does not count)."""
        if len(self.lags) < ticks:
            return 0.0
        return min(list(self.lags)[-ticks:])

    def percentile(self, q: float) -> float:
        if not self.lags:
            return 0.0
        data = sorted(self.lags)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]

    def stats(self) -> dict[str, object]:
        """Lag in ms (last, p50, p99, max over the window) and recent slow callbacks."""
        return {
            "last_ms": round(self.last_lag * 1000, 3),
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
            "max_ms": round(self.max_lag * 1000, 3),
            "samples": len(self.lags),
            "slow_callbacks": self.slow_total,
            "recent_slow": [(n, round(s * 1000, 1)) for n, s in list(self.slow)[-5:]],
        }
