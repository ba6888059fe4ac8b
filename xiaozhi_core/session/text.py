"""Text helpers for the turn: cutting a token stream into sentences for TTS as they
arrive, cleaning text for speech, and picking the face (emotion) for the reply.

English and Chinese (and mixed) replies are handled alike: sentences end at ``. ! ? ;``
followed by a space, or at once at ``。！？；…`` and newlines; a long run without such an
end is also cut after a Chinese comma (``，、：``), so a long Chinese sentence starts
playing before the model has finished it (English runs are cut at sentence ends only).
Cleaning removes markdown and emoji without ever putting a space between two CJK
characters.

Example:
    >>> cut = SentenceCutter()
    >>> cut.feed("Hello there. How")
    ['Hello there.']
    >>> cut.feed(" are you? 今天天气很好。")
    ['How are you?', '今天天气很好。']
    >>> cut.flush()
    []
    >>> detect_emotion("Haha, that is funny 😂")
    'funny'
    >>> detect_emotion("哈哈，太好笑了")
    'laughing'
    >>> clean_for_speech("**今天**\\n天气不错 😊")
    '今天天气不错'
"""

from __future__ import annotations

import re

__all__ = ["SentenceCutter", "clean_for_speech", "detect_emotion"]

# ASCII terminators need a following space (so "3.14" and "e.g." mid-word survive);
# CJK terminators end a sentence at once.
_CUT = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；…\n])|\n+")
# Chinese commas: a cut point only once the run is long (see SentenceCutter.comma_chars).
_COMMA_CUT = re.compile(r"(?<=[，、：])")
_EMOJI_RE = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d\u20e3]")
_MARKDOWN_RE = re.compile(r"[*_#`>~|]+")
# [text](url) -> text; bare URLs are not speakable.
_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL_RE = re.compile(r"https?://\S+")
# List markers at the start of a line: "- ", "* ", "• ", "1. ", "2) ", "一、".
_BULLET_RE = re.compile(r"(?m)^\s*(?:[-*+•·]|\d{1,2}[.)](?!\d)|[一二三四五六七八九十]+、)\s*")
# Horizontal rules and table separators (---, ===, |---|).
_RULE_RE = re.compile(r"(?m)^\s*[-=:|\s]{3,}$")
_CJK = "\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uff00-\uffef\u3000-\u303f"
# Whitespace between two CJK characters (or CJK punctuation) is dropped, not kept as " ".
_CJK_GAP_RE = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")

_EMOJI_EMOTION = {
    "😂": "funny",
    "🤣": "laughing",
    "😆": "laughing",
    "😄": "happy",
    "😊": "happy",
    "🙂": "happy",
    "😢": "sad",
    "😭": "crying",
    "😔": "sad",
    "😠": "angry",
    "😡": "angry",
    "😍": "loving",
    "❤": "loving",
    "😳": "embarrassed",
    "😯": "surprised",
    "😮": "surprised",
    "😱": "shocked",
    "🤔": "thinking",
    "😉": "winking",
    "😎": "cool",
    "😌": "relaxed",
    "😋": "delicious",
    "😘": "kissy",
    "😏": "confident",
    "😴": "sleepy",
    "😜": "silly",
    "😕": "confused",
    "🙄": "confused",
}
_WORD_EMOTION = [
    (re.compile(r"\b(haha|lol)\b|哈哈|嘿嘿|嘻嘻|好笑", re.I), "laughing"),
    (re.compile(r"\b(sorry|unfortunately|sad)\b|抱歉|对不起|难过|遗憾|伤心|可惜", re.I), "sad"),
    (re.compile(r"\b(angry|annoying)\b|生气|气死|讨厌", re.I), "angry"),
    (re.compile(r"\b(wow|amazing|really\?)\b|哇|真的吗|天哪|居然|竟然", re.I), "surprised"),
    (re.compile(r"\b(love|lovely)\b|喜欢|爱你|可爱", re.I), "loving"),
    (re.compile(r"\b(hmm|let me think|i think)\b|嗯|让我想想|我想想|我觉得", re.I), "thinking"),
    (re.compile(r"\b(sleepy|good night)\b|困了|晚安", re.I), "sleepy"),
    (
        re.compile(
            r"\b(great|glad|happy|sure|of course|hello|hi)\b"
            r"|好的|高兴|开心|你好|当然|没问题|太好了",
            re.I,
        ),
        "happy",
    ),
]


_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def _weight(text: str) -> int:
    """Length where a CJK character counts twice (it carries about a word)."""
    return len(text) + len(_CJK_RE.findall(text))


class SentenceCutter:
    """Accumulates streamed text and returns complete sentences as soon as they end.

    ``min_chars`` avoids speaking tiny fragments ("Hi." is kept with what follows when
    shorter); the first sentence uses ``first_min_chars`` so audio starts early. A run
    of at least ``comma_chars`` (weighted: a CJK character counts 2) without a sentence
    end is cut at its last comma:

    >>> cut = SentenceCutter(comma_chars=20)
    >>> cut.feed("今天北京晴，最高气温二十五度，最低")
    ['今天北京晴，最高气温二十五度，']
    >>> cut.feed("十五度，适合出门。")
    ['最低十五度，适合出门。']
    >>> SentenceCutter().feed("好的，")  # short runs keep their commas
    []
    """

    def __init__(self, min_chars: int = 8, first_min_chars: int = 2, comma_chars: int = 40) -> None:
        self.buffer = ""
        self.min_chars = min_chars
        self.first_min_chars = first_min_chars
        self.comma_chars = comma_chars
        self.emitted = 0

    def _cut_at(self, out: list[str]) -> tuple[int, int] | None:
        need = self.first_min_chars if self.emitted == 0 and not out else self.min_chars
        for m in _CUT.finditer(self.buffer):
            if _weight(self.buffer[: m.start()].strip()) >= need:
                return m.start(), m.end()
            # A terminator too early to cut at: a later comma may still be one.
        if _weight(self.buffer.strip()) < self.comma_chars:
            return None
        best = None
        for m in _COMMA_CUT.finditer(self.buffer):
            if _weight(self.buffer[: m.start()].strip()) >= max(need, self.comma_chars // 2):
                best = (m.start(), m.end())  # the last comma: the longest piece
        return best

    def feed(self, delta: str) -> list[str]:
        self.buffer += delta
        out: list[str] = []
        while True:
            cut = self._cut_at(out)
            if cut is None:
                return out
            sentence = self.buffer[: cut[0]].strip()
            self.buffer = self.buffer[cut[1] :]
            if sentence:
                out.append(sentence)
                self.emitted += 1

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        if rest:
            self.emitted += 1
            return [rest]
        return []


def clean_for_speech(text: str) -> str:
    """Remove emoji, links and markdown markup that TTS engines would read out.

    >>> clean_for_speech("## Steps\\n1. Boil water\\n- Add *tea*, see [docs](http://x.y)")
    'Steps Boil water Add tea, see docs'
    >>> clean_for_speech("第一步： 烧水 。 It costs 3.5 元")
    '第一步：烧水。 It costs 3.5 元'
    """
    text = _URL_RE.sub("", _LINK_RE.sub(r"\1", _EMOJI_RE.sub("", text)))
    text = _MARKDOWN_RE.sub("", _BULLET_RE.sub("", _RULE_RE.sub("", text)))
    text = _CJK_GAP_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def detect_emotion(text: str) -> str:
    """The face for a reply: from its first emoji, else from words (English or Chinese).

    >>> detect_emotion("抱歉，我没听清。"), detect_emotion("今天天气不错。")
    ('sad', 'neutral')
    """
    for ch in text:
        if ch in _EMOJI_EMOTION:
            return _EMOJI_EMOTION[ch]
    for pattern, emotion in _WORD_EMOTION:
        if pattern.search(text):
            return emotion
    return "neutral"
