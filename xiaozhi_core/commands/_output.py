"""Small output helpers shared by the commands."""

from __future__ import annotations

from typing import TextIO

__all__ = ["one_line", "table"]


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines too) folded to one space.

    >>> one_line("a\\n  b")
    'a b'
    """
    return " ".join(str(text).split())


def table(rows: list[list[str]], out: TextIO) -> None:
    """Print ``rows`` as left-aligned columns (the first row is the header).

    >>> import sys
    >>> table([["ROLE", "NAME"], ["asr", "whisper"]], sys.stdout)
    ROLE  NAME
    asr   whisper
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
