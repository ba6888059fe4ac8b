"""The sine TTS, run through the core's executor policy (worker pool, streamed chunks)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import xiaozhi_example.plugin

from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.registry import Registry


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    ex = Executor(ExecutorSettings(cpu_workers=2, stream_buffer=2))
    yield ex
    ex.shutdown()


async def sine(executor: Executor, **options: Any) -> Any:
    registry = Registry()
    registry.register(xiaozhi_example.plugin)
    spec = registry.get("tts", "sine")
    return await build(spec, spec.validate(options), executor)


async def pcm_of(tts: Any, text: str) -> np.ndarray:
    chunks = [chunk async for chunk in tts.synthesize(text)]
    assert all(isinstance(c, bytes) for c in chunks)
    return np.frombuffer(b"".join(chunks), "<i2")


async def test_length_follows_the_text(executor: Executor) -> None:
    tts = await sine(executor, sample_rate=24000, seconds_per_char=0.05)
    assert tts.sample_rate == 24000
    short, long = await pcm_of(tts, "hi"), await pcm_of(tts, "hello there")
    assert len(short) == round(2 * 0.05 * 24000)
    assert len(long) == round(11 * 0.05 * 24000)
    assert len(await pcm_of(tts, "   ")) == 0


async def test_chunks_and_frequency(executor: Executor) -> None:
    tts = await sine(
        executor,
        sample_rate=16000,
        frequency=1000,
        chunk_ms=40,
        seconds_per_char=0.1,
        amplitude=0.5,
    )
    chunks = [c async for c in tts.synthesize("abcde")]  # 0.5 s
    assert [len(c) // 2 for c in chunks] == [640] * 12 + [320]
    pcm = np.frombuffer(b"".join(chunks), "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm))
    peak_hz = np.argmax(spectrum) * 16000 / len(pcm)
    assert abs(peak_hz - 1000) < 5
    assert 0.45 * 32767 < np.abs(pcm).max() <= 0.5 * 32767 + 1
    # phase is continuous across chunk boundaries: no jump bigger than one sample step
    step = 2 * np.pi * 1000 / 16000 * 0.5 * 32767
    assert np.abs(np.diff(pcm)).max() <= step + 2


async def test_leaving_early_stops_synthesis(executor: Executor) -> None:
    tts = await sine(executor, seconds_per_char=1.0, chunk_ms=10)  # 100 chunks per char
    taken = 0
    async with contextlib.aclosing(tts.synthesize("long text")) as stream:
        async for _ in stream:
            taken += 1
            if taken == 3:
                break
    assert taken == 3
    assert executor.pending == 0  # nothing left running in the pool for this stream
