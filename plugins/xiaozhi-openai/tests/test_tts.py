"""TTS ``openai``: raw 24 kHz PCM streamed chunk by chunk from ``/audio/speech``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_openai import FakeOpenAI, SpeechReply, speech_pcm

from xiaozhi_core.errors import ProviderError


async def test_streams_pcm_chunks_as_they_arrive(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    tts = make_provider("tts", voice="nova")
    assert tts.sample_rate == 24000
    pcm = speech_pcm(0.5)
    fake_openai.script_speech(SpeechReply(pcm=pcm, chunk_bytes=4800, delay=0.03))
    chunks, sent_when_seen = [], []
    async for chunk in tts.synthesize("Hello there, how are you?"):
        chunks.append(chunk)
        sent_when_seen.append(fake_openai.chunks_sent[-1])
    assert b"".join(chunks) == pcm
    assert len(chunks) >= 3
    assert sent_when_seen[0] < fake_openai.chunks_sent[-1] - 2  # not buffered until the end
    request = fake_openai.requests[-1]
    assert request.path == "/v1/audio/speech"
    assert request.authorization == "Bearer sk-test-key"
    assert request.json == {
        "model": "gpt-4o-mini-tts",
        "voice": "nova",
        "input": "Hello there, how are you?",
        "response_format": "pcm",
    }


async def test_chunks_are_whole_samples(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    tts = make_provider("tts")
    pcm = speech_pcm(0.2)
    fake_openai.script_speech(SpeechReply(pcm=pcm, chunk_bytes=1001))  # odd-sized chunks
    chunks = [c async for c in tts.synthesize("odd")]
    assert all(len(c) % 2 == 0 for c in chunks)
    assert b"".join(chunks) == pcm


async def test_voice_override_speed_and_instructions(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    tts = make_provider(
        "tts",
        model="tts-1",
        voice="alloy",
        speed=1.25,
        instructions="Speak cheerfully.",
        extra_body={"seed": 7},
    )
    audio = b"".join([c async for c in tts.synthesize("Hi!", voice="coral")])
    assert len(audio) > 0
    assert fake_openai.requests[-1].json == {
        "model": "tts-1",
        "voice": "coral",
        "input": "Hi!",
        "response_format": "pcm",
        "speed": 1.25,
        "instructions": "Speak cheerfully.",
        "seed": 7,
    }


async def test_a_profiles_request_options_win_for_that_request(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    from xiaozhi_openai.plugin import OpenAISpeechRequest

    tts = make_provider("tts", model="tts-1", voice="alloy", speed=1.25)
    request = OpenAISpeechRequest(model="gpt-4o-mini-tts", speed=0.8, instructions="Softly.")
    audio = b"".join([c async for c in tts.synthesize("Hi!", voice="coral", options=request)])
    assert len(audio) > 0
    assert fake_openai.requests[-1].json == {
        "model": "gpt-4o-mini-tts",
        "voice": "coral",
        "input": "Hi!",
        "response_format": "pcm",
        "speed": 0.8,
        "instructions": "Softly.",
    }


async def test_blank_text_makes_no_request(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    tts = make_provider("tts")
    assert [c async for c in tts.synthesize("  \n")] == []
    assert fake_openai.requests == []


async def test_an_encoded_file_instead_of_pcm_is_refused(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    tts = make_provider("tts")
    fake_openai.script_speech(
        SpeechReply(pcm=b"ID3\x04" + b"\x00" * 100, content_type="audio/mpeg")
    )
    with pytest.raises(ProviderError, match=r"sent 'audio/mpeg' instead of raw PCM"):
        [c async for c in tts.synthesize("Hello")]
