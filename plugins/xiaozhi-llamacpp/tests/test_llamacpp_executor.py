"""The provider behind the core's executor policy, consumed from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.registry import default_registry
from xiaozhi_core.types import Message

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

QUESTION = [Message("user", "What is the capital of France?")]
STORY = [Message("user", "Tell me a long story about a dragon and a knight.")]


@pytest.fixture
async def bound() -> AsyncIterator[Any]:
    """Built like the core builds it: two pool workers, the factory run in the pool."""
    spec = default_registry().get("llm", "llamacpp")
    executor = Executor(ExecutorSettings(cpu_workers=2))
    provider = await build(spec, spec.validate({"temperature": 0.0, "seed": 0}), executor)
    yield provider
    await provider.aclose()
    executor.shutdown()


async def wait_free(provider: Any) -> dict[str, int]:
    """The provider's model-copy status once nothing holds or waits for it (<= 5 s):
    the stream closes the generator in the pool just after the consumer leaves."""
    for _ in range(500):
        status: dict[str, int] = provider.instance.status()
        if status["free"] == status["instances"]:
            break
        await asyncio.sleep(0.01)
    return status


async def test_stream_is_consumed_from_the_loop_without_blocking_it(bound: Any) -> None:
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t0 - 0.01)

    tick = asyncio.create_task(ticker())
    items = [item async for item in bound.chat(QUESTION)]
    tick.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick
    assert len([i for i in items if i]) >= 3
    assert "Paris" in "".join(items)
    # Prompt evaluation and decoding ran in the pool: the loop kept ticking.
    assert lags and max(lags) < 0.5, max(lags)
    assert bound.executor.stats()["completed"] >= len(items)


async def test_leaving_the_stream_early_frees_the_model(bound: Any) -> None:
    async with contextlib.aclosing(bound.chat(STORY)) as stream:
        async for item in stream:
            if item:
                break
    assert await wait_free(bound) == {"instances": 1, "free": 1, "queued": 0}
    items = [item async for item in bound.chat(QUESTION)]
    assert "Paris" in "".join(items)


async def test_cancelling_the_consumer_frees_the_model(bound: Any) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for item in bound.chat(STORY):
            if item:
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await wait_free(bound) == {"instances": 1, "free": 1, "queued": 0}


async def test_more_replies_than_pool_workers_all_complete(bound: Any) -> None:
    """Three replies on two workers and one model: queued replies must not hold the
    workers the running reply needs for its next token (that would dead-lock)."""

    async def ask(question: str) -> str:
        return "".join([item async for item in bound.chat([Message("user", question)])])

    answers = await asyncio.wait_for(
        asyncio.gather(
            ask("What is the capital of France?"),
            ask("Name three colours."),
            ask("What is two plus two?"),
        ),
        timeout=60,
    )
    assert all(a.strip() for a in answers), answers
    assert "Paris" in answers[0]
    assert await wait_free(bound) == {"instances": 1, "free": 1, "queued": 0}


async def test_process_pool_mode() -> None:
    """executor.kind 'process': the options travel to a spawned worker, which loads its
    own model and returns the reply's items in one piece."""
    spec = default_registry().get("llm", "llamacpp")
    executor = Executor(ExecutorSettings(kind="process", cpu_workers=1))
    try:
        provider = await build(spec, spec.validate({"temperature": 0.0}), executor)
        items = [item async for item in provider.chat(QUESTION)]
        assert "Paris" in "".join(items)
    finally:
        executor.shutdown()
