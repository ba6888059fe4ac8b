"""Logging helpers against log amplification: anything a device or an HTTP client sends
can end up in a log line, so such values are clipped, and lines an outsider can trigger
at will are rate-limited per key (the suppressed ones are counted instead).

Example:
    >>> clip("x" * 1000, 10)
    "'xxxxxxxxxx'…(+990 chars)"
    >>> clip("short")
    "'short'"
    >>> clip(5)
    '5'
    >>> limiter = LogLimiter(burst=2, per_second=0.0)
    >>> [limiter.allow("peer-1") for _ in range(3)], limiter.suppressed
    ([True, True, False], 1)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sized

__all__ = ["LogLimiter", "clip"]

#: Longest device-supplied value (its ``repr``) written into a log line.
CLIP_CHARS = 80


def clip(value: object, n: int = CLIP_CHARS) -> str:
    """``repr(value)`` cut to about ``n`` characters, saying how much was cut.

    Strings are cut *before* ``repr`` so a 60 KB value costs O(n), not O(60 KB).

    >>> clip("ab\\ud800", 10)
    "'ab\\\\ud800'"
    >>> clip(["a" * 50], 8)
    "['aaaaaa…"
    """
    if isinstance(value, str):
        if len(value) <= n:
            return repr(value)
        return f"{value[:n]!r}…(+{len(value) - n} chars)"
    text = repr(value) if isinstance(value, int | float | bool | None) else _short_repr(value, n)
    return text if len(text) <= n else f"{text[:n]}…"


def _short_repr(value: object, n: int) -> str:
    """repr of a container, without building the whole repr of a huge one."""
    if not isinstance(value, Sized):
        return repr(value)[: n * 4]
    try:
        size = len(value)
    except TypeError:
        return repr(value)[: n * 4]
    if size > n:
        return f"<{type(value).__name__} of {size} items>"
    try:
        return repr(value)[: n * 4]
    except RecursionError:
        return f"<deeply nested {type(value).__name__}>"


class LogLimiter:
    """Token bucket per key: ``allow(key)`` is true for the first ``burst`` calls and then
    ``per_second`` times a second. Suppressed calls are counted (``suppressed`` and the
    optional ``on_suppressed(key)`` callback, e.g. a metrics counter).

    Keys are bounded (``max_keys``, least recently used dropped) so a flood of distinct
    peers cannot grow it without limit. Each call is O(1).

    >>> t = [0.0]
    >>> lim = LogLimiter(burst=1, per_second=1.0, clock=lambda: t[0])
    >>> lim.allow("k"), lim.allow("k")
    (True, False)
    >>> t[0] = 1.0; lim.allow("k")
    True
    """

    def __init__(
        self,
        burst: int = 5,
        per_second: float = 0.2,
        max_keys: int = 1024,
        on_suppressed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst)
        self.rate = per_second
        self.max_keys = max_keys
        self.on_suppressed = on_suppressed
        self.clock = clock
        self.suppressed = 0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if not allowed:
            self.suppressed += 1
            if self.on_suppressed is not None:
                self.on_suppressed(key)
        return allowed
