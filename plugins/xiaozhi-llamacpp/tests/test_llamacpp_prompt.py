"""Rendering of core histories into template turns, and trimming to the context window."""

from __future__ import annotations

from xiaozhi_llamacpp._prompt import fit_turns, to_turns

from xiaozhi_core.types import Message, ToolCall


def roles(turns: list[dict[str, str]]) -> list[str]:
    return [t["role"] for t in turns]


def test_system_messages_merge_into_one_leading_turn_with_suffix() -> None:
    turns = to_turns(
        [Message("system", "Be kind."), Message("user", "hi"), Message("system", "Speaker: Ann.")],
        default_system="unused",
        suffix="Keep it short.",
    )
    assert turns[0] == {"role": "system", "content": "Be kind.\nSpeaker: Ann.\nKeep it short."}
    assert roles(turns) == ["system", "user"]


def test_default_system_prompt_only_without_a_system_message() -> None:
    assert to_turns([Message("user", "hi")], default_system="Short.", suffix="")[0] == {
        "role": "system",
        "content": "Short.",
    }
    assert roles(to_turns([Message("user", "hi")], default_system="", suffix="")) == ["user"]


def test_tool_calls_and_results_render_as_alternating_text_turns() -> None:
    history = [
        Message("user", "Time and volume?"),
        Message(
            "assistant",
            "Checking.",
            tool_calls=[ToolCall("a", "get_time", {}), ToolCall("b", "set_volume", {"volume": 50})],
        ),
        Message("tool", "12:00", tool_call_id="a"),
        Message("tool", "ok", tool_call_id="b"),
        Message("tool", "??", tool_call_id="unknown"),
    ]
    turns = to_turns(history, default_system="", suffix="")
    assert roles(turns) == ["user", "assistant", "user"]
    assert turns[1]["content"] == (
        'Checking.\n(calling get_time with {})\n(calling set_volume with {"volume": 50})'
    )
    assert turns[2]["content"] == (
        "(get_time returned: 12:00)\n(set_volume returned: ok)\n(the tool returned: ??)"
    )


def test_fit_turns_keeps_the_question_and_starts_history_with_a_user_turn() -> None:
    turns = (
        [{"role": "system", "content": "S"}]
        + [{"role": r, "content": r[0] * 10} for r in ["user", "assistant"] * 3]
        + [{"role": "user", "content": "q"}]
    )
    size = lambda ts: sum(len(t["content"]) for t in ts)  # noqa: E731
    fitted = fit_turns(turns, size, 25)
    assert roles(fitted) == ["system", "user", "assistant", "user"]
    assert size(fitted) <= 25
    assert fit_turns(turns, size, 0) == [turns[0], turns[-1]]
    assert fit_turns(turns, size, 10_000) == turns
