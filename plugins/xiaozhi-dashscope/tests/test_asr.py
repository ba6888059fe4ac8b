"""Paraformer real-time recognition through the real SDK against the fake server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from xiaozhi_dashscope.asr import ParaformerASR
from xiaozhi_dashscope.plugin import ParaformerOptions, xiaozhi_providers

from xiaozhi_core.errors import ProviderError, ProviderTimeout
from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.types import ASRResult

pytestmark = pytest.mark.usefixtures("no_thread_leak")


def speech(seconds: float) -> np.ndarray:
    """Distinct int16 samples, so that reordered or lost frames are detected."""
    n = int(seconds * 16000)
    return ((np.arange(n) * 7919) % 20000 - 10000).astype(np.int16)


@pytest.fixture
async def asr(fake_dashscope: Any) -> AsyncIterator[ParaformerASR]:
    provider = ParaformerASR(
        ParaformerOptions(api_key="sk-test", base_websocket_url=fake_dashscope.ws_url, timeout=1.0)
    )
    yield provider
    await provider.close()


class LoopLag:
    """Largest gap between ticks of a 10 ms timer: proves nothing blocked the loop."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.worst = max(self.worst, now - last - 0.01)
            last = now

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_partials_arrive_while_streaming_and_the_final_text_is_right(
    asr: ParaformerASR, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.asr.sentences = ["今天天气怎么样？", "明天会下雨吗？"]
    partials: list[ASRResult] = []
    audio = speech(3.0)
    stream = await asr.open_stream(on_partial=partials.append)
    with LoopLag() as lag:
        for i in range(0, len(audio), 960):  # 60 ms frames, as devices send them
            await stream.push(audio[i : i + 960])
            await asyncio.sleep(0.002)
        # Partial hypotheses came back while audio was still being pushed.
        await fake_module.eventually(lambda: len(partials) >= 5)
        before_finish = list(partials)
        result = await stream.finish()
    assert len(before_finish) >= 5
    assert all(not p.final for p in before_finish)
    assert before_finish[0].text == "今"
    # The first sentence was finalised mid-stream; partials carry it plus the new one.
    assert any(p.text.startswith("今天天气怎么样？明") for p in before_finish)
    assert result == ASRResult("今天天气怎么样？明天会下雨吗？", final=True)
    rec = fake_dashscope.ws_of("asr")[-1]
    assert bytes(rec.audio) == audio.tobytes()  # every byte, in order
    assert rec.actions[0] == "run-task" and rec.actions[-1] == "finish-task"
    assert rec.run_task["model"] == "paraformer-realtime-v2"
    assert rec.run_task["function"] == "recognition"
    assert rec.parameters == {"format": "pcm", "sample_rate": 16000}
    assert rec.headers["Authorization"] == "Bearer sk-test"
    assert lag.worst < 0.25


async def test_transcribe_streams_a_whole_utterance(
    asr: ParaformerASR, fake_dashscope: Any
) -> None:
    fake_dashscope.asr.sentences = ["打开客厅的灯。"]
    audio = speech(1.25)
    result = await asr.transcribe(audio, language="zh-CN")
    assert result == ASRResult("打开客厅的灯。", final=True, language="zh-CN")
    rec = fake_dashscope.ws_of("asr")[-1]
    assert bytes(rec.audio) == audio.tobytes()
    assert rec.audio_frames == 13  # 100 ms frames (chunk_ms)
    assert rec.parameters["language_hints"] == ["zh"]


async def test_language_hints_and_extra_parameters(fake_dashscope: Any) -> None:
    provider = ParaformerASR(
        ParaformerOptions(
            api_key="sk-test",
            base_websocket_url=fake_dashscope.ws_url,
            model="paraformer-realtime-8k-v2",
            language_hints=["zh", "en"],
            parameters={"disfluency_removal_enabled": True},
        )
    )
    try:
        await provider.transcribe(speech(0.3))
    finally:
        await provider.close()
    rec = fake_dashscope.ws_of("asr")[-1]
    assert rec.run_task["model"] == "paraformer-realtime-8k-v2"
    assert rec.parameters["language_hints"] == ["zh", "en"]
    assert rec.parameters["disfluency_removal_enabled"] is True


async def test_empty_audio_needs_no_connection(asr: ParaformerASR, fake_dashscope: Any) -> None:
    assert await asr.transcribe(np.zeros(0, np.int16)) == ASRResult("")
    assert fake_dashscope.ws == []


async def test_invalid_key(fake_dashscope: Any) -> None:
    provider = ParaformerASR(
        ParaformerOptions(api_key="sk-nope", base_websocket_url=fake_dashscope.ws_url)
    )
    try:
        with pytest.raises(
            ProviderError,
            match=r"API key is invalid \(HTTP 401 InvalidApiKey"
            r".*DASHSCOPE_API_KEY",
        ):
            await provider.transcribe(speech(0.5))
    finally:
        await provider.close()
    assert fake_dashscope.ws[-1].headers["Authorization"] == "Bearer sk-nope"


@pytest.mark.parametrize(
    ("status", "code", "pattern"),
    [
        (429, "Throttling.RateQuota", r"throttled \(HTTP 429 Throttling.RateQuota: busy\)"),
        (500, "InternalError", r"DashScope server error \(HTTP 500 InternalError: busy\)"),
        (503, "ServiceUnavailable", r"DashScope server error \(HTTP 503 ServiceUnavailable"),
    ],
)
async def test_handshake_errors(
    asr: ParaformerASR, fake_dashscope: Any, status: int, code: str, pattern: str
) -> None:
    script = fake_dashscope.asr
    script.handshake_status, script.handshake_code, script.handshake_message = (
        status,
        code,
        "busy",
    )
    with pytest.raises(ProviderError, match=pattern):
        await asr.transcribe(speech(0.5))


async def test_task_failed_on_start(asr: ParaformerASR, fake_dashscope: Any) -> None:
    fake_dashscope.asr.fail_on_start = True
    fake_dashscope.asr.error_code = "ModelNotFound"
    fake_dashscope.asr.error_message = "Model not found (paraformer-x)!"
    with pytest.raises(
        ProviderError,
        match=r"starting the recognition task failed "
        r"\(ModelNotFound: Model not found",
    ):
        await asr.transcribe(speech(0.5))


async def test_task_failed_mid_stream_surfaces_on_push_or_finish(
    asr: ParaformerASR, fake_dashscope: Any
) -> None:
    fake_dashscope.asr.fail_after_bytes = 9600
    fake_dashscope.asr.error_code = "CLIENT_ERROR"
    fake_dashscope.asr.error_message = "audio format error"
    stream = await asr.open_stream()
    audio = speech(2.0)
    with pytest.raises(
        ProviderError,
        match=r"recognition task failed \(CLIENT_ERROR: "
        r"audio format error\)",
    ):
        for i in range(0, len(audio), 1600):
            await stream.push(audio[i : i + 1600])
            await asyncio.sleep(0.01)
        await stream.finish()
    await stream.close()


async def test_malformed_message(asr: ParaformerASR, fake_dashscope: Any) -> None:
    fake_dashscope.asr.malformed_after_bytes = 3200
    with pytest.raises(ProviderError, match="malformed message from the server"):
        await asr.transcribe(speech(1.0))


async def test_hang_before_task_started_is_a_timeout_without_blocking_the_loop(
    asr: ParaformerASR, fake_dashscope: Any
) -> None:
    fake_dashscope.asr.hang_on_start = True
    start = time.monotonic()
    with (
        LoopLag() as lag,
        pytest.raises(
            ProviderTimeout,
            match=r"starting the recognition "
            r"task took more than 1 s",
        ),
    ):
        await asr.transcribe(speech(1.0))
    assert 0.9 < time.monotonic() - start < 2.5
    assert lag.worst < 0.25
    await fake_dashscope.wait_closed(fake_dashscope.ws[-1], within=1.0)


async def test_hang_after_finish_is_a_timeout(asr: ParaformerASR, fake_dashscope: Any) -> None:
    fake_dashscope.asr.hang_on_finish = True
    start = time.monotonic()
    with pytest.raises(
        ProviderTimeout,
        match=r"no final result within 1 s after the end "
        r"of the audio",
    ):
        await asr.transcribe(speech(1.0))
    assert time.monotonic() - start < 2.5
    rec = fake_dashscope.ws[-1]
    await fake_dashscope.wait_closed(rec, within=1.0)
    assert rec.client_closed_early


async def test_connection_refused(fake_dashscope: Any) -> None:
    provider = ParaformerASR(
        ParaformerOptions(
            api_key="sk-test", base_websocket_url="ws://127.0.0.1:9/api-ws/v1/inference"
        )
    )
    try:
        with pytest.raises(ProviderError, match=r"cannot reach ws://127.0.0.1:9/"):
            await provider.transcribe(speech(0.2))
    finally:
        await provider.close()


async def test_closing_mid_stream_drops_the_connection_at_once(
    asr: ParaformerASR, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.asr.sentences = ["这句话不会说完"]
    partials: list[ASRResult] = []
    stream = await asr.open_stream(on_partial=partials.append)
    audio = speech(1.0)
    for i in range(0, len(audio), 1600):
        await stream.push(audio[i : i + 1600])
    await fake_module.eventually(lambda: bool(partials))
    left = time.monotonic()
    await stream.close()  # barge-in / hang-up: no finish
    rec = fake_dashscope.ws_of("asr")[-1]
    closed = await fake_dashscope.wait_closed(rec, within=1.0)
    assert closed - left < 0.5
    assert rec.client_closed_early and "finish-task" not in rec.actions
    with pytest.raises(ProviderError, match="closed stream"):
        await stream.push(audio)


async def test_cancelling_finish_drops_the_connection(
    asr: ParaformerASR, fake_dashscope: Any
) -> None:
    fake_dashscope.asr.hang_on_finish = True
    stream = await asr.open_stream()
    await stream.push(speech(0.5))
    task = asyncio.get_running_loop().create_task(stream.finish())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_dashscope.wait_closed(fake_dashscope.ws[-1], within=1.0)


async def test_provider_close_aborts_open_streams(fake_dashscope: Any, fake_module: Any) -> None:
    provider = ParaformerASR(
        ParaformerOptions(api_key="sk-test", base_websocket_url=fake_dashscope.ws_url)
    )
    stream = await provider.open_stream()
    await stream.push(speech(0.3))
    # connected, started, audio flowing:
    await fake_module.eventually(
        lambda: bool(fake_dashscope.ws) and len(fake_dashscope.ws[-1].audio) >= 9600
    )
    await provider.close()
    await fake_dashscope.wait_closed(fake_dashscope.ws[-1], within=1.0)
    with pytest.raises(ProviderError, match="closed stream"):
        await stream.finish()


async def test_close_before_the_connection_is_up(fake_dashscope: Any) -> None:
    provider = ParaformerASR(
        ParaformerOptions(api_key="sk-test", base_websocket_url=fake_dashscope.ws_url)
    )
    stream = await provider.open_stream()
    await stream.close()  # the session thread may not even have connected yet
    await provider.close()


async def test_concurrent_streams_are_independent(asr: ParaformerASR, fake_dashscope: Any) -> None:
    fake_dashscope.asr.sentences = ["你好"]
    audios = [speech(0.4 + 0.1 * k) for k in range(4)]
    results = await asyncio.gather(*(asr.transcribe(a) for a in audios))
    assert [r.text for r in results] == ["你好"] * 4
    received = sorted(bytes(r.audio) for r in fake_dashscope.ws_of("asr"))
    assert received == sorted(a.tobytes() for a in audios)


async def test_passes_the_io_executor_policy(fake_dashscope: Any) -> None:
    spec = next(s for s in xiaozhi_providers() if s.name == "paraformer")
    executor = Executor(ExecutorSettings(cpu_workers=1))
    options = spec.validate({"api_key": "sk-test", "base_websocket_url": fake_dashscope.ws_url})
    bound = await build(spec, options, executor)
    try:
        fake_dashscope.asr.sentences = ["好的"]
        partials: list[ASRResult] = []
        stream = await bound.open_stream(on_partial=partials.append)
        await stream.push(speech(0.8))
        assert (await stream.finish()).text == "好的"
        assert partials
        assert (await bound.transcribe(speech(0.3))).text == "好的"
    finally:
        await bound.aclose()
        executor.shutdown()
