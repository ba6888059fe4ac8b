"""Tidy Whisper's Chinese output: full-width punctuation, no spaces, a final mark.

Whisper writes Mandarin with ASCII punctuation ("今天天气怎么样?"), sometimes with none
at all, and with spaces where its segments meet. The LLM and the device's subtitles
read better with what a Chinese writer would type:

Example:
    >>> tidy_chinese(" 今天天气怎么样?")
    '今天天气怎么样？'
    >>> tidy_chinese("给我讲个笑话吧 我想笑")
    '给我讲个笑话吧，我想笑。'
    >>> tidy_chinese("你叫什么名字")
    '你叫什么名字？'
    >>> tidy_chinese("打开 WiFi, 然后播放音乐")
    '打开 WiFi，然后播放音乐。'
    >>> tidy_chinese("")
    ''
"""

from __future__ import annotations

import re

__all__ = ["tidy_chinese"]

_CJK = r"\u3400-\u9fff"
_FULL = {",": "，", "?": "？", "!": "！", ":": "：", ";": "；", ".": "。"}
# ASCII punctuation touching a CJK character on either side (not "3.5", not "e.g.").
_ASCII_PUNCT = re.compile(rf"(?<=[{_CJK}])\s*([,?!:;.])|([,?!:;.])\s*(?=[{_CJK}])")
# Whitespace between two CJK characters: Whisper's segment joins; a pause, so a comma.
_CJK_SPACE = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_QUESTION = re.compile(
    r"(吗|呢|么|什么|怎么|怎样|几|哪|谁|多少|为什么|是不是|能不能"
    r"|可不可以|有没有|对不对)[^，。！？]{0,6}$"
)


def tidy_chinese(text: str) -> str:
    """Chinese punctuation for Chinese text (text without CJK is returned stripped)."""
    text = text.strip()
    if not re.search(rf"[{_CJK}]", text):
        return text
    text = _ASCII_PUNCT.sub(lambda m: _FULL[m[1] or m[2]], text)
    text = _CJK_SPACE.sub("，", text)
    if text and text[-1] not in "。！？…；，、":
        text += "？" if _QUESTION.search(text) else "。"
    return text
