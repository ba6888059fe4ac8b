"""Tools offered to the LLM: server-side functions and the device's MCP tools, behind
one interface (LLM function names must match ``^[a-zA-Z0-9_-]+$``, MCP names have dots,
so names are mapped both ways).

Example:
    >>> import asyncio
    >>> box = ToolBox(server_tools=["get_time"])
    >>> [t.name for t in box.specs()]
    ['get_time']
    >>> "T" in asyncio.run(box.call(ToolCall("1", "get_time", {})))
    True
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..types import JSONObject, ToolCall, ToolSpec

__all__ = ["SERVER_TOOLS", "ToolBox", "llm_name"]


async def _get_time(arguments: JSONObject) -> str:
    """The local time as JSON: ``local_time`` (ISO 8601) and ``weekday`` as before, plus
    plain ``date`` and ``time`` fields a small model copies into its answer more
    reliably than it reads them out of an ISO timestamp."""
    now = datetime.datetime.now().astimezone()
    return json.dumps(
        {
            "local_time": now.isoformat(timespec="seconds"),
            "date": now.strftime("%Y-%m-%d"),
            "time": now.strftime("%H:%M"),
            "weekday": now.strftime("%A"),
        }
    )


#: Server-side tools: name → (spec, implementation).
SERVER_TOOLS: dict[str, tuple[ToolSpec, Callable[[JSONObject], Awaitable[str]]]] = {
    "get_time": (
        ToolSpec(
            "get_time",
            "Get the current local date, time and weekday.",
            {"type": "object", "properties": {}},
        ),
        _get_time,
    ),
}


class ToolPolicyLike(Protocol):
    """Which tools a profile allows (:class:`~xiaozhi_core.session.profiles.ToolPolicy`)."""

    @property
    def server(self) -> frozenset[str]: ...

    def allows_device(self, mcp_name: str) -> bool: ...


def llm_name(name: str) -> str:
    """An MCP tool name as an LLM function name.

    >>> llm_name("self.audio_speaker.set_volume")
    'self_audio_speaker_set_volume'
    """
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]


class ToolBox:
    """The tools of one session."""

    def __init__(self, server_tools: list[str] | None = None) -> None:
        unknown = [n for n in server_tools or [] if n not in SERVER_TOOLS]
        if unknown:
            raise ValueError(
                f"unknown server tool {unknown[0]!r}; available: {', '.join(SERVER_TOOLS)}"
            )
        self.server = {n: SERVER_TOOLS[n] for n in server_tools or []}
        self.device: dict[str, tuple[str, ToolSpec]] = {}  # llm name → (mcp name, spec)
        self.device_call: Callable[[str, JSONObject], Awaitable[str]] | None = None

    def set_device_tools(
        self, tools: list[JSONObject], call: Callable[[str, JSONObject], Awaitable[str]]
    ) -> None:
        self.device = {}
        for t in tools:
            name = t.get("name")
            if not isinstance(name, str):
                continue
            raw_schema = t.get("inputSchema")
            # a device's malformed schema must not reach the LLM: no parameters instead
            schema: JSONObject = (
                raw_schema
                if isinstance(raw_schema, dict) and raw_schema
                else {"type": "object", "properties": {}}
            )
            spec = ToolSpec(llm_name(name), str(t.get("description", "")), schema)
            self.device[spec.name] = (name, spec)
        self.device_call = call

    def specs(self, policy: ToolPolicyLike | None = None) -> list[ToolSpec]:
        """The tools to offer; ``policy`` (a profile's) narrows them: its ``server``
        names (any server tool, not only the session's) and the device tools it allows."""
        if policy is None:
            return [s for s, _ in self.server.values()] + [s for _, s in self.device.values()]
        return [SERVER_TOOLS[n][0] for n in sorted(policy.server) if n in SERVER_TOOLS] + [
            s for mcp, s in self.device.values() if policy.allows_device(mcp)
        ]

    async def call(self, call: ToolCall, policy: ToolPolicyLike | None = None) -> str:
        """Run a tool; failures come back as text for the LLM, never as exceptions."""
        try:
            if policy is not None:
                if call.name in SERVER_TOOLS and call.name in policy.server:
                    return await SERVER_TOOLS[call.name][1](call.arguments)
                if (
                    call.name in self.device
                    and policy.allows_device(self.device[call.name][0])
                    and self.device_call is not None
                ):
                    return await self.device_call(self.device[call.name][0], call.arguments)
                return json.dumps({"error": f"tool {call.name} is not available"})
            if call.name in self.server:
                return await self.server[call.name][1](call.arguments)
            if call.name in self.device and self.device_call is not None:
                return await self.device_call(self.device[call.name][0], call.arguments)
            return json.dumps({"error": f"unknown tool {call.name}"})
        except Exception as exc:
            return json.dumps({"error": f"{type(exc).__name__}: {exc}"})
