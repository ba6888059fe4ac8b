"""The shared assembler of OpenAI-style streamed tool calls (used by openai and qwen)."""

from __future__ import annotations

import pytest

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.toolcalls import ToolCallAssembler
from xiaozhi_core.types import ToolCall


def piece(
    index: int | None = None,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, object]:
    return {
        "index": index,
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def test_pieces_by_index_interleaved_and_in_index_order() -> None:
    a = ToolCallAssembler("t")
    a.add(piece(1, "b", "now", ""))
    a.add(piece(0, "a", "set_volume", '{"vol'))
    a.add(piece(1, None, None, "{}"))
    a.add(piece(0, "", None, 'ume": 30}'))
    assert a
    assert a.drain() == [ToolCall("a", "set_volume", {"volume": 30}), ToolCall("b", "now", {})]
    assert not a and a.drain() == []


def test_servers_without_index_are_matched_by_id_then_latest() -> None:
    a = ToolCallAssembler("t")
    a.add(piece(None, "x1", "get_", '{"ci'))
    a.add(piece(None, None, "weather", 'ty": "Rome"}'))
    a.add(piece(None, "x2", "now", None))
    assert a.drain() == [ToolCall("x1", "get_weather", {"city": "Rome"}), ToolCall("x2", "now", {})]


def test_repeated_name_and_missing_id_and_function() -> None:
    a = ToolCallAssembler("t")
    a.add(piece(0, None, "now", None))
    a.add(piece(0, None, "now", None))  # a server that repeats the name in every piece
    a.add({"index": 1, "function": {"name": "later"}})
    assert a.drain() == [ToolCall("call_0", "now", {}), ToolCall("call_1", "later", {})]


@pytest.mark.parametrize(
    ("pieces", "pattern"),
    [
        (
            [piece(0, "x1", None, "{}")],
            r"^t: the server streamed tool call #0 without a function name$",
        ),
        (
            [piece(0, "x", "set_volume", '{"volume": 3')],
            r"^t: tool call 'set_volume' has malformed JSON arguments \(not valid JSON: Expecting",
        ),
        (
            [piece(0, "x", "set_volume", "[30]")],
            r"^t: tool call 'set_volume' arguments must be a JSON object, got list: '\[30\]'$",
        ),
        ([piece("zero", "x", "a", "{}")], r"index 'zero' is not a number"),
        (["text"], r"a tool call piece is not an object"),
        ([{"index": 0, "function": "now"}], r"'function' is not an object"),
    ],
)
def test_malformed_streams_are_one_line_errors(pieces: list[object], pattern: str) -> None:
    a = ToolCallAssembler("t")
    with pytest.raises(ProviderError, match=pattern) as info:
        for p in pieces:
            a.add(p)  # type: ignore[arg-type]
        a.drain()
    assert "\n" not in str(info.value)
