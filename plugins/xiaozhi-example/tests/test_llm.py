"""The echo LLM, run through the core's executor policy as a deployment would run it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import xiaozhi_example.plugin

from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.registry import Registry
from xiaozhi_core.types import Message, ToolCall, ToolSpec

GET_TIME = ToolSpec("get_time", "The current local time")


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    ex = Executor(ExecutorSettings(cpu_workers=2))
    yield ex
    ex.shutdown()


async def echo(executor: Executor, **options: Any) -> Any:
    registry = Registry()
    registry.register(xiaozhi_example.plugin)
    spec = registry.get("llm", "echo")
    return await build(spec, spec.validate(options), executor)


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


async def test_streams_the_last_user_message_word_by_word(executor: Executor) -> None:
    llm = await echo(executor)
    history = [
        Message("system", "be brief"),
        Message("user", "first"),
        Message("assistant", "You said: first"),
        Message("user", "turn on the light"),
    ]
    chunks = await collect(llm.chat(history))
    assert chunks == ["You", " said:", " turn", " on", " the", " light"]


async def test_time_question_requests_get_time_then_answers_with_the_result(
    executor: Executor,
) -> None:
    llm = await echo(executor)
    history = [Message("user", "What time is it?")]
    first = await collect(llm.chat(history, tools=[GET_TIME]))
    assert len(first) == 1 and isinstance(first[0], ToolCall)
    call = first[0]
    assert (call.name, call.arguments) == ("get_time", {})

    history += [
        Message("assistant", "", tool_calls=[call]),
        Message("tool", "12:30", tool_call_id=call.id),
    ]
    second = await collect(llm.chat(history, tools=[GET_TIME]))
    assert "".join(second) == "It is 12:30."


async def test_no_tool_call_unless_get_time_is_offered(executor: Executor) -> None:
    llm = await echo(executor)
    chunks = await collect(llm.chat([Message("user", "what time is it")], tools=[]))
    assert "".join(chunks) == "You said: what time is it"


async def test_runs_on_the_loop_thread_and_paces_words(executor: Executor) -> None:
    llm = await echo(executor, word_delay=0.02, prefix=">")
    loop_thread = threading.get_ident()
    seen: list[int] = []
    t0 = time.perf_counter()
    async for _ in llm.chat([Message("user", "a b c d")]):
        seen.append(threading.get_ident())
    elapsed = time.perf_counter() - t0
    assert set(seen) == {loop_thread}
    assert elapsed >= 4 * 0.02 * 0.9  # 5 words, 4 pauses


async def test_cancelling_the_consumer_stops_the_stream(executor: Executor) -> None:
    llm = await echo(executor, word_delay=0.05)
    got: list[str] = []

    async def consume() -> None:
        async for word in llm.chat([Message("user", "one two three four five six")]):
            got.append(word)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 1 <= len(got) < 7
