"""ASR ``openai``: the utterance is uploaded as a valid 16 kHz WAV; the reply's text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fake_openai import FakeOpenAI, TranscriptionReply, wav_samples

from xiaozhi_core.testing import tone
from xiaozhi_core.types import ASRResult


async def test_transcribes_an_utterance_uploaded_as_wav(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    asr = make_provider("asr", model="whisper-1")
    fake_openai.script_transcription(TranscriptionReply("  今天天气怎么样  "))
    audio = tone(1.25, freq=300.0)
    result = await asr.transcribe(audio)
    assert result == ASRResult("今天天气怎么样", final=True, language=None)

    request = fake_openai.requests[-1]
    assert request.path == "/v1/audio/transcriptions"
    assert request.authorization == "Bearer sk-test-key"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    assert request.form == {"model": "whisper-1", "response_format": "json"}
    filename, content_type, data = request.files["file"]
    assert (filename, content_type) == ("utterance.wav", "audio/wav")
    channels, width, rate, samples = wav_samples(data)
    assert (channels, width, rate) == (1, 2, 16000)
    np.testing.assert_array_equal(samples, audio)


async def test_language_prompt_and_temperature_are_sent(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    asr = make_provider("asr", language="zh", prompt="小智, 音量", temperature=0.0)
    result = await asr.transcribe(tone(0.5))
    assert result.language == "zh"
    form = fake_openai.requests[-1].form
    assert form == {
        "model": "gpt-4o-mini-transcribe",
        "response_format": "json",
        "language": "zh",
        "prompt": "小智, 音量",
        "temperature": "0.0",
    }
    # A per-call language (a locale as devices report it) overrides the option.
    result = await asr.transcribe(tone(0.5), language="en-US")
    assert result.language == "en"
    assert fake_openai.requests[-1].form["language"] == "en"


async def test_float_audio_is_converted(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    asr = make_provider("asr")
    await asr.transcribe(np.array([0.0, 0.5, -1.0, 2.0], np.float32))
    samples = wav_samples(fake_openai.requests[-1].files["file"][2])[3]
    assert samples.tolist() == [0, 16383, -32767, 32767]


async def test_empty_utterance_makes_no_request(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    asr = make_provider("asr")
    assert (await asr.transcribe(np.zeros(0, np.int16))).text == ""
    assert fake_openai.requests == []
