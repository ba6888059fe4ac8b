"""Entry point of the ``xiaozhi-memory`` distribution (cheap: options and specs only).

    >>> [(s.role.value, s.name, s.execution.value) for s in xiaozhi_providers()]
    [('memory', 'history', 'io'), ('memory', 'summary', 'io')]
"""

from __future__ import annotations

from dataclasses import dataclass

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = ["HistoryOptions", "SummaryOptions", "xiaozhi_providers"]


@dataclass
class HistoryOptions:
    """Options of ``history``.

    >>> HistoryOptions(max_chars=0)
    Traceback (most recent call last):
    ...
    ValueError: max_chars must be at least 1, got 0
    """

    #: Characters of earlier turns (questions + replies) handed to the next session.
    max_chars: int = 2000

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {self.max_chars}")


@dataclass
class SummaryOptions:
    """Options of ``summary``."""

    #: Longest note kept per device (characters).
    note_chars: int = 600
    #: Characters of the last turns handed over besides the note (0: the note only).
    history_chars: int = 1000
    #: The instruction the LLM gets to write the note.
    instruction: str = (
        "You keep short notes about the user of a voice assistant. Merge the previous "
        "notes and the new conversation into at most {chars} characters of plain facts "
        "worth remembering next time (name, preferences, ongoing topics, promises). "
        "Answer with the notes only, no preamble.")

    def __post_init__(self) -> None:
        if self.note_chars < 20:
            raise ValueError(f"note_chars must be at least 20, got {self.note_chars}")
        if self.history_chars < 0:
            raise ValueError(f"history_chars must be 0 or more, got {self.history_chars}")


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(role=Role.MEMORY, name="history", execution=Execution.IO,
                     factory="xiaozhi_memory.providers:HistoryMemory", options=HistoryOptions,
                     description="the device's last turns from the store, within a budget"),
        ProviderSpec(role=Role.MEMORY, name="summary", execution=Execution.IO,
                     factory="xiaozhi_memory.providers:SummaryMemory", options=SummaryOptions,
                     capabilities=frozenset({"consolidate"}),
                     description="an LLM-written note per device after each session, "
                                 "plus the last turns"),
    ]
