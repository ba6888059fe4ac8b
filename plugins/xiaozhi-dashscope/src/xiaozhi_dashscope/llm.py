"""``qwen``: Qwen chat through DashScope's Generation API, streamed, with tool calls.

Uses the SDK's native asyncio API, :class:`dashscope.AioGeneration` (aiohttp + SSE),
with ``result_format="message"``, ``incremental_output=True`` and ``stream=True``: each
SSE event carries only the new text and the new pieces of tool-call arguments, which
are assembled here into complete :class:`~xiaozhi_core.types.ToolCall` items. No
thread is involved. The aiohttp session is owned by the provider (one per event loop),
so that ``close()`` releases it.

Message mapping (xiaozhi → DashScope):

    >>> from xiaozhi_core.types import Message, ToolCall
    >>> to_dashscope_messages([
    ...     Message("system", "你是小智。"),
    ...     Message("user", "北京天气？"),
    ...     Message("assistant", "", tool_calls=[ToolCall("c1", "weather", {"city": "北京"})]),
    ...     Message("tool", "晴，25度", tool_call_id="c1"),
    ... ])[2:]  # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'assistant', 'content': '', 'tool_calls': [{'id': 'c1', 'type': 'function',
      'function': {'name': 'weather', 'arguments': '{"city": "北京"}'}}]},
     {'role': 'tool', 'content': '晴，25度', 'tool_call_id': 'c1', 'name': 'weather'}]
"""

from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import certifi
import dashscope
from dashscope import AioGeneration
from dashscope.common.utils import get_user_agent

from xiaozhi_core.errors import ProviderError, ProviderTimeout
from xiaozhi_core.toolcalls import ToolCallAssembler
from xiaozhi_core.types import Message, ToolCall, ToolSpec

from ._common import api_error, log, resolve_api_key
from .plugin import QwenOptions

__all__ = ["QwenLLM", "to_dashscope_messages", "to_dashscope_tools"]

_SSE = "text/event-stream"


def to_dashscope_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The history in DashScope's ``input.messages`` shape (OpenAI-like roles)."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for call in m.tool_calls:
                names[call.id] = call.name
                calls.append(
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": json.dumps(call.arguments, ensure_ascii=False),
                        },
                    }
                )
            out.append({"role": "assistant", "content": m.content or "", "tool_calls": calls})
        elif m.role == "tool":
            item: dict[str, Any] = {
                "role": "tool",
                "content": m.content,
                "tool_call_id": m.tool_call_id or "",
            }
            if m.tool_call_id in names:
                item["name"] = names[m.tool_call_id]
            out.append(item)
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def to_dashscope_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool schemas in DashScope's (OpenAI-style) ``parameters.tools`` shape.

    >>> to_dashscope_tools([ToolSpec("get_time", "Current time")])[0]["function"]["name"]
    'get_time'
    """
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


class QwenLLM:
    """``io`` LLM provider ``qwen``."""

    def __init__(self, options: QwenOptions) -> None:
        self.options = options
        self._api_key = resolve_api_key(options.api_key, "qwen")
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, aiohttp.ClientSession
        ] = weakref.WeakKeyDictionary()
        self._ssl: ssl.SSLContext | None = None
        # The SDK builds its User-Agent with platform.processor(), which runs `uname -p`
        # once per process: do it here, not on the event loop during the first request.
        get_user_agent()

    @property
    def base_url(self) -> str:
        return self.options.base_http_url or str(dashscope.base_http_api_url)

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            if self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl), trust_env=True
            )
            self._sessions[loop] = session
        return session

    def _request(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None
    ) -> dict[str, Any]:
        o = self.options
        kwargs: dict[str, Any] = dict(o.parameters)
        kwargs.update(
            model=o.model,
            messages=to_dashscope_messages(messages),
            result_format="message",
            incremental_output=True,
            stream=True,
            api_key=self._api_key,
            base_address=self.base_url,
            request_timeout=o.timeout,
            session=self._session(),
        )
        for name in ("temperature", "top_p", "max_tokens", "enable_thinking"):
            if getattr(o, name) is not None:
                kwargs[name] = getattr(o, name)
        if o.enable_search:
            kwargs["enable_search"] = True
        if tools:
            kwargs["tools"] = to_dashscope_tools(tools)
        return kwargs

    async def chat(
        self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None
    ) -> AsyncIterator[str | ToolCall]:
        """Stream the reply: text deltas as they arrive, then complete tool calls."""
        if not messages:
            raise ProviderError("dashscope qwen: chat() needs at least one message")
        stream: Any = await AioGeneration.call(**self._request(messages, tools))
        calls = ToolCallAssembler("dashscope qwen")
        try:
            while True:
                rsp = await self._next(stream)
                if rsp is None:
                    break
                for item in self._parse(rsp, calls):
                    yield item
            for call in calls.drain():
                yield call
        finally:
            # Leaving early (barge-in, cancellation) closes the SDK's generators; the
            # aiohttp response is released unfinished, which closes its connection.
            await stream.aclose()

    async def _next(self, stream: Any) -> Any:
        o = self.options
        try:
            async with asyncio.timeout(o.timeout):
                return await anext(stream)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise ProviderTimeout(
                f"dashscope qwen: no data from {self.base_url} for {o.timeout:g} s "
                f"(model {o.model}); the service hangs or the network is down"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise ProviderError(
                f"dashscope qwen: cannot connect to {self.base_url}: {exc}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"dashscope qwen: connection to {self.base_url} failed mid-stream: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            # The SDK could not build a GenerationResponse from an event.
            raise ProviderError(
                f"dashscope qwen: malformed stream from {self.base_url}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _parse(self, rsp: Any, calls: ToolCallAssembler) -> list[str]:
        if rsp.status_code != 200:
            headers = rsp.headers or {}
            ctype = str(headers.get("Content-Type") or headers.get("content-type") or "")
            if rsp.code == "Unknown" and _SSE in ctype:
                raise ProviderError(
                    f"dashscope qwen: malformed stream: an SSE event is not JSON: "
                    f"{str(rsp.message)[:200]!r}"
                )
            if _SSE in ctype:
                # An ``event:error`` inside an accepted stream: the SDK reports it with a
                # placeholder HTTP status (400), so only the code and message are real.
                raise api_error(
                    "qwen",
                    "chat stream",
                    code=rsp.code,
                    message=rsp.message,
                    request_id=rsp.request_id,
                )
            raise api_error(
                "qwen",
                "chat request",
                status=int(rsp.status_code),
                code=rsp.code,
                message=rsp.message,
                request_id=rsp.request_id,
            )
        output = rsp.output
        if output is None:
            raise ProviderError("dashscope qwen: malformed stream: an event has no output")
        texts: list[str] = []
        choices = output.get("choices") or []
        if not choices:
            if output.get("text"):
                texts.append(str(output["text"]))
            return texts
        message = choices[0].get("message") or {}
        content = message.get("content")
        if isinstance(content, str) and content:
            texts.append(content)
        elif isinstance(content, list):  # multimodal-style content parts
            texts.extend(str(p["text"]) for p in content if isinstance(p, dict) and p.get("text"))
        for piece in message.get("tool_calls") or []:
            if not isinstance(piece, dict):
                raise ProviderError(f"dashscope qwen: malformed tool call piece: {piece!r}")
            calls.add(piece)
        return texts

    async def close(self) -> None:
        sessions = list(self._sessions.items())
        self._sessions.clear()
        for loop, session in sessions:
            if session.closed:
                continue
            if loop is asyncio.get_running_loop():
                await session.close()
            else:
                log.debug("qwen: aiohttp session of another event loop left to its loop")
