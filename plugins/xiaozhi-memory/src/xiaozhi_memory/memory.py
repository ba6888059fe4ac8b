"""The ``history`` and ``summary`` memory providers.

Both read and write only through the :class:`~xiaozhi_core.providers.DeviceMemory` the
core hands them (the device store and the deployment's LLM), so they hold no state of
their own: every worker and host sharing a store remembers the same.

Example (a stand-in DeviceMemory):
    >>> import asyncio
    >>> from xiaozhi_memory.plugin import SummaryOptions
    >>> class Mem:
    ...     device_id, session_id, notes = "aa:bb", "s1", {}
    ...     async def history(self, max_chars): return [("I'm Ann", "Hi Ann!")]
    ...     async def session_history(self): return [("I like tea", "Noted!")]
    ...     async def note(self, kind): return self.notes.get(kind)
    ...     async def save_note(self, kind, text): self.notes[kind] = text
    ...     async def complete(self, messages): return "Ann likes tea."
    >>> async def demo():
    ...     mem, summary = Mem(), SummaryMemory(SummaryOptions())
    ...     await summary.consolidate(mem)
    ...     recalled = await summary.recall(mem)
    ...     return recalled.notes, [m.content for m in recalled.history]
    >>> asyncio.run(demo())
    ('Ann likes tea.', ["I'm Ann", 'Hi Ann!'])
"""

from __future__ import annotations

from xiaozhi_core.providers import DeviceMemory
from xiaozhi_core.types import Message, Recall

from .plugin import HistoryOptions, SummaryOptions

__all__ = ["HistoryMemory", "SummaryMemory"]

#: The memory kind ``summary`` keeps its note under.
NOTE = "summary"


def _messages(pairs: list[tuple[str, str]]) -> list[Message]:
    out: list[Message] = []
    for text, reply in pairs:
        out.append(Message("user", text))
        if reply:
            out.append(Message("assistant", reply))
    return out


class HistoryMemory:
    """The device's last turns, within ``max_chars``."""

    def __init__(self, options: HistoryOptions | None = None) -> None:
        self.options = options or HistoryOptions()

    async def recall(self, memory: DeviceMemory) -> Recall:
        return Recall("", _messages(await memory.history(self.options.max_chars)))

    async def consolidate(self, memory: DeviceMemory) -> None:
        """Nothing to do: the turns are already in the store."""


class SummaryMemory:
    """A note per device, rewritten by the LLM after each session; plus the last turns."""

    def __init__(self, options: SummaryOptions | None = None) -> None:
        self.options = options or SummaryOptions()

    async def recall(self, memory: DeviceMemory) -> Recall:
        note = (await memory.note(NOTE) or "").strip()
        pairs = (
            await memory.history(self.options.history_chars) if self.options.history_chars else []
        )
        return Recall(note, _messages(pairs))

    async def consolidate(self, memory: DeviceMemory) -> None:
        pairs = await memory.session_history()
        if not pairs:
            return
        previous = (await memory.note(NOTE) or "").strip() or "(none)"
        conversation = "\n".join(f"User: {text}\nAssistant: {reply}" for text, reply in pairs)
        limit = self.options.note_chars
        note = await memory.complete(
            [
                Message("system", self.options.instruction.format(chars=limit)),
                Message(
                    "user",
                    f"Previous notes:\n{previous}\n\nNew conversation:\n{conversation[-8000:]}",
                ),
            ]
        )
        note = " ".join(note.split())[:limit]
        if note:
            await memory.save_note(NOTE, note)
