"""Spoken forms the Baker front-end gets wrong, fixed before it sees the text.

The front-end reads digits well ("25" -> 二十五, "2026年" -> 二零二六年, "20%" ->
百分之二十) but not clock times, ISO dates or the counting form of 2:

Example:
    >>> normalize_zh("现在是2026-12-07T14:05:09+08:00，星期一")
    '现在是2026年12月7日14点05分，星期一'
    >>> normalize_zh("下午3:30，买2个苹果，第2个，12点，8:00")
    '下午3点30分，买两个苹果，第2个，12点，8点整'
"""

from __future__ import annotations

import re

__all__ = ["normalize_zh"]

_ISO = re.compile(
    r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::\d{2}(?:\.\d+)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?)?(?!\d)"
)
_CLOCK = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::\d{2})?(?![\d:])")
_TWO = re.compile(r"(?<![\d.第])2(?=[个点只本张位件条次天岁台辆双对把杯瓶种块层份场分钟小时])")


def _clock(hour: str, minute: str) -> str:
    return f"{int(hour)}点整" if minute == "00" else f"{int(hour)}点{minute}分"


def _iso(m: re.Match[str]) -> str:
    date = f"{m[1]}年{int(m[2])}月{int(m[3])}日"
    return date + (_clock(m[4], m[5]) if m[4] else "")


def normalize_zh(text: str) -> str:
    """Rewrite ISO dates, clock times and a counted 2 into words the front-end reads."""
    text = _ISO.sub(_iso, text)
    text = _CLOCK.sub(lambda m: _clock(m[1], m[2]), text)
    return _TWO.sub("两", text)
