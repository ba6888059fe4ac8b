"""What a memory provider gets from the core: :class:`StoreDeviceMemory`, one device's
conversations and notes in the store plus the deployment's LLM (a
:class:`~xiaozhi_core.providers.DeviceMemory`), and its blocking twin for ``cpu``
providers; and the two calls the core makes: :func:`recall` when a session starts and
:func:`consolidate` after it ended. Neither ever raises into a session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..executor import Executor
from ..providers import BoundLLM, BoundMemory
from ..types import Execution, Message, Recall, ToolCall

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["StoreDeviceMemory", "SyncMemoryView", "consolidate", "recall"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreDeviceMemory:
    """A :class:`~xiaozhi_core.providers.DeviceMemory` over the device store."""

    def __init__(
        self,
        store: Store,
        llm: BoundLLM,
        device_id: str,
        session_id: str,
        llm_timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.llm = llm
        self.device_id = device_id
        self.session_id = session_id
        self.llm_timeout = llm_timeout

    async def history(self, max_chars: int) -> list[tuple[str, str]]:
        turns = await self.store.recent_turns(self.device_id, max_chars)
        return [(t.text or "", t.reply or "") for t in turns if t.text]

    async def session_history(self) -> list[tuple[str, str]]:
        await self.store.flush(5.0)  # this session's last turns may still be queued
        turns = await self.store.session_turns(self.session_id)
        return [(t.text or "", t.reply or "") for t in turns if t.text and t.outcome == "ok"]

    async def note(self, kind: str) -> str | None:
        return await self.store.get_memory(self.device_id, kind)

    async def save_note(self, kind: str, text: str) -> None:
        await self.store.set_memory(self.device_id, kind, text)

    async def complete(self, messages: Sequence[Message]) -> str:
        async def collect() -> str:
            parts = [c async for c in self.llm.chat(list(messages)) if not isinstance(c, ToolCall)]
            return "".join(parts).strip()

        async with asyncio.timeout(self.llm_timeout):
            return await collect()


class SyncMemoryView:
    """The blocking :class:`~xiaozhi_core.providers.SyncDeviceMemory` a ``cpu`` memory
    provider gets: each call runs on the event loop while its worker thread waits."""

    def __init__(self, memory: StoreDeviceMemory, executor: Executor) -> None:
        self._memory = memory
        self._executor = executor
        self.device_id = memory.device_id
        self.session_id = memory.session_id

    def _run(self, aw: Awaitable[T]) -> T:
        async def run() -> T:
            return await aw

        return self._executor.run_on_loop(run())

    def history(self, max_chars: int) -> list[tuple[str, str]]:
        return self._run(self._memory.history(max_chars))

    def session_history(self) -> list[tuple[str, str]]:
        return self._run(self._memory.session_history())

    def note(self, kind: str) -> str | None:
        return self._run(self._memory.note(kind))

    def save_note(self, kind: str, text: str) -> None:
        self._run(self._memory.save_note(kind, text))

    def complete(self, messages: Sequence[Message]) -> str:
        return self._run(self._memory.complete(messages))


def _view(
    provider: BoundMemory, memory: StoreDeviceMemory, executor: Executor
) -> StoreDeviceMemory | SyncMemoryView:
    return SyncMemoryView(memory, executor) if provider.execution is Execution.CPU else memory


async def recall(
    provider: BoundMemory, memory: StoreDeviceMemory, executor: Executor, within: float
) -> Recall:
    """What ``provider`` remembers of the device (empty on any failure or after
    ``within`` seconds: a session never waits longer, nor fails, for its memory)."""
    try:
        async with asyncio.timeout(within):
            result = await provider.recall(_view(provider, memory, executor))
        if not isinstance(result, Recall):
            raise TypeError(f"recall() returned {type(result).__name__}, not Recall")
        return result
    except Exception as exc:
        log.warning(
            "memory provider %r: recall for device %s failed, the session goes on without it: %s",
            provider.name,
            memory.device_id,
            "timed out" if isinstance(exc, TimeoutError) else exc,
        )
        return Recall()


async def consolidate(provider: BoundMemory, memory: StoreDeviceMemory, executor: Executor) -> bool:
    """Let ``provider`` condense the ended session; False (logged) on failure."""
    try:
        await provider.consolidate(_view(provider, memory, executor))
        return True
    except Exception as exc:
        log.warning(
            "memory provider %r: consolidating session %s of device %s failed: %s",
            provider.name,
            memory.session_id,
            memory.device_id,
            exc,
        )
        return False
