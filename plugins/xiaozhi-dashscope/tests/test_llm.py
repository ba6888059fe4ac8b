"""Qwen through the real SDK (AioGeneration) against the fake DashScope server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from xiaozhi_dashscope.llm import QwenLLM
from xiaozhi_dashscope.plugin import QwenOptions, xiaozhi_providers

from xiaozhi_core.errors import ProviderError, ProviderTimeout
from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.types import Message, ToolCall, ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "天气查询",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def qwen(fake_dashscope: Any) -> AsyncIterator[QwenLLM]:
    llm = QwenLLM(
        QwenOptions(api_key="sk-test", base_http_url=fake_dashscope.http_url, timeout=2.0)
    )
    yield llm
    await llm.close()


async def collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in agen]


async def test_streams_text_deltas_with_the_sdk_wire_format(
    qwen: QwenLLM, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.script_llm(fake_module.LLMTurn(text="你好！我是小智。", chunk_chars=2))
    items = await collect(qwen.chat([Message("system", "你是小智。"), Message("user", "你好")]))
    assert items == ["你好", "！我", "是小", "智。"]
    rec = fake_dashscope.http[-1]
    assert rec.headers["Authorization"] == "Bearer sk-test"
    assert rec.headers["X-DashScope-SSE"] == "enable"
    assert rec.headers["Accept"] == "text/event-stream"
    assert rec.body["model"] == "qwen-plus"
    assert rec.body["input"]["messages"] == [
        {"role": "system", "content": "你是小智。"},
        {"role": "user", "content": "你好"},
    ]
    assert rec.body["parameters"]["result_format"] == "message"
    assert rec.body["parameters"]["incremental_output"] is True
    assert "tools" not in rec.body["parameters"]
    assert rec.completed


async def test_options_reach_the_request(fake_dashscope: Any) -> None:
    llm = QwenLLM(
        QwenOptions(
            api_key="sk-test",
            base_http_url=fake_dashscope.http_url,
            model="qwen-turbo",
            temperature=0.3,
            max_tokens=64,
            enable_thinking=False,
            parameters={"seed": 7},
        )
    )
    try:
        await collect(llm.chat([Message("user", "hi")]))
    finally:
        await llm.close()
    body = fake_dashscope.http[-1].body
    assert body["model"] == "qwen-turbo"
    params = body["parameters"]
    assert (
        params["temperature"],
        params["max_tokens"],
        params["enable_thinking"],
        params["seed"],
    ) == (0.3, 64, False, 7)


async def test_tool_calls_are_assembled_from_streamed_pieces(
    qwen: QwenLLM, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.script_llm(
        fake_module.LLMTurn(
            text="",
            arg_pieces=4,
            tool_calls=[
                {"id": "call_a", "name": "get_weather", "arguments": {"city": "北京"}},
                {"id": "call_b", "name": "get_weather", "arguments": {"city": "上海"}},
            ],
        )
    )
    items = await collect(qwen.chat([Message("user", "北京和上海天气？")], tools=[WEATHER]))
    assert items == [
        ToolCall("call_a", "get_weather", {"city": "北京"}),
        ToolCall("call_b", "get_weather", {"city": "上海"}),
    ]
    tools = fake_dashscope.http[-1].body["parameters"]["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "天气查询",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    # The arguments really arrived in pieces (not one event).
    assert fake_dashscope.http[-1].events_sent >= 8


async def test_tool_round_trip_sends_the_history_in_dashscope_shape(
    qwen: QwenLLM, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.script_llm(
        fake_module.LLMTurn(
            text="",
            tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "北京"}}],
        ),
        fake_module.LLMTurn(text="北京今天晴，25度。"),
    )
    history = [Message("user", "北京天气？")]
    first = await collect(qwen.chat(history, tools=[WEATHER]))
    assert first == [ToolCall("call_1", "get_weather", {"city": "北京"})]
    history += [
        Message("assistant", "", tool_calls=first),
        Message("tool", "晴，25度", tool_call_id="call_1"),
    ]
    second = await collect(qwen.chat(history, tools=[WEATHER]))
    assert "".join(second) == "北京今天晴，25度。"
    sent = fake_dashscope.http[-1].body["input"]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": json.dumps({"city": "北京"}, ensure_ascii=False),
                },
            }
        ],
    }
    assert sent[2] == {
        "role": "tool",
        "content": "晴，25度",
        "tool_call_id": "call_1",
        "name": "get_weather",
    }


async def test_tool_call_with_invalid_json_arguments_is_a_clear_error(
    qwen: QwenLLM, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.script_llm(
        fake_module.LLMTurn(
            text="", tool_calls=[{"id": "c", "name": "get_weather", "arguments": '{"city": 北京'}]
        )
    )
    with pytest.raises(ProviderError, match="get_weather.*not valid JSON"):
        await collect(qwen.chat([Message("user", "x")], tools=[WEATHER]))


@pytest.mark.parametrize(
    ("status", "code", "pattern"),
    [
        (429, "Throttling.RateQuota", r"throttled \(HTTP 429 Throttling.RateQuota: slow down\)"),
        (500, "InternalError", r"DashScope server error \(HTTP 500 InternalError: slow down\)"),
        (400, "InvalidParameter", r"chat request failed \(HTTP 400 InvalidParameter: slow down\)"),
    ],
)
async def test_http_errors_are_mapped(
    qwen: QwenLLM, fake_dashscope: Any, fake_module: Any, status: int, code: str, pattern: str
) -> None:
    fake_dashscope.script_llm(fake_module.LLMTurn(status=status, code=code, message="slow down"))
    with pytest.raises(ProviderError, match=pattern) as info:
        await collect(qwen.chat([Message("user", "x")]))
    assert "dashscope qwen" in str(info.value) and "request_id" in str(info.value)


async def test_invalid_key_names_the_env_var(fake_dashscope: Any) -> None:
    llm = QwenLLM(QwenOptions(api_key="sk-wrong", base_http_url=fake_dashscope.http_url))
    try:
        with pytest.raises(
            ProviderError,
            match=r"API key is invalid \(HTTP 401 InvalidApiKey"
            r".*DASHSCOPE_API_KEY",
        ):
            await collect(llm.chat([Message("user", "x")]))
    finally:
        await llm.close()
    assert fake_dashscope.http[-1].headers["Authorization"] == "Bearer sk-wrong"


async def test_error_event_mid_stream(qwen: QwenLLM, fake_dashscope: Any, fake_module: Any) -> None:
    fake_dashscope.script_llm(
        fake_module.LLMTurn(
            text="一二三四五六",
            chunk_chars=1,
            error_after=3,
            code="DataInspectionFailed",
            message="Output data may contain inappropriate content.",
        )
    )
    got: list[Any] = []
    with pytest.raises(
        ProviderError,
        match=r"chat stream failed \(DataInspectionFailed: "
        r"Output data may contain",
    ):
        async for item in qwen.chat([Message("user", "x")]):
            got.append(item)
    assert got == ["一", "二", "三"]


async def test_malformed_stream(qwen: QwenLLM, fake_dashscope: Any, fake_module: Any) -> None:
    fake_dashscope.script_llm(fake_module.LLMTurn(text="一二三", chunk_chars=1, malformed_after=1))
    with pytest.raises(ProviderError, match="malformed stream: an SSE event is not JSON"):
        await collect(qwen.chat([Message("user", "x")]))


async def test_server_hang_is_a_timeout_and_the_connection_is_dropped(
    fake_dashscope: Any, fake_module: Any
) -> None:
    llm = QwenLLM(
        QwenOptions(api_key="sk-test", base_http_url=fake_dashscope.http_url, timeout=0.5)
    )
    fake_dashscope.script_llm(fake_module.LLMTurn(text="一二三四", chunk_chars=1, hang_after=2))
    got: list[Any] = []
    start = time.monotonic()
    try:
        with pytest.raises(ProviderTimeout, match=r"no data from .* for 0.5 s"):
            async for item in llm.chat([Message("user", "x")]):
                got.append(item)
    finally:
        await llm.close()
    assert got == ["一", "二"]
    assert 0.4 < time.monotonic() - start < 2.0
    await fake_dashscope.wait_closed(fake_dashscope.http[-1], within=1.0)


async def test_leaving_the_stream_closes_the_connection_promptly(
    qwen: QwenLLM, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.script_llm(fake_module.LLMTurn(text="字" * 200, chunk_chars=1, delay=0.02))
    stream: Any = qwen.chat([Message("user", "讲个长故事")])
    got = [await anext(stream) for _ in range(3)]
    left = time.monotonic()
    await stream.aclose()  # what the session does on barge-in
    rec = fake_dashscope.http[-1]
    closed = await fake_dashscope.wait_closed(rec, within=1.0)
    assert got == ["字"] * 3
    assert closed - left < 0.5
    assert not rec.completed and rec.events_sent < 20


async def test_cancelling_the_consumer_task_closes_the_connection(
    qwen: QwenLLM, fake_dashscope: Any, fake_module: Any
) -> None:
    fake_dashscope.script_llm(fake_module.LLMTurn(text="字" * 200, chunk_chars=1, delay=0.02))
    got: list[Any] = []

    async def consume() -> None:
        async for item in qwen.chat([Message("user", "x")]):
            got.append(item)

    task = asyncio.get_running_loop().create_task(consume())
    await fake_module.eventually(lambda: len(got) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_dashscope.wait_closed(fake_dashscope.http[-1], within=1.0)
    assert not fake_dashscope.http[-1].completed


async def test_passes_the_io_executor_policy(fake_dashscope: Any, fake_module: Any) -> None:
    spec = next(s for s in xiaozhi_providers() if s.name == "qwen")
    executor = Executor(ExecutorSettings(cpu_workers=1))
    options = spec.validate({"api_key": "sk-test", "base_http_url": fake_dashscope.http_url})
    bound = await build(spec, options, executor)
    try:
        fake_dashscope.script_llm(fake_module.LLMTurn(text="好的", chunk_chars=1))
        assert await collect(bound.chat([Message("user", "hi")])) == ["好", "的"]
    finally:
        await bound.aclose()
        executor.shutdown()
