"""Text helpers for the turn: cutting a token stream into sentences for TTS as they
arrive, cleaning text for speech, and picking the face (emotion) for the reply.

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
"""

from __future__ import annotations

import re

__all__ = ["SentenceCutter", "clean_for_speech", "detect_emotion"]

# ASCII terminators need a following space (so "3.14" and "e.g." mid-word survive);
# CJK terminators end a sentence at once.
_CUT = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；…\n])|\n+")
_EMOJI_RE = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")
_MARKDOWN_RE = re.compile(r"[*_#`>~]+")

_EMOJI_EMOTION = {
    "😂": "funny", "🤣": "laughing", "😆": "laughing", "😄": "happy", "😊": "happy",
    "🙂": "happy", "😢": "sad", "😭": "crying", "😔": "sad", "😠": "angry", "😡": "angry",
    "😍": "loving", "❤": "loving", "😳": "embarrassed", "😯": "surprised", "😮": "surprised",
    "😱": "shocked", "🤔": "thinking", "😉": "winking", "😎": "cool", "😌": "relaxed",
    "😋": "delicious", "😘": "kissy", "😏": "confident", "😴": "sleepy", "😜": "silly",
    "😕": "confused", "🙄": "confused",
}
_WORD_EMOTION = [
    (re.compile(r"\b(haha|lol)\b|哈哈", re.I), "laughing"),
    (re.compile(r"\b(sorry|unfortunately|sad)\b|抱歉|难过|遗憾", re.I), "sad"),
    (re.compile(r"\b(wow|amazing|really\?)\b|哇|真的吗", re.I), "surprised"),
    (re.compile(r"\b(love|lovely)\b|喜欢|爱", re.I), "loving"),
    (re.compile(r"\b(hmm|let me think|i think)\b|嗯|让我想想", re.I), "thinking"),
    (re.compile(r"\b(great|glad|happy|sure|of course|hello|hi)\b|好的|高兴|开心|你好", re.I),
     "happy"),
]


_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def _weight(text: str) -> int:
    """Length where a CJK character counts twice (it carries about a word)."""
    return len(text) + len(_CJK_RE.findall(text))


class SentenceCutter:
    """Accumulates streamed text and returns complete sentences as soon as they end.

    ``min_chars`` avoids speaking tiny fragments ("Hi." is kept with what follows when
    shorter); the first sentence uses ``first_min_chars`` so audio starts early.
    """

    def __init__(self, min_chars: int = 8, first_min_chars: int = 2) -> None:
        self.buffer = ""
        self.min_chars = min_chars
        self.first_min_chars = first_min_chars
        self.emitted = 0

    def feed(self, delta: str) -> list[str]:
        self.buffer += delta
        out: list[str] = []
        while True:
            cut = None
            for m in _CUT.finditer(self.buffer):
                head = self.buffer[:m.start()].strip()
                need = self.first_min_chars if self.emitted == 0 and not out else self.min_chars
                if _weight(head) >= need:
                    cut = m
                    break
            if cut is None:
                return out
            sentence = self.buffer[:cut.start()].strip()
            self.buffer = self.buffer[cut.end():]
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
    """Remove emoji and markdown markup that TTS engines would read out."""
    return re.sub(r"\s+", " ", _MARKDOWN_RE.sub("", _EMOJI_RE.sub("", text))).strip()


def detect_emotion(text: str) -> str:
    for ch in text:
        if ch in _EMOJI_EMOTION:
            return _EMOJI_EMOTION[ch]
    for pattern, emotion in _WORD_EMOTION:
        if pattern.search(text):
            return emotion
    return "neutral"
