"""``llm`` ``openai``: streamed chat completions with tool calls.

Text deltas are yielded as they arrive. Tool calls arrive as fragments (the first
delta of a call carries its ``index``, ``id`` and function ``name``; later deltas
carry pieces of the JSON ``arguments``); they are assembled and yielded complete,
arguments decoded, when the choice finishes (or when the stream ends).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.toolcalls import ToolCallAssembler
from xiaozhi_core.types import Message, ToolCall, ToolSpec

from ._common import Budget, close_quietly, make_client, map_error
from .plugin import OpenAIChatRequest, OpenAILLMOptions

__all__ = ["OpenAILLM", "to_api_messages", "to_api_tools"]

log = logging.getLogger("xiaozhi_openai.llm")


def to_api_messages(messages: Sequence[Message], label: str = "openai llm") -> list[dict[str, Any]]:
    """Chat history in the Chat Completions wire format.

    >>> history = [Message("user", "time?"),
    ...            Message("assistant", tool_calls=[ToolCall("c1", "now", {})]),
    ...            Message("tool", "12:00", tool_call_id="c1")]
    >>> to_api_messages(history)  # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'user', 'content': 'time?'},
     {'role': 'assistant', 'content': None, 'tool_calls': [{'id': 'c1', 'type': 'function',
       'function': {'name': 'now', 'arguments': '{}'}}]},
     {'role': 'tool', 'tool_call_id': 'c1', 'content': '12:00'}]
    """
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role == "tool":
            if not m.tool_call_id:
                raise ProviderError(
                    f"{label}: messages[{i}] has role 'tool' but no tool_call_id; a tool result "
                    "must name the call it answers"
                )
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {
                                "name": c.name,
                                "arguments": json.dumps(c.arguments, ensure_ascii=False),
                            },
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        elif m.role in ("system", "user", "assistant"):
            out.append({"role": m.role, "content": m.content})
        else:
            raise ProviderError(f"{label}: messages[{i}] has unknown role {m.role!r}")
    return out


def to_api_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool schemas in the Chat Completions ``tools`` format.

    >>> to_api_tools([ToolSpec("now", "Current time")])  # doctest: +NORMALIZE_WHITESPACE
    [{'type': 'function', 'function': {'name': 'now', 'description': 'Current time',
      'parameters': {'type': 'object', 'properties': {}}}}]
    """
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


class OpenAILLM:
    """Streams a chat completion from an OpenAI-compatible server.

    One :class:`openai.AsyncOpenAI` client (one connection pool) per provider, shared by
    every session; each :meth:`chat` call is one streamed request.
    """

    def __init__(self, options: OpenAILLMOptions) -> None:
        self.options = options
        self.client, self.target = make_client(options, "llm", options.model)

    def _params(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None,
        request: OpenAIChatRequest | None = None,
    ) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {
            "model": request.model if request is not None and request.model else o.model,
            "messages": to_api_messages(messages, self.target.label),
            "stream": True,
        }
        if tools:
            params["tools"] = to_api_tools(tools)
        if o.temperature is not None:
            params["temperature"] = o.temperature
        if o.max_tokens is not None:
            params["max_tokens"] = o.max_tokens
        if request is not None:  # a profile's per-request options win
            if request.temperature is not None:
                params["temperature"] = request.temperature
            if request.max_tokens is not None:
                params["max_tokens"] = request.max_tokens
        if o.extra_body:
            params["extra_body"] = dict(o.extra_body)
        return params

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        options: OpenAIChatRequest | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        params = self._params(messages, tools, options)
        label = self.target.label
        budget = Budget(
            self.target,
            "chat completion",
            self.options.total_timeout,
            self.options.first_token_timeout,
            "first_token_timeout",
        )
        calls = ToolCallAssembler(label)
        finish_reason: str | None = None
        stream: Any = None
        try:
            stream = await budget.step(self.client.chat.completions.create(**params))
            while True:
                try:
                    chunk = await budget.step(stream.__anext__())
                except StopAsyncIteration:
                    break
                for choice in chunk.choices or ():
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    if delta is not None and delta.content:
                        budget.got_first()
                        yield delta.content
                    if delta is not None and delta.tool_calls:
                        budget.got_first()
                        for tc in delta.tool_calls:
                            fn = tc.function
                            calls.add(
                                {
                                    "index": tc.index,
                                    "id": tc.id,
                                    "function": {
                                        "name": fn.name if fn else None,
                                        "arguments": fn.arguments if fn else None,
                                    },
                                }
                            )
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                        for call in calls.drain():
                            yield call
            for call in calls.drain():
                yield call
        except (openai.OpenAIError, json.JSONDecodeError, OSError) as exc:
            raise map_error(exc, self.target, "chat completion") from exc
        except (AttributeError, TypeError) as exc:  # a chunk without the expected shape
            raise ProviderError(
                f"{label}: chat completion failed: malformed stream chunk ({exc}); is base_url "
                "an OpenAI-compatible API?"
            ) from exc
        finally:
            if stream is not None:
                await close_quietly(stream)
        if finish_reason is None:
            log.warning("%s: the stream ended without a finish_reason (cut short?)", label)
        elif finish_reason in ("length", "content_filter"):
            log.warning("%s: the reply was cut short (finish_reason %r)", label, finish_reason)
        if budget.first_at is not None:
            log.debug("%s: first output after %.3f s", label, budget.first_at)

    async def close(self) -> None:
        await self.client.close()
