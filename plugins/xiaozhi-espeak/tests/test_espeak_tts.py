"""The ``espeak`` TTS provider against the real libespeak-ng from ``espeakng-loader``."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pytest
from xiaozhi_espeak._engine import get_engine
from xiaozhi_espeak.plugin import EspeakOptions
from xiaozhi_espeak.tts import EspeakTTS, UnknownVoiceError, list_voices

from xiaozhi_core.errors import ConfigError, ExecutionPolicyError, ProviderError
from xiaozhi_core.executor import Executor, ExecutorSettings, build, check_policy
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.registry import default_registry
from xiaozhi_core.types import Execution, Role

EN = "The quick brown fox jumps over the lazy dog."
ZH = "你好，今天天气很好。"
PARAGRAPH = (
    "Once upon a time there was a small robot who lived in a quiet village by the sea. "
    "Every morning it walked along the beach, counting the waves and greeting the fishermen."
)


def pcm(chunks: Iterable[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype="<i2")


def envelope(x: np.ndarray, rate: int, ms: int = 10) -> np.ndarray:
    hop = rate * ms // 1000
    n = len(x) // hop
    return np.sqrt(np.mean(x[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))


def similar(a: np.ndarray, b: np.ndarray, rate: int) -> float:
    """Correlation of the 10 ms loudness envelopes (espeak adds tiny random jitter, so
    two renderings of the same text are ~0.99 alike, different texts ~0.3)."""
    ea, eb = envelope(a, rate), envelope(b, rate)
    n = min(len(ea), len(eb))
    return float(np.corrcoef(ea[:n], eb[:n])[0, 1])


def assert_speech(audio: np.ndarray, rate: int, low: float, high: float) -> None:
    seconds = len(audio) / rate
    assert low < seconds < high, seconds
    env = envelope(audio, rate, 20)
    assert float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > 1000  # not silent
    assert np.mean(env > 300) > 0.5  # voiced most of the time, not one click
    assert np.abs(audio).max() < 32767  # no clipping from volume or resampling


@pytest.fixture(scope="module")
def tts24() -> EspeakTTS:
    return EspeakTTS(EspeakOptions())


@pytest.mark.parametrize("rate", [16000, 24000])
def test_sentence_is_non_silent_plausible_and_chunked(rate: Literal[16000, 24000]) -> None:
    tts = EspeakTTS(EspeakOptions(sample_rate=rate, chunk_ms=100))
    assert tts.sample_rate == rate
    chunks = list(tts.synthesize(EN))
    size = 2 * rate // 10
    assert all(isinstance(c, bytes) for c in chunks)
    assert all(len(c) == size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= size
    # 9 words at 175 wpm plus the sentence pause: espeak-ng makes ~2.9 s.
    audio = pcm(chunks)
    assert_speech(audio, rate, 2.0, 4.0)
    # Energy sits where speech is (formants below 4 kHz), nothing odd at the top.
    spec = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    assert spec[freqs < 4000].sum() / spec.sum() > 0.9


def test_16k_and_24k_are_the_same_speech() -> None:
    a = pcm(EspeakTTS(EspeakOptions(sample_rate=16000)).synthesize(EN))
    b = pcm(EspeakTTS(EspeakOptions(sample_rate=24000)).synthesize(EN))
    assert len(a) / 16000 == pytest.approx(len(b) / 24000, rel=0.02)
    eb16 = b[::3][: len(b) // 3]  # crude 24k -> 8k vs 16k -> 8k is enough for envelopes
    assert similar(a[::2], eb16, 8000) > 0.9


def test_mandarin_with_voice_cmn() -> None:
    tts = EspeakTTS(EspeakOptions(voice="cmn", sample_rate=16000))
    audio = pcm(tts.synthesize(ZH))
    assert_speech(audio, 16000, 1.5, 4.5)
    # An English voice spells each hanzi out ("Chinese letter ...", ~5.7 s); the Mandarin
    # voice reads them as syllables, so it is much shorter.
    english = pcm(EspeakTTS(EspeakOptions(voice="en-us", sample_rate=16000)).synthesize(ZH))
    assert len(audio) < 0.7 * len(english)


def test_per_call_voice_overrides_the_option(tts24: EspeakTTS) -> None:
    cmn = pcm(tts24.synthesize(ZH, voice="cmn"))
    en = pcm(tts24.synthesize(ZH))
    assert len(cmn) < 0.7 * len(en)
    # Language tags and variants work too ('zh' is resolved by language, not by name).
    assert len(pcm(tts24.synthesize(ZH, voice="zh"))) == pytest.approx(len(cmn), rel=0.05)
    assert_speech(pcm(tts24.synthesize(EN, voice="en-us+f3")), 24000, 2.0, 4.0)


def test_empty_text_yields_nothing(tts24: EspeakTTS) -> None:
    assert list(tts24.synthesize("")) == []
    assert list(tts24.synthesize("  \n\t ")) == []


def test_unknown_voice_is_a_precise_provider_error(tts24: EspeakTTS) -> None:
    with pytest.raises(
        ProviderError,
        match=r"unknown voice 'xx-nope'.*python -m xiaozhi_espeak "
        r"voices",
    ):
        EspeakTTS(EspeakOptions(voice="xx-nope"))
    with pytest.raises(UnknownVoiceError, match="unknown voice 'qq-nope'"):
        list(tts24.synthesize(EN, voice="qq-nope"))
    # A failed selection must not leave the library without a voice.
    assert_speech(pcm(tts24.synthesize(EN)), 24000, 2.0, 4.0)


def test_options_are_validated() -> None:
    spec = espeak_spec()
    with pytest.raises(
        ConfigError, match="sample_rate: .*22050.* is not allowed; allowed: 16000, 24000"
    ):
        spec.validate({"sample_rate": 22050}, path="tts.options")
    with pytest.raises(ConfigError, match=r"^tts\.options\.rate: must be in 80\.\.450, got 600$"):
        spec.validate({"rate": 600}, path="tts.options")
    with pytest.raises(ConfigError, match="unknown key 'speed'"):
        spec.validate({"speed": 1.0}, path="tts.options")


def test_rate_pitch_and_volume_take_effect() -> None:
    slow = pcm(EspeakTTS(EspeakOptions(rate=120)).synthesize(EN))
    fast = pcm(EspeakTTS(EspeakOptions(rate=350)).synthesize(EN))
    assert len(slow) > 2.2 * len(fast)
    quiet = pcm(EspeakTTS(EspeakOptions(volume=40)).synthesize(EN)).astype(np.float64)
    loud = pcm(EspeakTTS(EspeakOptions(volume=100)).synthesize(EN)).astype(np.float64)
    assert np.sqrt(np.mean(quiet**2)) < 0.6 * np.sqrt(np.mean(loud**2))
    low = pcm(EspeakTTS(EspeakOptions(pitch=10)).synthesize(EN))
    high = pcm(EspeakTTS(EspeakOptions(pitch=90)).synthesize(EN))
    assert median_f0(high, 24000) > 1.3 * median_f0(low, 24000)


def median_f0(x: np.ndarray, rate: int) -> float:
    """Median autocorrelation pitch of the loud 40 ms frames (60-400 Hz)."""
    hop = rate * 40 // 1000
    f0s = []
    for i in range(0, len(x) - hop, hop):
        frame = x[i : i + hop].astype(np.float64)
        if np.sqrt(np.mean(frame**2)) < 1500:
            continue
        frame -= frame.mean()
        ac = np.correlate(frame, frame, "full")[hop - 1 :]
        lo, hi = rate // 400, rate // 60
        f0s.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0s))


def test_two_threads_at_once_both_get_their_own_audio() -> None:
    en_tts = EspeakTTS(EspeakOptions(voice="en-us", sample_rate=24000, chunk_ms=40))
    zh_tts = EspeakTTS(EspeakOptions(voice="cmn", sample_rate=16000, chunk_ms=40))
    jobs = {
        "en": (en_tts, PARAGRAPH, None, 24000),
        "zh": (zh_tts, ZH * 3, None, 16000),
        "en-as-f3": (en_tts, EN, "en-us+f3", 24000),
    }
    reference = {k: pcm(t.synthesize(text, voice=v)) for k, (t, text, v, _) in jobs.items()}
    results: dict[str, list[np.ndarray]] = {k: [] for k in jobs}
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker(key: str) -> None:
        tts, text, voice, _ = jobs[key]
        try:
            barrier.wait()
            for _ in range(4):
                results[key].append(pcm(tts.synthesize(text, voice=voice)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for key, (_, _, _, rate) in jobs.items():
        assert len(results[key]) == 4
        for audio in results[key]:
            assert len(audio) == pytest.approx(len(reference[key]), rel=0.03), key
            assert similar(audio, reference[key], rate) > 0.9, key
    # And they really are different utterances (a mix-up would show here).
    assert similar(reference["en"], reference["zh"][: len(reference["en"])], 16000) < 0.8


def test_closing_the_stream_early_leaves_the_engine_usable(tts24: EspeakTTS) -> None:
    gen = tts24.synthesize(PARAGRAPH)
    first = next(gen)
    assert len(first) == 2 * 24000 // 10
    gen.close()
    assert_speech(pcm(tts24.synthesize(EN)), 24000, 2.0, 4.0)


def test_list_voices(tts24: EspeakTTS) -> None:
    voices = list_voices()
    assert len(voices) > 100
    codes = {v.code for v in voices}
    assert {"en-us", "cmn", "yue", "fr-fr", "de"} <= codes
    cmn = [v for v in tts24.list_voices("cmn") if v.code == "cmn"]
    assert cmn and cmn[0].identifier == "sit/cmn" and ("zh", 5) in cmn[0].languages
    assert {v.code for v in list_voices("en")} >= {"en-us", "en-gb"}
    assert list_voices("xx") == []


def test_one_engine_per_process() -> None:
    a = EspeakTTS(EspeakOptions(voice="cmn"))
    b = EspeakTTS(EspeakOptions(voice="en-us"))
    assert a.engine is b.engine is get_engine()
    assert get_engine().sample_rate == 22050
    # The provider never uses the espeak-ng program: the library is espeakng-loader's.
    assert "espeakng_loader" in get_engine().library_path


def espeak_spec() -> ProviderSpec:
    spec = default_registry().get("tts", "espeak")
    assert isinstance(spec, ProviderSpec)
    return spec


def test_discovered_through_entry_point_and_accepted_as_cpu(tts24: EspeakTTS) -> None:
    spec = espeak_spec()
    assert spec.role is Role.TTS and spec.execution is Execution.CPU
    assert spec.factory_path == "xiaozhi_espeak.tts:EspeakTTS"
    assert check_policy(spec, tts24) == ["synthesize"]
    # The same class declared 'io' is refused: its work method is a blocking generator.
    io_spec = ProviderSpec(
        role=Role.TTS,
        name="espeak",
        execution=Execution.IO,
        factory=spec.factory,
        options=spec.options,
    )
    with pytest.raises(ExecutionPolicyError, match="declared 'io'"):
        check_policy(io_spec, tts24)


async def test_streams_through_the_core_executor() -> None:
    spec = espeak_spec()
    executor = Executor(ExecutorSettings(cpu_workers=2))
    try:
        bound = await build(spec, spec.validate({"voice": "cmn", "sample_rate": 16000}), executor)
        assert bound.sample_rate == 16000 and bound.execution is Execution.CPU

        async def collect(text: str, voice: str | None) -> np.ndarray:
            return pcm([chunk async for chunk in bound.synthesize(text, voice=voice)])

        zh, en = await asyncio.gather(collect(ZH, None), collect(EN, "en-us"))
        assert_speech(zh, 16000, 1.5, 4.5)
        assert_speech(en, 16000, 2.0, 4.0)
        assert executor.stats()["completed"] > 10  # every chunk came through the pool
    finally:
        executor.shutdown()


async def test_streams_through_a_process_pool() -> None:
    spec = espeak_spec()
    executor = Executor(ExecutorSettings(kind="process", cpu_workers=1))
    try:
        bound = await build(spec, spec.validate({"sample_rate": 16000}), executor)
        audio = pcm([chunk async for chunk in bound.synthesize(EN)])
        assert_speech(audio, 16000, 2.0, 4.0)
    finally:
        executor.shutdown()


def _samples_in_child(text: str) -> tuple[int, bool]:
    from xiaozhi_espeak import _engine as engine

    fresh = engine._engine is None  # the parent's engine was dropped at fork
    return len(EspeakTTS(EspeakOptions(sample_rate=16000)).synthesize(text).__next__()), fresh


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_forked_child_builds_its_own_engine(tts24: EspeakTTS) -> None:
    # The parent's engine (and its lock, which another thread might hold at fork time)
    # is not inherited: the child loads and initialises its own library instance.
    assert get_engine() is tts24.engine
    with multiprocessing.get_context("fork").Pool(1) as pool:
        size, fresh = pool.apply(_samples_in_child, (EN,))
    assert fresh and size == 3200
    assert_speech(pcm(tts24.synthesize(EN)), 24000, 2.0, 4.0)
