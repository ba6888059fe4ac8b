"""Turn a core chat history into plain ``{"role", "content"}`` turns any chat template accepts.

Small chat models (and many chat templates) know only ``system``, ``user`` and
``assistant`` turns, require a single leading system turn, and some require user and
assistant turns to alternate. So:

* every system message is merged into one leading system turn (plus a suffix);
* an assistant message that requested tool calls says so in words;
* a ``tool`` result becomes a ``user`` turn naming the tool that produced it;
* consecutive turns of the same role are merged.

Pure functions, no llama.cpp here.

Example:
    >>> from xiaozhi_core.types import Message, ToolCall
    >>> history = [
    ...     Message("system", "Be brief."),
    ...     Message("user", "What time is it?"),
    ...     Message("assistant", "", tool_calls=[ToolCall("c1", "get_time", {})]),
    ...     Message("tool", "12:00", tool_call_id="c1"),
    ... ]
    >>> for turn in to_turns(history, default_system="", suffix=""):
    ...     print(turn["role"], "|", turn["content"])
    system | Be brief.
    user | What time is it?
    assistant | (calling get_time with {})
    user | (get_time returned: 12:00)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from xiaozhi_core.types import Message, ToolSpec

__all__ = ["CHATML_TEMPLATE", "fit_turns", "to_native_turns", "to_turns", "tool_dicts"]

Turn = dict[str, Any]

#: Used when a GGUF file carries no ``tokenizer.chat_template`` (ChatML, the most
#: common convention of small instruct models).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _call_text(name: str, arguments: object) -> str:
    return f"(calling {name} with {json.dumps(arguments, ensure_ascii=False)})"


def to_turns(messages: Sequence[Message], *, default_system: str, suffix: str) -> list[Turn]:
    """Plain turns for a chat template (see the module docstring for the rules).

    >>> to_turns([Message("user", "hi")], default_system="Be brief.", suffix="No emoji.")
    [{'role': 'system', 'content': 'Be brief.\\nNo emoji.'}, {'role': 'user', 'content': 'hi'}]
    >>> to_turns([Message("user", "a"), Message("user", "b")], default_system="", suffix="")
    [{'role': 'user', 'content': 'a\\nb'}]
    """
    systems = [m.content for m in messages if m.role == "system" and m.content.strip()]
    system = "\n".join(systems) if systems else default_system
    if suffix:
        system = f"{system}\n{suffix}" if system else suffix
    turns: list[Turn] = [{"role": "system", "content": system}] if system else []

    call_names: dict[str, str] = {}
    body: list[Turn] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            name = call_names.get(m.tool_call_id or "", "the tool")
            role, content = "user", f"({name} returned: {m.content})"
        elif m.role == "assistant":
            parts = [m.content] if m.content else []
            for call in m.tool_calls or []:
                call_names[call.id] = call.name
                parts.append(_call_text(call.name, call.arguments))
            role, content = "assistant", "\n".join(parts)
        else:
            role, content = "user", m.content
        if body and body[-1]["role"] == role:
            body[-1]["content"] = f"{body[-1]['content']}\n{content}"
        else:
            body.append({"role": role, "content": content})
    return turns + body


def to_native_turns(messages: Sequence[Message], *, default_system: str, suffix: str) -> list[Turn]:
    """Turns for a chat template that knows tool calls (Qwen2.5's and the like).

    System messages merge into one leading turn as in :func:`to_turns`; assistant tool
    calls and ``tool`` results keep their own roles, in the OpenAI shape the Hugging Face
    templates read (``tool_calls[].function.name/arguments``); consecutive user turns merge.

    >>> from xiaozhi_core.types import ToolCall
    >>> turns = to_native_turns([
    ...     Message("user", "几点了？"),
    ...     Message("assistant", "", tool_calls=[ToolCall("c1", "get_time", {})]),
    ...     Message("tool", "14:05", tool_call_id="c1")], default_system="简短回答。", suffix="")
    >>> [t["role"] for t in turns], turns[2]["tool_calls"][0]["function"]["name"]
    (['system', 'user', 'assistant', 'tool'], 'get_time')
    """
    systems = [m.content for m in messages if m.role == "system" and m.content.strip()]
    system = "\n".join(systems) if systems else default_system
    if suffix:
        system = f"{system}\n{suffix}" if system else suffix
    turns: list[Turn] = [{"role": "system", "content": system}] if system else []
    body: list[Turn] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "user" and body and body[-1]["role"] == "user":
            body[-1]["content"] = f"{body[-1]['content']}\n{m.content}"
            continue
        turn: Turn = {"role": m.role, "content": m.content or ""}
        if m.role == "assistant" and m.tool_calls:
            turn["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ]
        body.append(turn)
    return turns + body


def tool_dicts(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tools in the OpenAI shape that chat templates print into the prompt.

    >>> tool_dicts([ToolSpec("get_time", "Now.")])[0]["function"]["name"]
    'get_time'
    """
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def fit_turns(turns: list[Turn], size: Callable[[list[Turn]], int], budget: int) -> list[Turn]:
    """Drop the oldest non-system turns until ``size(turns) <= budget``.

    The last turn (the user's question) is always kept, and the kept history starts
    with a user turn. Returns the turns that fit, or the shortest possible list
    (system + last turn) when even that is too long; the caller checks.

    >>> turns = [{"role": "system", "content": "s"}] + [
    ...     {"role": r, "content": c} for r, c in
    ...     [("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a2"),
    ...      ("user", "u3")]]
    >>> chars = lambda ts: sum(len(t["content"]) for t in ts)
    >>> [t["content"] for t in fit_turns(turns, chars, 7)]
    ['s', 'u2', 'a2', 'u3']
    >>> [t["content"] for t in fit_turns(turns, chars, 1)]
    ['s', 'u3']
    """
    head = turns[:1] if turns and turns[0]["role"] == "system" else []
    body = turns[len(head) :]
    while len(body) > 1 and size(head + body) > budget:
        body = body[1:]
        while len(body) > 1 and body[0]["role"] != "user":
            body = body[1:]
    return head + body
