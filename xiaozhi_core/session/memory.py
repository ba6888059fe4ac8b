"""Per-session conversation memory: the system prompt plus whole turns, trimmed to a
character budget (oldest turns go first; a turn's tool messages go with it).

Example:
    >>> from xiaozhi_core.types import Message
    >>> m = Memory("Be brief.", budget_chars=30)
    >>> m.add_turn([Message("user", "a" * 20), Message("assistant", "b" * 5)])
    >>> m.add_turn([Message("user", "c" * 10), Message("assistant", "d" * 5)])
    >>> [x.content[:1] for x in m.messages()]
    ['B', 'c', 'd']
"""

from __future__ import annotations

from ..types import Message

__all__ = ["Memory"]


def _size(msg: Message) -> int:
    n = len(msg.content)
    for call in msg.tool_calls or []:
        n += len(call.name) + len(str(call.arguments))
    return n


class Memory:
    def __init__(self, system_prompt: str, budget_chars: int) -> None:
        self.system_prompt = system_prompt
        self.budget = budget_chars
        self.turns: list[list[Message]] = []

    def add_turn(self, messages: list[Message]) -> None:
        if messages:
            self.turns.append(list(messages))
            self._trim()

    def _trim(self) -> None:
        total = sum(_size(m) for t in self.turns for m in t)
        while len(self.turns) > 1 and total > self.budget:
            total -= sum(_size(m) for m in self.turns.pop(0))

    def seed(self, history: list[Message]) -> None:
        """Put earlier sessions' exchanges (user/assistant pairs, oldest first) before
        this session's turns, within the budget.

        >>> m = Memory("S", 100)
        >>> m.seed([Message("user", "a"), Message("assistant", "b"), Message("user", "c")])
        >>> [[x.content for x in t] for t in m.turns]
        [['a', 'b'], ['c']]
        """
        earlier: list[list[Message]] = []
        for msg in history:
            if msg.role == "user" or not earlier:
                earlier.append([msg])
            else:
                earlier[-1].append(msg)
        self.turns[:0] = earlier
        self._trim()

    def messages(self, context: str = "", system_prompt: str | None = None) -> list[Message]:
        """System prompt (``system_prompt`` or the one given at creation, + per-turn
        context such as the identified speaker or remembered notes) and history."""
        system = (self.system_prompt if system_prompt is None else system_prompt) + (
            f"\n{context}" if context else ""
        )
        return [Message("system", system), *(m for t in self.turns for m in t)]
