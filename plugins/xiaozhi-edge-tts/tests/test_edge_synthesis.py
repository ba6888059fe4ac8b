"""The ``edge`` provider against the fake Edge service: audio, streaming, SSML, routing,
cancellation and the core's executor policy."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fake_edge import FakeEdge, Hang, Speak, mp3_frames, sine_mp3, speech_mp3

from xiaozhi_core.errors import ExecutionPolicyError, ProviderError
from xiaozhi_core.executor import Executor, ExecutorSettings, bind, build
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.types import Execution

SENTENCE = "The quick brown fox jumps over the lazy dog."


async def collect(stream: Any) -> bytes:
    return b"".join([chunk async for chunk in stream])


def pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("rate", [24000, 16000])
async def test_speech_duration_matches_the_mp3_and_is_not_silent(
    fake_edge: FakeEdge, make_tts: Callable[..., Any], rate: int
) -> None:
    mp3 = speech_mp3(SENTENCE)
    fake_edge.script(Speak(mp3=mp3, chunk_bytes=1000))
    tts = make_tts(sample_rate=rate)
    assert tts.sample_rate == rate
    pcm = await collect(tts.synthesize(SENTENCE))
    assert len(pcm) % 2 == 0
    # Every MP3 frame is 576 samples at 24 kHz; resampling keeps the duration.
    mp3_seconds = mp3_frames(mp3) * 576 / 24000
    assert mp3_seconds > 2.0
    assert len(pcm) / 2 / rate == pytest.approx(mp3_seconds, abs=1 / rate)
    x = pcm16(pcm)
    assert float(np.sqrt(np.mean(x**2))) > 0.02  # espeak speech, not silence
    # Speech has pauses: the loud parts are a fraction of the whole.
    windows = x[: len(x) // 480 * 480].reshape(-1, 480)
    loud = np.sqrt(np.mean(windows**2, axis=1)) > 0.02
    assert 0.3 < loud.mean() < 0.99


@pytest.mark.parametrize("rate", [24000, 16000])
async def test_a_sine_keeps_its_frequency_through_decode_and_resample(
    fake_edge: FakeEdge, make_tts: Callable[..., Any], rate: int
) -> None:
    fake_edge.script(Speak(mp3=sine_mp3(2.0, 1000.0), chunk_bytes=333))
    x = pcm16(await collect(make_tts(sample_rate=rate).synthesize("beep")))
    middle = x[rate // 2 : rate // 2 + rate]  # 1 s away from the encoder's edges
    assert peak_hz(middle, rate) == pytest.approx(1000.0, abs=2.0)
    # Level within 1 dB (48 kbit/s MP3 loses a little).
    assert float(np.sqrt(np.mean(middle**2))) == pytest.approx(0.3 / np.sqrt(2), rel=0.11)


async def test_audio_is_yielded_while_the_service_is_still_sending(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    # The server sends one chunk, then waits for the gate: audio must reach the
    # consumer before the rest of the stream exists.
    fake_edge.script(Speak(mp3=sine_mp3(3.0), chunk_bytes=1440, gate_after=1))
    stream = make_tts().synthesize("streaming")
    first = await asyncio.wait_for(anext(stream), 5)
    assert len(first) >= 2 * 576 * 5  # most of the first chunk's 10 frames
    assert fake_edge.connections[0].chunks_sent == 1
    fake_edge.gate.set()
    rest = await collect(stream)
    total = (len(first) + len(rest)) // 2
    assert total == mp3_frames(sine_mp3(3.0)) * 576
    assert fake_edge.connections[0].chunks_sent > 10


async def test_voice_and_prosody_reach_the_ssml(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    tts = make_tts(voice="en-GB-SoniaNeural", rate="+25%", volume="-10%", pitch="+5Hz")
    await collect(tts.synthesize("Tom & Jerry <3 'quotes'"))
    await collect(tts.synthesize("你好，世界。", voice="zh-CN-XiaoxiaoNeural"))
    first, second = fake_edge.connections
    assert first.voice == "Microsoft Server Speech Text to Speech Voice (en-GB, SoniaNeural)"
    assert (first.rate, first.volume, first.pitch) == ("+25%", "-10%", "+5Hz")
    assert first.text == "Tom & Jerry <3 'quotes'"  # escaped on the wire, parsed back
    assert "Tom &amp; Jerry &lt;3" in (first.ssml or "")
    assert second.short_voice == "zh-CN-XiaoxiaoNeural"  # the per-call voice wins
    assert second.text == "你好，世界。"


async def test_what_edge_tts_sends_on_the_wire(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    await collect(make_tts().synthesize("hello"))
    [c] = fake_edge.connections
    assert c.path == "/consumer/speech/synthesize/readaloud/edge/v1"
    assert c.query["TrustedClientToken"] == "6A5AA1D4EAFF4E9FB37E23D68491D6F4"
    assert len(c.query["ConnectionId"]) == 32
    assert c.query["Sec-MS-GEC"] and c.query["Sec-MS-GEC-Version"].split("-")[0].isdigit()
    assert c.headers["Origin"] == "chrome-extension://jdiccldimpdaibmpdkjnbmckianbfold"
    assert "Edg/" in c.headers["User-Agent"]
    assert c.headers["Cookie"].startswith("muid=")
    assert c.config is not None
    audio = c.config["context"]["synthesis"]["audio"]
    assert audio["outputFormat"] == "audio-24khz-48kbitrate-mono-mp3"
    assert [t.split("Path:")[1].split("\r\n")[0] for t in c.texts] == ["speech.config", "ssml"]
    assert c.short_voice == "en-US-EmmaMultilingualNeural"  # the default voice
    assert c.end_kind == "close"  # edge-tts closed the WebSocket after turn.end


async def test_empty_text_does_not_connect(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    assert await collect(make_tts().synthesize("  \n")) == b""
    assert fake_edge.connections == []


async def test_long_text_is_sent_in_several_turns_and_decoded_as_one_stream(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    text = "word " * 1200  # 6000 bytes: edge-tts splits SSML text at 4096 bytes
    pcm = await collect(make_tts().synthesize(text))
    assert len(fake_edge.connections) == 2
    assert len(pcm) // 2 == 2 * mp3_frames(sine_mp3()) * 576


async def test_two_endpoints_at_the_same_time(edge_spec: ProviderSpec) -> None:
    # Each synthesis carries its own endpoint (a context variable in its task).
    async with FakeEdge() as a, FakeEdge() as b:
        a.script(Speak(chunk_delay=0.01, chunk_bytes=500))
        b.script(Speak(chunk_delay=0.01, chunk_bytes=500))
        tts_a = edge_spec.create({"endpoint": a.url})
        tts_b = edge_spec.create({"endpoint": b.url})
        await asyncio.gather(collect(tts_a.synthesize("to a")), collect(tts_b.synthesize("to b")))
        assert [c.text for c in a.connections] == ["to a"]
        assert [c.text for c in b.connections] == ["to b"]
        await tts_a.close()
        await tts_b.close()


async def test_stopping_early_closes_the_websocket_at_once(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    # 10 s of audio at 0.1 s per chunk: the server is mid-stream when the consumer leaves.
    fake_edge.script(Speak(mp3=sine_mp3(10.0), chunk_bytes=1440, chunk_delay=0.1))
    stream = make_tts().synthesize("barge in")
    await anext(stream)
    t0 = time.monotonic()
    await stream.aclose()  # what the core does on barge-in
    closed_in = time.monotonic() - t0
    [c] = fake_edge.connections
    await asyncio.wait_for(c.ended.wait(), 1.0)
    assert c.ended_at is not None and c.ended_at - t0 < 0.5
    assert closed_in < 0.2
    assert c.chunks_sent < 10
    sent = c.chunks_sent
    await asyncio.sleep(0.3)
    assert c.chunks_sent == sent  # the server stopped: nobody reads any more
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "edge-tts-stream"]


async def test_cancelling_the_consumer_closes_the_websocket_at_once(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    # The service hangs after the SSML: the consumer waits, then is cancelled.
    fake_edge.script(Hang("ssml"))

    async def consume() -> bytes:
        return await collect(make_tts(receive_timeout=30).synthesize("cancel me"))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    [c] = fake_edge.connections
    assert c.got_ssml.is_set() and not c.ended.is_set()
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(c.ended.wait(), 1.0)
    assert c.ended_at is not None and c.ended_at - t0 < 0.5
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "edge-tts-stream"]


async def test_close_aborts_running_syntheses(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    fake_edge.script(Hang("ssml"))
    tts = make_tts(receive_timeout=30)
    task = asyncio.create_task(collect(tts.synthesize("server shutting down")))
    await asyncio.sleep(0.3)
    await tts.close()
    with pytest.raises(ProviderError, match=r"edge: the provider was closed"):
        await asyncio.wait_for(task, 2)
    await asyncio.wait_for(fake_edge.connections[0].ended.wait(), 1.0)


async def test_passes_the_executor_policy_as_io(
    fake_edge: FakeEdge, edge_spec: ProviderSpec
) -> None:
    executor = Executor(ExecutorSettings(cpu_workers=1))
    try:
        spec = edge_spec
        options = spec.validate({"endpoint": fake_edge.url, "sample_rate": 16000})
        bound = await build(spec, options, executor)
        assert bound.execution.value == "io" and bound.sample_rate == 16000
        pcm = await collect(bound.synthesize("through the core"))
        assert len(pcm) // 2 == mp3_frames(sine_mp3()) * 576 * 2 // 3
        # bind() checks the same policy (synthesize is an async generator)...
        bind(spec, bound.instance, executor)
        # ...and would refuse the provider declared 'cpu'.
        as_cpu = dataclasses.replace(spec, execution=Execution.CPU)
        with pytest.raises(ExecutionPolicyError, match=r"synthesize\(\) is an async generator"):
            bind(as_cpu, bound.instance, executor)
        await bound.aclose()
    finally:
        executor.shutdown()
