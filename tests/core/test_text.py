"""Sentence cutting, cleaning and emotion for English and Chinese replies."""

from __future__ import annotations

import pytest

from xiaozhi_core.session.text import SentenceCutter, clean_for_speech, detect_emotion


def stream(text: str, step: int = 1, **kwargs: int) -> list[str]:
    cut = SentenceCutter(**kwargs)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += cut.feed(text[i : i + step])
    return out + cut.flush()


def test_english_unchanged_long_sentence_is_not_cut_at_commas() -> None:
    text = (
        "Sure, the time is 5:35 PM, on Monday, December 7, 2026, and it is a lovely "
        "evening here, with a clear sky. Bye now."
    )
    assert stream(text, 3) == [
        "Sure, the time is 5:35 PM, on Monday, December 7, 2026, and it is a lovely "
        "evening here, with a clear sky.",
        "Bye now.",
    ]
    assert stream("Pi is 3.14 today. OK") == ["Pi is 3.14 today.", "OK"]


def test_chinese_sentences_cut_at_chinese_terminators_token_by_token() -> None:
    assert stream("你好！今天天气很好。你想去哪里？我们走吧；好") == [
        "你好！",
        "今天天气很好。",
        "你想去哪里？",
        "我们走吧；",
        "好",
    ]


def test_chinese_long_run_cut_at_last_comma_short_run_kept() -> None:
    text = (
        "现在是下午五点三十五分，今天是二零二六年十二月七日，星期一，"
        "如果你还有其他问题请随时告诉我。"
    )
    pieces = stream(text)
    assert "".join(pieces) == text
    assert len(pieces) >= 2 and all(p[-1] in "，。" for p in pieces)
    assert stream("好的，没问题。") == ["好的，没问题。"]


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**今天**\n天气不错 😊", "今天天气不错"),
        ("## 步骤\n1. 烧水\n2. 泡茶", "步骤烧水泡茶"),
        ("- 北京：晴\n- 上海：雨", "北京：晴上海：雨"),
        ("看看[这里](https://example.com/x)吧", "看看这里吧"),
        ("`code` and __bold__ text", "code and bold text"),
        ("温度是 25 度", "温度是 25 度"),
        ("It costs 3.5 元", "It costs 3.5 元"),
    ],
)
def test_clean_for_speech(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


@pytest.mark.parametrize(
    ("text", "emotion"),
    [
        ("哈哈，这个太好笑了", "laughing"),
        ("对不起，我没听清楚。", "sad"),
        ("哇，真的吗？", "surprised"),
        ("好的，马上帮你调。", "happy"),
        ("让我想想。", "thinking"),
        ("太晚了，晚安。", "sleepy"),
        ("我好生气！", "angry"),
        ("今天是星期一。", "neutral"),
        ("好呀 😂", "funny"),
        ("Sorry, I can't.", "sad"),
    ],
)
def test_detect_emotion(text: str, emotion: str) -> None:
    assert detect_emotion(text) == emotion
