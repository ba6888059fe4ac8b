"""The provider as the core runs it: discovered through its entry point, built and bound
by the executor policy, transcribing in the worker pool while the loop stays free."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from xiaozhi_whisper.asr import WhisperASR

from xiaozhi_core.executor import Executor, ExecutorSettings, bind, build
from xiaozhi_core.registry import Registry

Say = Callable[..., np.ndarray]
Wer = Callable[[list[str], list[str]], float]


def test_entry_point_is_discovered() -> None:
    registry = Registry()
    registry.load_entry_points()
    found = registry.lookup("asr", "whisper")
    assert found.origin.distribution == "xiaozhi-whisper"
    assert found.spec.factory_path == "xiaozhi_whisper.asr:WhisperASR"
    assert registry.get("asr", "whisper_multilingual").capabilities == {"multilingual", "batch"}
    assert not [f for f in registry.failures if "whisper" in str(f)]


async def _max_loop_gap(stop: asyncio.Event) -> float:
    """Largest delay the loop shows on 5 ms sleeps until ``stop`` is set."""
    worst = 0.0
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        worst = max(worst, time.perf_counter() - t0 - 0.005)
    return worst


@pytest.mark.slow
async def test_build_loads_and_transcribes_in_the_pool(
    say: Say, sentences: list[str], wer: Wer
) -> None:
    registry = Registry()
    registry.load_entry_points()
    spec = registry.get("asr", "whisper")
    options = spec.validate(
        {"model": "tiny.en", "num_workers": 2, "cpu_threads": 1}, path="asr.options"
    )
    executor = Executor(ExecutorSettings(cpu_workers=2))
    try:
        bound = await build(spec, options, executor)  # the model loads in the pool
        assert isinstance(bound.instance, WhisperASR) and bound.execution.value == "cpu"
        assert executor.stats()["completed"] == 2  # resolve_factory + factory
        clips = [say(s) for s in sentences[:2]]
        stop = asyncio.Event()
        gap = asyncio.create_task(_max_loop_gap(stop))
        results = await asyncio.gather(*(bound.transcribe(c) for c in clips))
        stop.set()
        assert wer(sentences[:2], [r.text for r in results]) <= 0.25, results
        assert executor.stats()["completed"] == 4
        assert await gap < 0.25  # CTranslate2 releases the GIL: the loop keeps ticking
        await bound.aclose()
    finally:
        executor.shutdown()


@pytest.mark.slow
async def test_work_runs_on_pool_threads_never_the_loop(tiny: WhisperASR, say: Say) -> None:
    threads: list[str] = []
    real = tiny.transcribe

    def recording(pcm: np.ndarray, *, language: str | None = None) -> Any:
        threads.append(threading.current_thread().name)
        return real(pcm, language=language)

    registry = Registry()
    registry.load_entry_points()
    executor = Executor(ExecutorSettings(cpu_workers=2))
    try:
        tiny.transcribe = recording  # type: ignore[method-assign]
        bound = bind(registry.get("asr", "whisper"), tiny, executor)
        clip = say("Stop the music.")
        results = await asyncio.gather(bound.transcribe(clip), bound.transcribe(clip))
        assert [normal(r.text) for r in results] == ["stop the music"] * 2
        assert len(threads) == 2
        assert all(name.startswith("xiaozhi-cpu") for name in threads), threads
        assert threading.current_thread().name not in threads
    finally:
        del tiny.transcribe
        executor.shutdown()


@pytest.mark.slow
async def test_process_pool_mode(say: Say) -> None:
    """executor.kind 'process': options travel to a spawned worker that builds its own
    provider lazily (the cache and model checks run there too)."""
    registry = Registry()
    registry.load_entry_points()
    spec = registry.get("asr", "whisper")
    executor = Executor(ExecutorSettings(kind="process", cpu_workers=1))
    try:
        bound = await build(spec, spec.validate({"model": "tiny.en"}), executor)
        result = await bound.transcribe(say("Stop the music."))
        assert normal(result.text) == "stop the music" and result.language == "en"
    finally:
        executor.shutdown()


def normal(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c == " ").split())
