"""Loop-lag monitor: how late the event loop runs, and which callbacks made it late.

A ticker task sleeps ``interval`` seconds and records how much later than asked it woke
up. While the monitor runs, every loop callback (task steps included) is timed; one that
runs longer than ``slow_callback`` seconds is recorded by name (for task steps, the
coroutine's qualified name). Both are exposed through :meth:`LoopLagMonitor.stats` for
the metrics endpoint and logged.

A task step is named by its task's coroutine (``Turn._think``), which hides *who*
blocked: a provider's ``async def`` that calls something blocking runs inside that step.
Provider calls are therefore wrapped in :func:`traced` / :func:`traced_stream` (the
executor does it for every ``io`` provider), which time each of their own steps; a slow
callback is then reported with the provider and method that held the loop.

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
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["LoopLagMonitor", "callback_name", "traced", "traced_stream"]

log = logging.getLogger(__name__)

_original_run = events.Handle._run
_active: set[LoopLagMonitor] = set()
#: The slowest traced step (label, seconds) inside the loop callback running now.
_blame: list[tuple[str, float] | None] = [None]
#: Traced steps shorter than this are not worth remembering.
_BLAME_MIN = 0.01


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
    _blame[0] = None
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
                    monitor._record_slow(self, dt, _blame[0])


def _update_threshold() -> None:
    global _threshold
    _threshold = min((m.slow_callback for m in _active), default=float("inf"))


def _note(label: str, seconds: float) -> None:
    if seconds >= _BLAME_MIN and (_blame[0] is None or seconds > _blame[0][1]):
        _blame[0] = (label, seconds)


class _Traced(Generic[T]):
    """Awaitable running ``coro`` step by step, timing each step against ``label``."""

    __slots__ = ("coro", "label")

    def __init__(self, coro: Awaitable[T], label: str) -> None:
        self.coro = coro
        self.label = label

    def __await__(self) -> Generator[object, object, T]:
        it = self.coro.__await__()
        label = self.label
        send_value: object = None
        error: BaseException | None = None
        while True:
            t0 = time.perf_counter()
            try:
                yielded = it.throw(error) if error is not None else it.send(send_value)
            except StopIteration as stop:
                _note(label, time.perf_counter() - t0)
                result: T = stop.value  # the coroutine's return value
                return result
            except BaseException:
                _note(label, time.perf_counter() - t0)
                raise
            _note(label, time.perf_counter() - t0)
            try:
                send_value, error = (yield yielded), None
            except BaseException as exc:  # cancellation and throw() reach the inner coroutine
                send_value, error = None, exc


def traced(coro: Awaitable[T], label: str) -> Awaitable[T]:
    """``coro``, with each of its steps that holds the loop for long blamed on ``label``
    in the monitor's report (instead of on the task that awaits it).

    >>> import asyncio
    >>> async def add(a, b):
    ...     await asyncio.sleep(0)
    ...     return a + b
    >>> async def main():
    ...     return await traced(add(1, 2), "adder")
    >>> asyncio.run(main())
    3
    """
    return _Traced(coro, label)


class _TracedStream(Generic[T]):
    """An async iterator whose ``__anext__`` steps are traced (see :func:`traced`)."""

    __slots__ = ("inner", "label")

    def __init__(self, inner: AsyncIterator[T], label: str) -> None:
        self.inner = inner
        self.label = label

    def __aiter__(self) -> _TracedStream[T]:
        return self

    def __anext__(self) -> Awaitable[T]:
        return _Traced(self.inner.__anext__(), self.label)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await _Traced(close(), self.label)


def traced_stream(stream: AsyncIterator[T], label: str) -> AsyncIterator[T]:
    """``stream`` with each step of each item traced against ``label``."""
    return _TracedStream(stream, label)


class LoopLagMonitor:
    """Measures event-loop lateness and names slow callbacks."""

    def __init__(
        self, interval: float = 0.05, slow_callback: float = 0.05, window: int = 1200
    ) -> None:
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

    def _record_slow(
        self, handle: events.Handle, seconds: float, blame: tuple[str, float] | None = None
    ) -> None:
        name = callback_name(handle)
        if name == "LoopLagMonitor._tick":
            return
        if blame is not None and blame[1] >= seconds / 2:
            label, held = blame
            self.slow.append((label, seconds))
            self.slow_total += 1
            log.warning(
                "slow loop callback: %s held the event loop for %.1f ms (blocking "
                "call in async code? task %s)",
                label,
                held * 1000,
                name,
            )
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
