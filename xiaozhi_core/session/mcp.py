"""The server side of device MCP: we are the MCP *client*, the device is the server.

JSON-RPC 2.0 wrapped in ``{"type":"mcp","payload":...}``. Firmware quirks handled here:
ids must be numbers; ``params`` is always an object; errors may lack ``code``;
``tools/list`` pages until ``nextCursor`` is absent; replies arrive asynchronously.
A reply of the wrong shape raises :class:`MCPError` naming the bad field, never a
``TypeError`` from deep inside.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from ..types import JSONObject, JSONValue

__all__ = ["MCPClient", "MCPError"]

log = logging.getLogger(__name__)


class MCPError(Exception):
    """An MCP request failed (error reply, timeout or a reply of the wrong shape)."""


_T = TypeVar("_T")
_D = TypeVar("_D")


def _field(result: JSONObject, method: str, key: str, kind: type[_T], default: _D) -> _T | _D:
    """``result[key]`` if it has type ``kind`` (absent/null: ``default``), else MCPError.

    >>> _field({"tools": 5}, "tools/list", "tools", list, [])
    Traceback (most recent call last):
    ...
    xiaozhi_core.session.mcp.MCPError: bad MCP tools/list reply: result.tools is int, expected list
    """
    value = result.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise MCPError(
            f"bad MCP {method} reply: result.{key} is {type(value).__name__}, "
            f"expected {kind.__name__}"
        )
    return value


class MCPClient:
    def __init__(
        self,
        send: Callable[[dict[str, object]], Awaitable[None]],
        timeout: float,
        client_name: str = "xiaozhi-core",
        client_version: str = "0.1.0",
        max_pages: int = 50,
    ) -> None:
        self._send = send
        self.timeout = timeout
        self.client_info = {"name": client_name, "version": client_version}
        self.max_pages = max_pages
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[JSONValue]] = {}
        self.server_info: JSONObject = {}
        self.tools: list[JSONObject] = []

    async def request(self, method: str, params: Mapping[str, object] | None = None) -> JSONValue:
        rid = self._next_id
        self._next_id += 1
        fut: asyncio.Future[JSONValue] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._send(
                {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}
            )
            async with asyncio.timeout(self.timeout):
                return await fut
        except TimeoutError:
            raise MCPError(
                f"device did not answer MCP {method} (id {rid}) within {self.timeout:g} s"
            ) from None
        finally:
            self._pending.pop(rid, None)
            if fut.done() and not fut.cancelled():
                # an error reply that arrived just as this request was cancelled (the
                # session closing) is retrieved here, not reported at garbage collection
                fut.exception()

    def handle(self, payload: object) -> None:
        """Route one payload from the device (responses by numeric id)."""
        if not isinstance(payload, dict):
            log.debug("ignoring MCP payload that is not an object: %r", payload)
            return
        rid = payload.get("id")
        if "method" in payload:
            log.debug("ignoring MCP request/notification from device: %s", payload.get("method"))
            return
        fut = self._pending.get(rid) if isinstance(rid, int) else None
        if fut is None or fut.done():
            log.debug("MCP reply with unknown id %r", rid)
            return
        if "error" in payload:
            err = payload["error"] if isinstance(payload["error"], dict) else {}
            # clipped: it reaches the log and the LLM, and the device chose its length
            fut.set_exception(MCPError(str(err.get("message") or payload["error"])[:300]))
        else:
            fut.set_result(payload.get("result"))

    async def initialize(self, vision: Mapping[str, object] | None = None) -> None:
        capabilities: dict[str, object] = {}
        if vision:
            capabilities["vision"] = vision
        result = await self.request(
            "initialize",
            {
                "protocolVersion": "2024-11-05",
                "capabilities": capabilities,
                "clientInfo": self.client_info,
            },
        )
        info = result.get("serverInfo") if isinstance(result, dict) else None
        self.server_info = info if isinstance(info, dict) else {}

    async def list_tools(self) -> list[JSONObject]:
        tools: list[JSONObject] = []
        cursor = ""
        for _ in range(self.max_pages):
            result = await self.request("tools/list", {"cursor": cursor})
            if not isinstance(result, dict):
                break
            page = _field(result, "tools/list", "tools", list, None)
            if page is None:
                raise MCPError(
                    "bad MCP tools/list reply: result.tools is missing or null, expected list"
                )
            tools.extend(t for t in page if isinstance(t, dict) and isinstance(t.get("name"), str))
            cursor = _field(result, "tools/list", "nextCursor", str, "")
            if not cursor:
                break
        self.tools = tools
        return tools

    async def call_tool(self, name: str, arguments: JSONObject) -> str:
        """Call a device tool; the result's text content (errors raise MCPError)."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        if not isinstance(result, dict):
            return json.dumps(result)
        content = _field(result, "tools/call", "content", list, [])
        texts = [c.get("text") for c in content if isinstance(c, dict)]
        text = "\n".join(t for t in texts if isinstance(t, str) and t) or json.dumps(result)
        if result.get("isError"):
            raise MCPError(text)
        return text

    def cancel_all(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
