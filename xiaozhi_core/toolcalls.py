"""Assembling tool calls from OpenAI-style streamed deltas (for LLM provider authors).

A streamed chat completion sends each tool call in pieces: the first piece of a call
carries its ``index``, ``id`` and ``function.name``, later pieces carry more of the
``function.arguments`` JSON text. :class:`ToolCallAssembler` is fed those pieces as
plain mappings (the ``delta.tool_calls[*]`` items of OpenAI's Chat Completions stream,
the ``message.tool_calls`` items of DashScope's incremental output, ...) and returns the
complete :class:`~xiaozhi_core.types.ToolCall` items, with one-line
:class:`~xiaozhi_core.errors.ProviderError` s naming the tool when the model produced
arguments that are not a JSON object.

Example:
    >>> a = ToolCallAssembler("llm 'demo'")
    >>> a.add({"index": 0, "id": "call_1", "function": {"name": "set_volume", "arguments": '{"vo'}})
    >>> a.add({"index": 0, "function": {"arguments": 'lume": 30}'}})
    >>> a.drain()
    [ToolCall(id='call_1', name='set_volume', arguments={'volume': 30})]
    >>> a.add({"index": 0, "id": "c2", "function": {"name": "now", "arguments": "{oops"}})
    >>> a.drain()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ProviderError: llm 'demo': tool call 'now' has malformed JSON arguments ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import SupportsInt

from .errors import ProviderError
from .types import ToolCall

__all__ = ["ToolCallAssembler"]


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Joins streamed tool-call pieces into complete :class:`ToolCall` items.

    Pieces are matched by ``index`` (as OpenAI sends them); a server that omits the
    index is matched by ``id``, and a piece with neither continues the latest call. A
    name sent again is ignored; a different one is appended (servers that split it).
    ``label`` starts every error message (e.g. ``"openai llm"``).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._calls: dict[int, _Partial] = {}

    def __bool__(self) -> bool:
        """True while pieces are waiting to be drained."""
        return bool(self._calls)

    def _key(self, index: object, call_id: str) -> int:
        if index is not None:
            try:
                if isinstance(index, (str, SupportsInt)):
                    return int(index)
            except (TypeError, ValueError):
                pass
            raise ProviderError(
                f"{self.label}: malformed stream: tool call index {index!r} is not a number"
            )
        if call_id:
            for key, partial in self._calls.items():
                if partial.id == call_id:
                    return key
            return max(self._calls, default=-1) + 1
        return max(self._calls, default=0)

    def add(self, piece: Mapping[str, object]) -> None:
        """Feed one piece: ``{"index": 0, "id": "...", "function": {"name": "...",
        "arguments": "..."}}``; every key may be missing or None."""
        if not isinstance(piece, Mapping):
            raise ProviderError(
                f"{self.label}: malformed stream: a tool call piece is not an object: "
                f"{piece!r:.200}"
            )
        fn = piece.get("function") or {}
        if not isinstance(fn, Mapping):
            raise ProviderError(
                f"{self.label}: malformed stream: tool call 'function' is not an object: "
                f"{fn!r:.200}"
            )
        call_id = str(piece.get("id") or "")
        partial = self._calls.setdefault(self._key(piece.get("index"), call_id), _Partial())
        if call_id and not partial.id:
            partial.id = call_id
        name = fn.get("name")
        if name and name != partial.name:
            partial.name = str(name) if not partial.name else partial.name + str(name)
        arguments = fn.get("arguments")
        if arguments:
            partial.arguments.append(str(arguments))

    def drain(self) -> list[ToolCall]:
        """The complete calls in index order (and forget them).

        >>> ToolCallAssembler("x").drain()
        []
        """
        calls: list[ToolCall] = []
        for key in sorted(self._calls):
            partial = self._calls[key]
            if not partial.name:
                raise ProviderError(
                    f"{self.label}: the server streamed tool call #{key} without a function name"
                )
            text = "".join(partial.arguments).strip() or "{}"
            try:
                arguments = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ProviderError(
                    f"{self.label}: tool call {partial.name!r} has malformed JSON arguments "
                    f"(not valid JSON: {exc.msg} at char {exc.pos}): {text[:200]!r}"
                ) from None
            if not isinstance(arguments, dict):
                raise ProviderError(
                    f"{self.label}: tool call {partial.name!r} arguments must be a JSON object, "
                    f"got {type(arguments).__name__}: {text[:200]!r}"
                )
            calls.append(ToolCall(partial.id or f"call_{key}", partial.name, arguments))
        self._calls.clear()
        return calls
