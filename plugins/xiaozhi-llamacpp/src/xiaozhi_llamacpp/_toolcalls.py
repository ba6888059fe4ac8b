"""Find tool calls in a streamed reply of a Qwen-style model and turn them into ToolCalls.

Qwen2.5's chat template asks for ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
Small models often drop the tags and answer with the bare JSON object, wrap it in a
markdown fence (```json ... ```) or in another tag (``<tools>``); all are recognised.
Everything else is text and streams through at once, except a short tail that could be
the start of a marker (held back until the next delta decides). A call to a tool that
was not offered, or JSON that is not a call, is never spoken as JSON: unknown calls are
dropped (and logged), fenced non-call code is passed on as text for the core's cleaner.

Arguments are checked against the tool's JSON schema: keys it does not declare are
dropped (a tiny model sometimes echoes the schema itself as arguments).

Example:
    >>> from xiaozhi_core.types import ToolSpec
    >>> p = ToolCallParser([ToolSpec("get_time", "now")])
    >>> out = p.feed("好的。<tool_")
    >>> out += p.feed('call>\\n{"name": "get_time", "arguments": {}}\\n</tool_call>')
    >>> out + p.finish()
    ['好的。', ToolCall(id='call_1', name='get_time', arguments={})]
    >>> p = ToolCallParser([ToolSpec("get_time", "now")])
    >>> p.feed('```json\\n{"name": "get_time", "arguments": {"type": "object"}}\\n```')
    [ToolCall(id='call_1', name='get_time', arguments={})]
    >>> p = ToolCallParser([ToolSpec("get_time", "now")])
    >>> p.feed('{"name": "get_time", "arguments": {}'), p.feed("}")
    ([], [ToolCall(id='call_1', name='get_time', arguments={})])
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from xiaozhi_core.providers import LLMChunk
from xiaozhi_core.types import ToolCall, ToolSpec

__all__ = ["ToolCallParser", "parse_calls"]

log = logging.getLogger(__name__)

_FENCE = "```"
#: Tags around a call: Qwen's own, and ones small models use instead (1.5B sometimes
#: writes the <tools> tag of its system prompt).
_TAGS = {
    "<tool_call>": "</tool_call>",
    "<tools>": "</tools>",
    "<function_call>": "</function_call>",
}
#: Tags of a tool's *result*, which the template puts in the prompt and a small model
#: sometimes writes itself (Qwen 1.5B: ``<toolresponse>{"localtime": ...}</toolresponse>``
#: as its whole answer). Such a block is data, never a call and never spoken. Matched
#: without their ``>`` (a following ``>`` is dropped with them).
_RESULT_TAGS = {
    "<tool_response": "</tool_response",
    "<toolresponse": "</toolresponse",
}
_MARKERS = {**_TAGS, **_RESULT_TAGS}


def _objects(text: str) -> list[Any]:
    """Every JSON value found in ``text``, scanning from each '{' that starts one."""
    decoder = json.JSONDecoder()
    found, i = [], text.find("{")
    while i >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        found.append(value)
        i = text.find("{", end)
    return found


def parse_calls(text: str, tools: Sequence[ToolSpec]) -> list[tuple[str, dict[str, Any]]] | None:
    """``(name, arguments)`` of the calls in ``text``, or None if it holds no call.

    >>> spec = ToolSpec("set_volume", "", {"type": "object",
    ...                 "properties": {"volume": {"type": "integer"}}})
    >>> parse_calls('{{"name": "set_volume", "arguments": {"volume": 50}}}', [spec])
    [('set_volume', {'volume': 50})]
    >>> parse_calls('{"name": "set_volume", "arguments": "{\\\\"volume\\\\": 5}"}', [spec])
    [('set_volume', {'volume': 5})]
    >>> parse_calls('print("hi")', [spec]) is None
    True
    """
    by_name = {t.name: t for t in tools}
    calls: list[tuple[str, dict[str, Any]]] = []
    saw_call = False
    for obj in _objects(text):
        if isinstance(obj, dict) and "name" not in obj and len(obj) == 1:
            inner = next(iter(obj.values()))  # {"function": {...}} and the like
            obj = inner if isinstance(inner, dict) else obj
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        saw_call = True
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                args = {}
        if not isinstance(args, dict):
            args = {}
        spec = by_name.get(obj["name"])
        if spec is None:
            log.info(
                "llamacpp: the model called %r, which is not an offered tool; dropped", obj["name"]
            )
            continue
        props = spec.parameters.get("properties")
        if isinstance(props, dict):
            args = {k: v for k, v in args.items() if k in props}
        calls.append((obj["name"], args))
    return calls if saw_call else None


def _json_end(text: str) -> int | None:
    """Where the JSON value at the start of ``text`` ends, or None while incomplete; the
    doubled braces of a template (``{{"name": ...}}``) count as one object.

    >>> _json_end('{"a": 1} ok'), _json_end('{{"a": 1}} ok'), _json_end('{"a": ')
    (8, 10, None)
    """
    decoder = json.JSONDecoder()
    try:
        return decoder.raw_decode(text)[1]
    except ValueError:
        if not text.startswith("{{"):
            return None
    try:
        end = decoder.raw_decode(text, 1)[1]
    except ValueError:
        return None
    close = len(text[end:]) - len(text[end:].lstrip())
    if end + close < len(text) and text[end + close] == "}":
        return end + close + 1
    return None  # the outer brace may still come


def _held_tail(text: str) -> int:
    """Length of the longest suffix of ``text`` that could begin a marker."""
    for n in range(min(len(text), max(map(len, _MARKERS)) - 1), 0, -1):
        tail = text[-n:]
        if _FENCE.startswith(tail) or any(tag.startswith(tail) for tag in _MARKERS):
            return n
    return 0


class ToolCallParser:
    """Streaming splitter of a reply into text deltas and :class:`ToolCall` items."""

    def __init__(self, tools: Sequence[ToolSpec], id_prefix: str = "call_") -> None:
        self.tools = list(tools)
        self._buf = ""
        self._mode = "text"  # text | tag | result | fence | bare
        self._close = ""
        self._drop_gt = False  # a ">" closing a result tag may come next
        self._started = False  # something other than whitespace was seen
        self._count = 0
        self._prefix = id_prefix
        #: Calls yielded, blocks dropped (unknown tool, no call inside), text yielded.
        self.calls = 0
        self.dropped = 0
        self.text_chars = 0

    def _calls(self, body: str) -> list[LLMChunk] | None:
        parsed = parse_calls(body, self.tools)
        if parsed is None:
            return None
        if not parsed:
            self.dropped += 1
        out: list[LLMChunk] = []
        for name, args in parsed:
            self._count += 1
            out.append(ToolCall(f"{self._prefix}{self._count}", name, args))
        self.calls += len(out)
        return out

    def feed(self, delta: str) -> list[LLMChunk]:
        """Text and calls that are complete after ``delta``."""
        return self._count_text(self._feed(delta))

    def _count_text(self, out: list[LLMChunk]) -> list[LLMChunk]:
        self.text_chars += sum(len(c.strip()) for c in out if isinstance(c, str))
        return out

    def _feed(self, delta: str) -> list[LLMChunk]:
        self._buf += delta
        out: list[LLMChunk] = []
        while True:
            if self._mode == "text":
                if self._drop_gt and self._buf:
                    self._drop_gt = False
                    if self._buf.startswith(">"):
                        self._buf = self._buf[1:]
                if not self._started:
                    stripped = self._buf.lstrip()
                    if not stripped:
                        return out
                    self._started = True
                    if stripped.startswith("{"):
                        self._mode, self._buf = "bare", stripped
                        continue
                starts = [(i, m) for m in (*_MARKERS, _FENCE) if (i := self._buf.find(m)) >= 0]
                if not starts:
                    keep = _held_tail(self._buf)
                    text, self._buf = (
                        self._buf[: len(self._buf) - keep],
                        self._buf[len(self._buf) - keep :],
                    )
                    if text:
                        out.append(text)
                    return out
                i, marker = min(starts)
                if i:
                    out.append(self._buf[:i])
                self._buf = self._buf[i + len(marker) :]
                if marker == _FENCE:
                    self._mode, self._close = "fence", _FENCE
                elif marker in _RESULT_TAGS:
                    self._mode, self._close = "result", _RESULT_TAGS[marker]
                else:
                    self._mode, self._close = "tag", _TAGS[marker]
            elif self._mode in ("tag", "fence", "result"):
                end_marker = self._close
                j = self._buf.find(end_marker)
                if j < 0:
                    return out
                body, self._buf = self._buf[:j], self._buf[j + len(end_marker) :]
                if self._mode == "result":
                    log.info("llamacpp: the model wrote a tool result itself; not spoken")
                    self.dropped += 1
                    self._drop_gt = True
                else:
                    out.extend(self._close_block(body))
                # bare JSON right after a block is a call too (1.5B writes its <tools>
                # block, then the call without tags)
                self._mode, self._started = "text", False
            else:  # bare JSON at the start of the reply: wait for the whole object
                end = _json_end(self._buf)
                if end is None:
                    return out  # incomplete: wait (finish() drops what never completes)
                body, self._buf = self._buf[:end], self._buf[end:]
                calls = self._calls(body)
                if calls is None:
                    log.info("llamacpp: a JSON value that is not a tool call; not spoken")
                    self.dropped += 1
                else:
                    out.extend(calls)
                self._mode, self._started = "text", False

    def _close_block(self, body: str) -> list[LLMChunk]:
        calls = self._calls(body)
        if calls is not None:
            return list(calls)
        if self._mode == "fence":  # a code block that is not a call: text for the cleaner
            code = re.sub(r"^[A-Za-z]*\n", "", body)
            return [code] if code.strip() else []
        log.info("llamacpp: a tool-call block without a call in it; dropped")
        self.dropped += 1
        return []

    def finish(self) -> list[LLMChunk]:
        """Whatever is left when the reply ends (an unclosed block is parsed as is)."""
        return self._count_text(self._finish())

    def _finish(self) -> list[LLMChunk]:
        out: list[LLMChunk] = []
        rest, mode = self._buf, self._mode
        self._buf, self._mode = "", "text"
        if not rest.strip():
            return out
        if mode == "text":
            if self._drop_gt and rest.startswith(">"):
                rest = rest[1:]
            return [rest] if rest.strip() else out
        if mode == "result":  # a result block never closed: data, not speech
            log.info("llamacpp: the model wrote a tool result itself; not spoken")
            self.dropped += 1
            return out
        calls = self._calls(rest)
        if calls is not None:
            return list(calls)
        if mode in ("tag", "bare"):  # an unclosed block, or JSON cut off: never spoken
            log.info("llamacpp: the reply ended inside an unfinished tool call; not spoken")
            self.dropped += 1
            return out
        return [re.sub(r"^[A-Za-z]*\n", "", rest)]
