"""LLM ``openai``: streamed text, tool-call assembly and the tool round trip, through the
real SDK against the fake server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fake_openai import ChatReply, FakeOpenAI

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.types import Message, ToolCall, ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
)
VOLUME = ToolSpec(
    "set_volume",
    "Set the speaker volume",
    {"type": "object", "properties": {"volume": {"type": "integer"}}},
)


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


async def test_streams_text_deltas_as_they_arrive(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm", model="gpt-4o-mini")
    fake_openai.script_chat(ChatReply(pieces=["Hel", "lo", ", wor", "ld", "!"], delay=0.05))
    seen_sent: list[int] = []
    items = []
    async for item in llm.chat([Message("system", "Be brief."), Message("user", "Hi")]):
        items.append(item)
        seen_sent.append(fake_openai.chunks_sent[-1])
    assert items == ["Hel", "lo", ", wor", "ld", "!"]
    # Each delta reached us while the server was still streaming the rest.
    total = fake_openai.chunks_sent[-1]
    assert seen_sent[0] < total - 3
    request = fake_openai.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.authorization == "Bearer sk-test-key"
    assert request.json == {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


async def test_sampling_options_and_extra_body_are_sent(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider(
        "llm",
        model="qwen-plus",
        temperature=0.3,
        max_tokens=256,
        extra_body={"enable_thinking": False},
        extra_headers={"X-Trace": "t1"},
    )
    fake_openai.script_chat(ChatReply("ok"))
    assert await collect(llm.chat([Message("user", "hi")], tools=[])) == ["ok"]
    body = fake_openai.requests[-1].json
    assert body is not None
    assert body["model"] == "qwen-plus"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 256
    assert body["enable_thinking"] is False
    assert "tools" not in body  # an empty tools list is omitted (OpenAI rejects [])
    assert fake_openai.requests[-1].headers["X-Trace"] == "t1"


async def test_a_profiles_request_options_win_for_that_request(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    from xiaozhi_openai.plugin import OpenAIChatRequest

    llm = make_provider("llm", model="qwen-plus", temperature=0.3)
    fake_openai.script_chat(ChatReply("ok"))
    request = OpenAIChatRequest(model="qwen-turbo", temperature=0.9, max_tokens=20)
    assert await collect(llm.chat([Message("user", "hi")], options=request)) == ["ok"]
    body = fake_openai.requests[-1].json
    assert body is not None
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("qwen-turbo", 0.9, 20)
    fake_openai.script_chat(ChatReply("ok"))
    assert await collect(llm.chat([Message("user", "hi")])) == ["ok"]
    body = fake_openai.requests[-1].json
    assert body is not None and (body["model"], body["temperature"]) == ("qwen-plus", 0.3)


async def test_tool_calls_are_assembled_from_fragments(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(
        ChatReply(
            pieces=["Let me check."],
            tool_calls=[
                {
                    "id": "call_w1",
                    "name": "get_weather",
                    "arguments": {"city": "São Paulo", "unit": "c"},
                },
                {"id": "call_w2", "name": "get_weather", "arguments": {"city": "Oslo"}},
                {"id": "call_v", "name": "set_volume", "arguments": {"volume": 30}},
            ],
            fragment=3,  # many small argument fragments per call
        )
    )
    items = await collect(
        llm.chat([Message("user", "Weather in SP and Oslo, volume 30")], tools=[WEATHER, VOLUME])
    )
    assert items == [
        "Let me check.",
        ToolCall("call_w1", "get_weather", {"city": "São Paulo", "unit": "c"}),
        ToolCall("call_w2", "get_weather", {"city": "Oslo"}),
        ToolCall("call_v", "set_volume", {"volume": 30}),
    ]
    body = fake_openai.requests[-1].json
    assert body is not None
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "set_volume",
                "description": "Set the speaker volume",
                "parameters": VOLUME.parameters,
            },
        },
    ]


async def test_tool_round_trip(fake_openai: FakeOpenAI, make_provider: Callable[..., Any]) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(
        ChatReply(
            tool_calls=[{"id": "call_abc", "name": "get_weather", "arguments": {"city": "北京"}}]
        ),
        ChatReply("It is sunny in Beijing, 25 degrees."),
    )
    history = [Message("system", "You are a voice assistant."), Message("user", "北京天气怎么样?")]
    first = await collect(llm.chat(history, tools=[WEATHER]))
    assert first == [ToolCall("call_abc", "get_weather", {"city": "北京"})]
    history += [
        Message("assistant", tool_calls=first),
        Message("tool", '{"sky": "sunny", "temp_c": 25}', tool_call_id="call_abc"),
    ]
    second = await collect(llm.chat(history, tools=[WEATHER]))
    assert "".join(second) == "It is sunny in Beijing, 25 degrees."
    # The fake rejects (400) a tool message that does not answer a preceding tool call;
    # this request was accepted, and carries exactly OpenAI's shapes.
    body = fake_openai.requests[-1].json
    assert body is not None
    assert body["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "北京"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "sunny", "temp_c": 25}'},
    ]
    assert json.loads(body["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "北京"
    }


async def test_tool_call_without_arguments_decodes_to_empty_dict(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(ChatReply(tool_calls=[{"id": "c0", "name": "now", "arguments": ""}]))
    items = await collect(llm.chat([Message("user", "time?")], tools=[ToolSpec("now", "time")]))
    assert items == [ToolCall("c0", "now", {})]


async def test_malformed_tool_arguments_name_the_tool(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(
        ChatReply(tool_calls=[{"id": "c1", "name": "set_volume", "arguments": '{"volume": 3'}])
    )
    with pytest.raises(ProviderError, match=r"tool call 'set_volume' has malformed JSON arguments"):
        await collect(llm.chat([Message("user", "louder")], tools=[VOLUME]))


async def test_non_object_tool_arguments_are_refused(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(
        ChatReply(tool_calls=[{"id": "c1", "name": "set_volume", "arguments": "[30]"}])
    )
    with pytest.raises(ProviderError, match=r"'set_volume' arguments must be a JSON object"):
        await collect(llm.chat([Message("user", "louder")], tools=[VOLUME]))


async def test_tool_message_without_call_id_is_refused_before_sending(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    with pytest.raises(ProviderError, match=r"messages\[1\] has role 'tool' but no tool_call_id"):
        await collect(llm.chat([Message("user", "x"), Message("tool", "result")]))
    assert fake_openai.requests == []
