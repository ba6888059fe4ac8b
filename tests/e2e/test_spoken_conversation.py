"""End to end with real audio: a sentence spoken by the offline TTS (espeak-ng), streamed
by a fake device as real-time Opus, through real VAD (silero) and ASR (whisper) — and,
on the default deployment, a real LLM (SmolLM2 via llama.cpp) and TTS (espeak-ng)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from xiaozhi_core.config import load_config, merge
from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.registry import default_registry
from xiaozhi_core.testing import fake_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def wer(ref: list[str], hyp: list[str]) -> float:
    """Word error rate (Levenshtein distance over words / reference length)."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


@pytest.fixture(scope="module")
def spoken_question() -> np.ndarray:
    """The question as 16 kHz int16 speech, made by the espeak provider."""
    from xiaozhi_espeak.plugin import EspeakOptions
    from xiaozhi_espeak.tts import EspeakTTS

    tts = EspeakTTS(EspeakOptions(voice="en-us", rate=150, sample_rate=16000))
    pcm = np.frombuffer(b"".join(tts.synthesize(QUESTION)), np.int16)
    assert len(pcm) > 16000
    return np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(24000, np.int16)])


async def converse(server: XiaozhiServer, audio: np.ndarray) -> FakeDevice:
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        await dev.stream(encode_utterance(audio), realtime=True)  # 60 ms per frame
        await dev.wait_for("tts", "stop", timeout=60)
    return dev


def assert_turn_shape(dev: FakeDevice) -> None:
    events = dev.events()
    assert events[:4] == ["hello", "stt", "llm", "tts:start"], events
    assert events[-1] == "tts:stop"
    assert events.index("audio") < events.index("tts:stop")
    reply = dev.decode_reply_audio()
    assert len(reply) > 24000 * 0.5  # half a second of speech at least
    assert np.sqrt(np.mean(reply.astype(np.float64) ** 2)) > 300  # not silence


async def test_real_speech_reaches_asr_with_the_right_words(spoken_question):
    """Real VAD + ASR; fake LLM/TTS so that the answer is known."""
    registry = default_registry()
    base = fake_config().raw
    raw = merge(
        base,
        {
            "vad": {"provider": "silero"},
            "asr": {"provider": "whisper", "options": {"model": "tiny.en"}},
            "llm": {"provider": "fake", "options": {"reply": "Paris. It is Paris."}},
            "server": {"limits": {"max_loop_lag_ms": 0}},
        },
    )
    from xiaozhi_core.config import _validate

    server = await XiaozhiServer.create(_validate(raw, registry, ["<test>"]))
    await server.start(port=0, http_port=0)
    try:
        dev = await converse(server, spoken_question)
    finally:
        await server.stop()
    stt = dev.messages("stt")[0]["text"]
    # tiny.en on espeak's robot voice sometimes hears "of" as "and": the content words
    # must be right, and the word error rate low
    assert {"what", "capital", "france"} <= set(words(stt)), stt
    assert wer(words(QUESTION), words(stt)) <= 0.34, stt
    assert_turn_shape(dev)
    subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
    assert subtitles == ["Paris.", "It is Paris."]


async def test_default_offline_deployment_answers_a_spoken_question(spoken_question, tmp_path):
    """configs/default.yaml, as shipped: no network, no key — a spoken answer."""
    registry = default_registry()
    override = tmp_path / "ports.yaml"
    override.write_text(
        "server: {port: 0, http_port: 0, limits: {max_loop_lag_ms: 0}}\n"
        f'store: {{data_dir: "{tmp_path / "data"}"}}\n'
    )
    config = load_config([ROOT / "configs" / "default.yaml", override], registry, auto_local=False)
    server = await XiaozhiServer.create(config)
    await server.start()
    try:
        dev = await converse(server, spoken_question)
    finally:
        await server.stop()
    stt = dev.messages("stt")[0]["text"]
    assert "capital" in words(stt) and "france" in words(stt), stt
    assert_turn_shape(dev)
    subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
    assert "".join(subtitles).strip()
    # the per-turn latency record reaches the metrics
    text = server.render_metrics().decode()
    stages = {}
    for line in text.splitlines():
        m = re.match(r'xiaozhi_turn_latency_seconds_sum\{stage="(\w+)"\} (\S+)', line)
        if m:
            stages[m.group(1)] = float(m.group(2))
    assert {"asr_final", "llm_first_token", "tts_first_audio", "first_frame_sent", "total"} <= set(
        stages
    )
    print("offline turn latency (s):", json.dumps(stages))
