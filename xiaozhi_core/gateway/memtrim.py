"""Give the heap memory the server has freed back to the system (glibc ``malloc_trim``).

Why: after a burst of connections the server's RSS stays several per cent above what it
was before, although nothing it holds has grown. Measured with
``tools/fuzz/fuzz_server.py`` (100,000 inputs, one worker): the Python heap was flat
(tracemalloc; pymalloc's arena count unchanged), the native memory in use grew only by
SQLite's page caches (bounded by ``cache_size``), yet RSS once idle was 5–11 % above the
idle baseline. glibc kept what the loop had freed: buffers above pymalloc's 512 bytes
(WebSocket frames, HTTP bodies, dict and list tables, PCM) come from malloc's ``brk``
heap interleaved with objects that live on, and the holes a burst leaves are released
only when they reach the top of the heap, which they rarely do (main arena: 4 MB free
before the run, 10 MB after). ``malloc_trim(0)`` returns every whole free page of every
arena (``MADV_DONTNEED``): after it RSS was back at the baseline. Capping arenas
(``MALLOC_ARENA_MAX=2``) or fixing the mmap threshold (``MALLOC_MMAP_THRESHOLD_``) left
the main heap's holes where they were.

:class:`HeapTrimmer` looks every ``check`` seconds at two cheap signs that memory may
have been freed, and trims when either is there: the open connections fell since the
last look (their sessions' memory is free now), or the RSS grew by ``slack`` since the
last trim (memory was taken, in places a trim had emptied or new ones). Memory freed
without either sign (a garbage collection, a store flush) is trimmed at the latest
``interval`` seconds after the last trim. glibc's own count of free bytes
(``mallinfo2``) would be a poor guide and a dear one: memory reused and freed again
elsewhere faults pages in while the count stays level, and the count walks every free
chunk under the arena's lock (8 ms for 19,000 chunks). The trim runs on a worker thread
(ctypes releases the GIL): 0.2–2 ms on the server's heap, up to 10 MB given back; an
idle server trims once a minute (0.2 ms). In the fuzzer's runs RSS once idle went from
+4.9 % and +5.6 % of the baseline to +2.6 % and +3.8 % (15 s after the load) and to
-0.1 % after 300,000 inputs (70 s after). Without ``malloc_trim`` (musl, macOS, Windows)
the trimmer does nothing.

Example (with stand-ins for glibc, the RSS and the connections):
    >>> rss, load, now = [100 << 20], [0], [0.0]
    >>> def trim(pad):
    ...     rss[0] -= 3 << 20                    # what the trim gave back
    ...     return 1
    >>> t = HeapTrimmer(
    ...     lambda: load[0], trim=trim, rss=lambda: rss[0], clock=lambda: now[0], interval=60
    ... )
    >>> t.due()                                  # nothing happened
    False
    >>> load[0] = 8; t.due()                     # devices connect
    False
    >>> rss[0] += 4 << 20; t.due()               # and take memory
    True
    >>> t.trim_sync() >> 20, t.stats.trims
    (3, 1)
    >>> load[0] = 2; t.due()                     # some leave: their memory is free
    True
    >>> _ = t.trim_sync(); now[0] += 30; t.due()
    False
    >>> now[0] += 30; t.due()                    # a minute since the last trim
    True
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable

__all__ = ["HeapTrimmer", "TrimStats", "malloc_trim", "rss_bytes"]

log = logging.getLogger(__name__)

Trim = Callable[[int], int]


def _load_malloc_trim() -> Trim | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


#: glibc's ``malloc_trim(pad)`` (1: memory was released), None without glibc.
malloc_trim: Trim | None = _load_malloc_trim()

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size (0 where ``/proc`` is missing).

    >>> rss_bytes() > 0 or not sys.platform.startswith("linux")
    True
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


@dataclasses.dataclass
class TrimStats:
    """What the trimmer did: calls, bytes of RSS they gave back, time they took."""

    trims: int = 0
    released_bytes: int = 0
    seconds_total: float = 0.0
    seconds_max: float = 0.0


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` when the load ``load()`` (open connections) fell since
    the last look, when the RSS grew by ``slack`` bytes (default: 1 % of it, at least
    1 MiB) since the last trim, or ``interval`` s after the last trim; :meth:`run`
    looks every ``check`` s."""

    def __init__(
        self,
        load: Callable[[], int],
        *,
        check: float = 5.0,
        interval: float = 60.0,
        slack: int | None = None,
        trim: Trim | None = malloc_trim,
        rss: Callable[[], int] = rss_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load = load
        self.check = check
        self.interval = interval
        self.trim = trim
        self.rss = rss
        self.clock = clock
        self.stats = TrimStats()
        self._slack = slack
        self._base = rss()
        self._last = clock()
        self._seen = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Whether this C library can trim (glibc)."""
        return self.trim is not None

    @property
    def slack(self) -> int:
        return self._slack if self._slack is not None else max(1 << 20, self._base // 100)

    def due(self) -> bool:
        """Whether to trim now (see the class docstring)."""
        if self.trim is None:
            return False
        load = self.load()
        fell, self._seen = load < self._seen, load
        return (
            fell
            or self.rss() - self._base >= self.slack
            or self.clock() - self._last >= self.interval
        )

    def trim_sync(self) -> int:
        """Trim in this thread; the bytes of RSS it gave back."""
        if self.trim is None:
            return 0
        before = self.rss()
        t0 = time.perf_counter()
        self.trim(0)
        took = time.perf_counter() - t0
        self._base = self.rss()
        self._last = self.clock()
        released = max(0, before - self._base)
        self.stats.trims += 1
        self.stats.released_bytes += released
        self.stats.seconds_total += took
        self.stats.seconds_max = max(self.stats.seconds_max, took)
        log.debug("heap trim: %.1f MB given back in %.1f ms", released / 2**20, took * 1000)
        return released

    async def run(self) -> None:
        """Look every ``check`` s and trim on a worker thread when due; until cancelled."""
        if self.trim is None:
            return
        while True:
            await asyncio.sleep(self.check)
            if self.due():
                await asyncio.to_thread(self.trim_sync)

    def start(self) -> None:
        """Run :meth:`run` as a task of the running loop (no-op without glibc)."""
        if self.trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="xiaozhi-heap-trim"
            )

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
