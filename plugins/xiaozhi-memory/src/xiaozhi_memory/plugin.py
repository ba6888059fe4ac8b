"""Entry point of the ``xiaozhi-memory`` distribution (cheap: options and specs only).

>>> [(s.role.value, s.name, s.execution.value) for s in xiaozhi_providers()]
[('memory', 'history', 'io'), ('memory', 'summary', 'io')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

__all__ = ["HistoryOptions", "SummaryOptions", "xiaozhi_providers"]


@dataclass(frozen=True)
class HistoryOptions:
    """Options of ``history`` (``memory.options``).

    >>> from xiaozhi_core.options import validate_options
    >>> validate_options(HistoryOptions, {"max_chars": 0}, path="memory.options")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: memory.options.max_chars: must be >= 1, got 0
    """

    #: Characters of earlier turns (questions + replies) handed to the next session.
    max_chars: Annotated[int, at.Ge(1)] = 2000


@dataclass(frozen=True)
class SummaryOptions:
    """Options of ``summary`` (``memory.options``)."""

    #: Longest note kept per device (characters).
    note_chars: Annotated[int, at.Ge(20)] = 600
    #: Characters of the last turns handed over besides the note (0: the note only).
    history_chars: Annotated[int, at.Ge(0)] = 1000
    #: The instruction the LLM gets to write the note.
    instruction: str = (
        "You keep short notes about the user of a voice assistant. Merge the previous "
        "notes and the new conversation into at most {chars} characters of plain facts "
        "worth remembering next time (name, preferences, ongoing topics, promises). "
        "Answer with the notes only, no preamble."
    )


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            role=Role.MEMORY,
            name="history",
            execution=Execution.IO,
            factory="xiaozhi_memory.memory:HistoryMemory",
            options=HistoryOptions,
            description="the device's last turns from the store, within a budget",
        ),
        ProviderSpec(
            role=Role.MEMORY,
            name="summary",
            execution=Execution.IO,
            factory="xiaozhi_memory.memory:SummaryMemory",
            options=SummaryOptions,
            capabilities=frozenset({"consolidate"}),
            description="an LLM-written note per device after each session, plus the last turns",
        ),
    ]
