"""The fake server itself, read by the SDK directly (it is reused by other tests)."""

from __future__ import annotations

import aiohttp
import openai
from fake_openai import ChatReply, FakeOpenAI


async def test_non_stream_completion_and_usage_chunks(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key="sk-test-key", base_url=fake_openai.base_url, max_retries=0)
    try:
        fake_openai.script_chat(ChatReply("Hi!", tool_calls=[{"name": "now", "arguments": {}}]))
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        message = completion.choices[0].message
        assert message.content == "Hi!"
        assert message.tool_calls is not None
        call = message.tool_calls[0]
        assert call.type == "function" and call.function.name == "now"
        assert completion.choices[0].finish_reason == "tool_calls"

        fake_openai.script_chat(ChatReply("a b"))
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert [c.choices[0].delta.content for c in chunks if c.choices] == ["", "a", " b", None]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
    finally:
        await client.close()


async def test_missing_key_gets_openais_401(fake_openai: FakeOpenAI) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            fake_openai.base_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        ) as r,
    ):
        assert r.status == 401
        body = await r.json()
    assert body["error"]["message"].startswith("You didn't provide an API key.")
    assert set(body["error"]) == {"message", "type", "param", "code"}
