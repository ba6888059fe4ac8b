"""Log output an operator can use: ``--log-format text|json``, and bounding of the
device-supplied strings in structured log fields (``repr`` clipping for text lines is
:func:`xiaozhi_core.logutil.clip`).

In JSON every record is one object per line: ``time``, ``level``, ``logger``,
``message``, plus the structured fields a record carries (the per-turn line carries
``turn``: device, session, profile, outcome, latency record, transcript when enabled).

Example:
    >>> import logging
    >>> record = logging.LogRecord("xiaozhi_core.x", logging.INFO, "f", 1, "turn %s", ("ok",),
    ...                            None)
    >>> record.turn = {"device": "aa:bb", "outcome": "ok"}
    >>> line = JsonFormatter().format(record)
    >>> import json; json.loads(line)["turn"]["outcome"], json.loads(line)["message"]
    ('ok', 'turn ok')
    >>> cut("x" * 100, 5)
    'xxxxx…(+95 chars)'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Literal, TextIO

__all__ = ["FORMATS", "JsonFormatter", "TEXT_FORMAT", "configure", "cut", "plain"]

#: Structured fields a record may carry (``extra=``) that the JSON form keeps.
_FIELDS = ("turn", "device", "session")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


def cut(value: str | None, n: int) -> str | None:
    """``value`` cut to ``n`` characters, saying how much was cut (for structured logs).

    >>> cut("abcdef", 3), cut(None, 3)
    ('abc…(+3 chars)', None)
    """
    if value is None or len(value) <= n:
        return value
    return f"{value[:n]}…(+{len(value) - n} chars)"


def plain(value: str, n: int = 64) -> str:
    """An identifier from a device for a log line: control characters and spaces
    replaced, cut to ``n``.

    >>> plain("aa:bb\\n FAKE LINE")
    'aa:bb??FAKE?LINE'
    """
    out = "".join(c if c.isprintable() and not c.isspace() else "?" for c in value[:n])
    return out + ("…" if len(value) > n else "")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (UTC time, level, logger, message, fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(
    level: str = "warning",
    fmt: Literal["text", "json"] | str = "text",
    stream: TextIO | None = None,
) -> None:
    """Set up the root logger: ``level`` and ``fmt`` on ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_xiaozhi", False):
            root.removeHandler(old)
    handler._xiaozhi = True  # type: ignore[attr-defined]
    if not root.handlers:  # like logging.basicConfig: leave a host's handlers alone
        root.addHandler(handler)
    root.setLevel(level.upper())
    os.environ["XIAOZHI_LOG_FORMAT"] = fmt  # worker processes log the same way
