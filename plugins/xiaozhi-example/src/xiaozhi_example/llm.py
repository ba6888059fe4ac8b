"""The ``echo`` LLM: an ``io`` provider that streams the user's words back.

It shows the shape of a cloud LLM provider without a network: ``chat`` is an async
generator that yields text deltas, and it requests a tool call (yielding one complete
:class:`~xiaozhi_core.types.ToolCall`) when the user asks for the time and the caller
offers a ``get_time`` tool. After the tool result comes back it answers with it.

A real provider would create its SDK client in ``__init__`` (once per process, shared
by all sessions) and keep per-request state local to ``chat``.

Example:
    >>> import asyncio
    >>> from xiaozhi_core.types import Message
    >>> from xiaozhi_example.plugin import EchoOptions
    >>> async def demo():
    ...     llm = EchoLLM(EchoOptions())
    ...     return [chunk async for chunk in llm.chat([Message("user", "turn it up")])]
    >>> asyncio.run(demo())
    ['You', ' said:', ' turn', ' it', ' up']
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence

from xiaozhi_core.types import Message, ToolCall, ToolSpec

from .plugin import EchoOptions

__all__ = ["EchoLLM", "asks_for_time"]

_TIME_RE = re.compile(r"\btime\b|几点|时间", re.IGNORECASE)


def asks_for_time(text: str) -> bool:
    """Whether ``text`` asks for the time (English or Chinese).

    >>> asks_for_time("What time is it?"), asks_for_time("现在几点了"), asks_for_time("hi")
    (True, True, False)
    """
    return bool(_TIME_RE.search(text))


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


class EchoLLM:
    """Streams ``"<prefix> <last user message>"`` word by word."""

    def __init__(self, options: EchoOptions) -> None:
        self.options = options

    async def chat(
        self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None
    ) -> AsyncIterator[str | ToolCall]:
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        text = messages[last_user].content.strip() if last_user >= 0 else ""
        results = [m.content for m in messages[last_user + 1 :] if m.role == "tool"]
        offered = {t.name for t in tools or ()}
        if results:
            reply = f"It is {results[-1]}."
        elif asks_for_time(text) and "get_time" in offered:
            # One complete call; the caller runs it and calls chat() again with the result.
            yield ToolCall(id=f"call_{len(messages)}", name="get_time", arguments={})
            return
        else:
            reply = f"{self.options.prefix} {text}".strip()
        for i, word in enumerate(_words(reply)):
            if i and self.options.word_delay:
                await asyncio.sleep(self.options.word_delay)
            yield word
