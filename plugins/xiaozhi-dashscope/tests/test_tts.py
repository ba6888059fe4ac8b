"""CosyVoice streaming synthesis through the real SDK against the fake server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from xiaozhi_dashscope.plugin import CosyVoiceOptions, xiaozhi_providers
from xiaozhi_dashscope.tts import CosyVoiceTTS

from xiaozhi_core.errors import ProviderError, ProviderTimeout
from xiaozhi_core.executor import Executor, ExecutorSettings, build

pytestmark = pytest.mark.usefixtures("no_thread_leak")


@pytest.fixture
async def tts(fake_dashscope: Any) -> AsyncIterator[CosyVoiceTTS]:
    provider = CosyVoiceTTS(
        CosyVoiceOptions(api_key="sk-test", base_websocket_url=fake_dashscope.ws_url, timeout=1.0)
    )
    yield provider
    await provider.close()


async def test_streams_pcm_as_it_arrives(
    tts: CosyVoiceTTS, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.tts.frame_delay = 0.02
    text = "你好，我是小智，很高兴认识你。"
    first_at = None
    chunks: list[bytes] = []
    async for chunk in tts.synthesize(text):
        if first_at is None:
            first_at = time.monotonic()
            rec = fake_dashscope.ws_of("tts")[-1]
            # Audio is played while the server is still synthesising the rest.
            assert rec.frames_sent < 10
        chunks.append(chunk)
    assert tts.sample_rate == 24000
    assert b"".join(chunks) == fake_module.tts_pcm(len(text), 24000)
    assert len(chunks) == 15  # 1.5 s at 24 kHz in 4800-byte frames
    rec = fake_dashscope.ws_of("tts")[-1]
    assert rec.texts == [text]
    assert rec.actions == ["run-task", "continue-task", "finish-task"]
    assert rec.run_task["function"] == "SpeechSynthesizer"
    assert rec.run_task["model"] == "cosyvoice-v2"
    assert rec.parameters == {
        "voice": "longxiaochun_v2",
        "format": "pcm",
        "sample_rate": 24000,
        "text_type": "PlainText",
        "volume": 50,
        "rate": 1.0,
        "pitch": 1.0,
    }
    assert rec.headers["Authorization"] == "Bearer sk-test"
    assert not rec.client_closed_early


@pytest.mark.parametrize("rate", [16000, 22050, 24000])
async def test_sample_rates_and_voice(fake_dashscope: Any, fake_module: Any, rate: Any) -> None:
    provider = CosyVoiceTTS(
        CosyVoiceOptions(
            api_key="sk-test",
            base_websocket_url=fake_dashscope.ws_url,
            sample_rate=rate,
            model="cosyvoice-v1",
            voice="longxiaochun",
            rate=1.2,
            parameters={"seed": 3},
        )
    )
    try:
        audio = b"".join([c async for c in provider.synthesize("早上好", voice="longwan")])
    finally:
        await provider.close()
    assert provider.sample_rate == rate
    assert audio == fake_module.tts_pcm(3, rate)
    params = fake_dashscope.ws_of("tts")[-1].parameters
    assert (
        params["sample_rate"],
        params["format"],
        params["voice"],
        params["rate"],
        params["seed"],
    ) == (rate, "pcm", "longwan", 1.2, 3)
    assert fake_dashscope.ws_of("tts")[-1].run_task["model"] == "cosyvoice-v1"


async def test_chunks_hold_whole_samples_when_frames_split_them(
    tts: CosyVoiceTTS, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.tts.frame_bytes = 1001
    chunks = [c async for c in tts.synthesize("你好世界")]
    assert all(len(c) % 2 == 0 for c in chunks)
    assert b"".join(chunks) == fake_module.tts_pcm(4, 24000)


async def test_blank_text_makes_no_request(tts: CosyVoiceTTS, fake_dashscope: Any) -> None:
    assert [c async for c in tts.synthesize("  ")] == []
    assert fake_dashscope.ws == []


async def test_invalid_key(fake_dashscope: Any) -> None:
    provider = CosyVoiceTTS(
        CosyVoiceOptions(api_key="sk-nope", base_websocket_url=fake_dashscope.ws_url)
    )
    try:
        with pytest.raises(ProviderError, match=r"API key is invalid \(HTTP 401 InvalidApiKey"):
            _ = [c async for c in provider.synthesize("你好")]
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("status", "code", "pattern"),
    [
        (429, "Throttling.AllocationQuota", r"throttled \(HTTP 429 Throttling.AllocationQuota"),
        (500, "InternalError", r"DashScope server error \(HTTP 500 InternalError: busy\)"),
    ],
)
async def test_handshake_errors(
    tts: CosyVoiceTTS, fake_dashscope: Any, status: int, code: str, pattern: str
) -> None:
    script = fake_dashscope.tts
    script.handshake_status, script.handshake_code, script.handshake_message = (
        status,
        code,
        "busy",
    )
    with pytest.raises(ProviderError, match=pattern):
        _ = [c async for c in tts.synthesize("你好")]


async def test_task_failed_on_start(tts: CosyVoiceTTS, fake_dashscope: Any) -> None:
    fake_dashscope.tts.fail_on_start = True
    fake_dashscope.tts.error_code = "InvalidParameter"
    fake_dashscope.tts.error_message = "voice longxiaochun is not supported by cosyvoice-v2"
    with pytest.raises(
        ProviderError,
        match=r"synthesis task failed \(InvalidParameter: "
        r"voice longxiaochun is not supported",
    ):
        _ = [c async for c in tts.synthesize("你好")]


async def test_task_failed_mid_stream(tts: CosyVoiceTTS, fake_dashscope: Any) -> None:
    fake_dashscope.tts.fail_after_frames = 3
    fake_dashscope.tts.error_code = "InternalError.Algo"
    fake_dashscope.tts.error_message = "synthesis engine error"
    got: list[bytes] = []
    with pytest.raises(ProviderError, match=r"synthesis task failed \(InternalError.Algo"):
        async for chunk in tts.synthesize("一二三四五六七八九十"):
            got.append(chunk)
    assert len(got) == 3


async def test_malformed_message(tts: CosyVoiceTTS, fake_dashscope: Any) -> None:
    fake_dashscope.tts.malformed_after_frames = 2
    with pytest.raises(ProviderError, match="malformed message from the server"):
        _ = [c async for c in tts.synthesize("一二三四五六七八九十")]


async def test_server_hang_is_a_timeout(tts: CosyVoiceTTS, fake_dashscope: Any) -> None:
    fake_dashscope.tts.hang_after_frames = 2
    got: list[bytes] = []
    start = time.monotonic()
    with pytest.raises(ProviderTimeout, match=r"nothing from .* for 1 s between audio chunks"):
        async for chunk in tts.synthesize("一二三四五六七八九十"):
            got.append(chunk)
    assert len(got) == 2 and time.monotonic() - start < 2.5
    await fake_dashscope.wait_closed(fake_dashscope.ws[-1], within=1.0)


async def test_hang_before_start_is_a_timeout(tts: CosyVoiceTTS, fake_dashscope: Any) -> None:
    fake_dashscope.tts.hang_on_start = True
    with pytest.raises(ProviderTimeout, match="before the first audio"):
        _ = [c async for c in tts.synthesize("你好")]
    await fake_dashscope.wait_closed(fake_dashscope.ws[-1], within=1.0)


async def test_leaving_mid_stream_drops_the_connection_at_once(
    tts: CosyVoiceTTS, fake_dashscope: Any
) -> None:
    fake_dashscope.tts.frame_delay = 0.03
    stream: Any = tts.synthesize("这是一段很长的回答。" * 5)
    got = [await anext(stream) for _ in range(3)]
    left = time.monotonic()
    await stream.aclose()  # barge-in
    rec = fake_dashscope.ws_of("tts")[-1]
    closed = await fake_dashscope.wait_closed(rec, within=1.0)
    assert len(got) == 3
    assert closed - left < 0.5
    assert rec.client_closed_early and rec.frames_sent < 10


async def test_cancelling_the_consumer_drops_the_connection(
    tts: CosyVoiceTTS, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.tts.frame_delay = 0.03
    got: list[bytes] = []

    async def play() -> None:
        async for chunk in tts.synthesize("这是一段很长的回答。" * 5):
            got.append(chunk)

    task = asyncio.get_running_loop().create_task(play())
    await fake_module.eventually(lambda: len(got) >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rec = fake_dashscope.ws_of("tts")[-1]
    await fake_dashscope.wait_closed(rec, within=1.0)
    assert rec.client_closed_early


async def test_slow_consumer_holds_the_reader_back(fake_dashscope: Any) -> None:
    provider = CosyVoiceTTS(
        CosyVoiceOptions(
            api_key="sk-test", base_websocket_url=fake_dashscope.ws_url, buffer_chunks=2
        )
    )
    fake_dashscope.tts.frame_bytes = 480
    try:
        stream = provider.synthesize("一二三四五六七八九十" * 4)  # 4 s, 400 frames
        await anext(stream)
        await asyncio.sleep(0.3)
        # The thread holds at most buffer_chunks items and stops reading the socket;
        # the rest stays in socket buffers instead of piling up in memory.
        (thread,) = provider._threads
        assert thread.alive and thread.queue.qsize() <= 2
        rest = [c async for c in stream]
    finally:
        await provider.close()
    assert sum(map(len, rest)) == 40 * 0.1 * 24000 * 2 - 480  # all of it, in the end


async def test_concurrent_syntheses(
    tts: CosyVoiceTTS, fake_dashscope: Any, fake_module: Any
) -> None:
    texts = ["你好", "早上好", "晚安啦朋友"]

    async def run(text: str) -> bytes:
        return b"".join([c async for c in tts.synthesize(text)])

    audios = await asyncio.gather(*(run(t) for t in texts))
    assert audios == [fake_module.tts_pcm(len(t), 24000) for t in texts]


async def test_passes_the_io_executor_policy(fake_dashscope: Any, fake_module: Any) -> None:
    spec = next(s for s in xiaozhi_providers() if s.name == "cosyvoice")
    executor = Executor(ExecutorSettings(cpu_workers=1))
    options = spec.validate(
        {"api_key": "sk-test", "base_websocket_url": fake_dashscope.ws_url, "sample_rate": 16000}
    )
    bound = await build(spec, options, executor)
    try:
        assert bound.sample_rate == 16000
        audio = b"".join([c async for c in bound.synthesize("你好")])
        assert audio == fake_module.tts_pcm(2, 16000)
    finally:
        await bound.aclose()
        executor.shutdown()
