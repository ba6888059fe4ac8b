"""``llamacpp_tools``: the real Qwen2.5-Coder-1.5B-Instruct GGUF (from PyPI part packages)
calling tools offline, the stream parser on tricky splits, and the packaged-model joiner."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from xiaozhi_llamacpp import _packaged as packaged
from xiaozhi_llamacpp._toolcalls import ToolCallParser
from xiaozhi_llamacpp.plugin import xiaozhi_providers

from xiaozhi_core.errors import ConfigError, ProviderError
from xiaozhi_core.types import Message, ToolCall, ToolSpec

GET_TIME = ToolSpec("get_time", "Get the current local date, time and weekday.")
SET_VOLUME = ToolSpec(
    "self_audio_speaker_set_volume",
    "Set the speaker volume (0-100).",
    {"type": "object", "properties": {"volume": {"type": "integer"}}, "required": ["volume"]},
)
TOOLS = [GET_TIME, SET_VOLUME]
ZH_SYSTEM = "你是小智，一个友好的语音助手。用一两句简短的中文回答。需要时调用工具。"
EN_SYSTEM = (
    "You are Xiaozhi, a friendly voice assistant. Reply in one or two short "
    "sentences. Call a tool when one can answer."
)


def tools_spec() -> Any:
    return next(s for s in xiaozhi_providers() if s.name == "llamacpp_tools")


# -- the stream parser (no model) ---------------------------------------------------------


def run(parser: ToolCallParser, pieces: list[str]) -> list[Any]:
    out: list[Any] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out + parser.finish()


@pytest.mark.parametrize(
    "reply",
    [
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        '```json\n{\n  "name": "get_time",\n  "arguments": {}\n}\n```',
        '{"name": "get_time", "arguments": {}}',
        '{{"name": "get_time", "arguments": {}}}',
        '  {"name": "get_time", "arguments": "{}"}',
        '<tools>\n{"name": "get_time", "arguments": {}}\n</tools>',
        '<tools>\n{"name": "get_time", "arguments": {}}',
    ],
)
@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_parser_finds_the_call_in_every_shape_and_split(reply: str, step: int) -> None:
    pieces = [reply[i : i + step] for i in range(0, len(reply), step)]
    assert run(ToolCallParser(TOOLS), pieces) == [ToolCall("call_1", "get_time", {})]


def test_parser_streams_text_at_once_and_holds_only_a_possible_marker() -> None:
    p = ToolCallParser(TOOLS)
    assert p.feed("好的，") == ["好的，"]
    assert p.feed("我来查一下<") == ["我来查一下"]  # "<" may start <tool_call>
    assert p.feed("b>") == ["<b>"]  # it did not
    out = p.feed(
        '<tool_call>{"name": "self_audio_speaker_set_volume", '
        '"arguments": {"volume": 50, "type": "object"}}</tool_call>然后'
    )
    assert out == [ToolCall("call_1", "self_audio_speaker_set_volume", {"volume": 50}), "然后"]
    assert p.finish() == [] and p.calls == 1


def test_parser_drops_unknown_tools_and_never_speaks_call_json() -> None:
    assert run(
        ToolCallParser(TOOLS), ['<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>好的']
    ) == ["好的"]
    assert run(ToolCallParser(TOOLS), ['{"name": "rm_rf"}']) == []
    # a JSON object opening the reply is not spoken even when it is no call; the text
    # after it is; fenced code stays text (for the core's cleaner)
    assert run(ToolCallParser(TOOLS), ['{"a": 1} 好的。']) == [" 好的。"]
    assert run(ToolCallParser(TOOLS), ["```python\nprint(1)\n```"]) == ["print(1)\n"]


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_parser_never_speaks_a_call_after_a_block_or_cut_off(step: int) -> None:
    """Seen from Qwen2.5-Coder-1.5B on "把音量调大一点。" with no volume tool offered: its
    <tools> block, then the call in template braces, cut off by max_tokens (it was
    spoken); and a doubled-brace call followed by text (the text was lost)."""
    cases = {
        '<tools>\n{"type": "function", "function": {"name": "adjust_volume"}}\n</tools>'
        '\n\n{{"name": "adjust_volume", "arguments": {"volume": 1.5': [],
        '{{"name": "adjust_volume", "arguments": {"volume": 100}}}将音量调大一点。': [
            "将音量调大一点。"
        ],
        '<tools>\n{"a": 1}\n</tools>\n{"name": "get_time", "arguments": {}}\n好的。': [
            ToolCall("call_1", "get_time", {}),
            "\n好的。",
        ],
    }
    for reply, expected in cases.items():
        pieces = [reply[i : i + step] for i in range(0, len(reply), step)]
        out = run(ToolCallParser(TOOLS), pieces)
        text = "".join(c for c in out if isinstance(c, str))
        assert [c for c in out if isinstance(c, ToolCall)] + ([text] if text else []) == expected


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_parser_never_speaks_a_tool_result_the_model_wrote_itself(step: int) -> None:
    """Seen from Qwen2.5-Coder-1.5B asked 今天天气怎么样 with only get_time offered: its
    whole answer was a made-up tool result in the template's tag, and it was spoken."""
    cases = {
        '<toolresponse>{"localtime": "2026-12-08T00:14:37+00:00", "time": "00:14"}'
        "</toolresponse>": "",
        '<tool_response>\n{"name": "get_time", "result": "00:14"}\n</tool_response>'
        "现在是零点十四分。": "现在是零点十四分。",
        '好的。<toolresponse{"time": "00:14"}</toolresponse>': "好的。",
        '<tool_response>{"time": "00:14"': "",  # cut off: still data
    }
    for reply, expected in cases.items():
        pieces = [reply[i : i + step] for i in range(0, len(reply), step)]
        parser = ToolCallParser(TOOLS)
        out = run(parser, pieces)
        assert not [c for c in out if isinstance(c, ToolCall)], (reply, out)
        assert "".join(c for c in out if isinstance(c, str)) == expected, (reply, out)
        assert parser.dropped == 1


def test_parser_numbers_several_calls() -> None:
    reply = (
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "self_audio_speaker_set_volume", "arguments": '
        '{"volume": 10}}</tool_call>'
    )
    out = run(ToolCallParser(TOOLS), [reply])
    assert [c.id for c in out if isinstance(c, ToolCall)] == ["call_1", "call_2"]


# -- options and the packaged model ---------------------------------------------------------


def test_spec_declares_tools_and_validates_model_names() -> None:
    spec = tools_spec()
    assert "tools" in spec.capabilities
    assert spec.validate({}).model == "qwen2.5-coder-1.5b"
    assert spec.validate({"model_path": "/x.gguf"}).model is None
    with pytest.raises(ConfigError, match="model must be one of qwen2.5-coder-1.5b"):
        spec.validate({"model": "llama-70b"}, path="llm.options")
    with pytest.raises(ConfigError, match="set model or model_path, not both"):
        spec.validate({"model": "qwen2.5-coder-0.5b", "model_path": "/x.gguf"})


def test_joiner_rebuilds_a_damaged_cache_and_refuses_wrong_parts(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"GGUF" * 1000)
    b.write_bytes(b"tail")
    good = hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    model = packaged.PackagedGGUF("m.gguf", 4004, good, (("p1==1", "x"), ("p2==1", "y")))
    path = packaged.join_parts(model, [a, b], tmp_path / "cache")
    path.write_bytes(b"x" * 4004)  # same size, other bytes: the stamp no longer matches
    os.utime(path, ns=(1, 1))
    assert packaged.join_parts(model, [a, b], tmp_path / "cache").read_bytes()[:4] == b"GGUF"
    bad = packaged.PackagedGGUF("n.gguf", 4004, "0" * 64, model.parts)
    with pytest.raises(ProviderError, match="join to 4004 bytes with SHA-256"):
        packaged.join_parts(bad, [a, b], tmp_path / "cache")
    assert not list((tmp_path / "cache").glob(".n.gguf*"))  # no temporary file left


def test_missing_part_package_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XIAOZHI_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(
        packaged.CATALOGUE,
        "fake",
        packaged.PackagedGGUF(
            "fake.gguf", 1, "0" * 64, (("no-such-part-pkg1==1", "x/data/part01.bin"),)
        ),
    )
    with pytest.raises(ProviderError, match="needs the package 'no-such-part-pkg1'"):
        packaged.packaged_model_path("fake")


def test_catalogue_parts_are_installed_and_join_to_the_pinned_file() -> None:
    path = packaged.packaged_model_path("qwen2.5-coder-1.5b")
    model = packaged.CATALOGUE["qwen2.5-coder-1.5b"]
    assert path.stat().st_size == model.size
    stamp = json.loads((path.parent / (path.name + ".ok")).read_text())
    assert stamp["sha256"] == model.sha256
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


# -- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen() -> Iterator[Any]:
    llm = tools_spec().create({"temperature": 0.0, "seed": 0, "n_threads": 2})
    yield llm
    llm.close()


def ask(llm: Any, system: str, question: str) -> list[Any]:
    return list(llm.chat([Message("system", system), Message("user", question)], tools=TOOLS))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("system", "question"), [(ZH_SYSTEM, "现在几点了？"), (EN_SYSTEM, "What time is it?")]
)
def test_time_question_calls_get_time_and_the_answer_uses_the_result(
    qwen: Any, system: str, question: str
) -> None:
    first = ask(qwen, system, question)
    calls = [c for c in first if isinstance(c, ToolCall)]
    assert [c.name for c in calls] == ["get_time"], first
    assert not "".join(c for c in first if isinstance(c, str)).strip().startswith("{")
    history = [
        Message("system", system),
        Message("user", question),
        Message("assistant", "", tool_calls=calls),
        # What the core's get_time returns on a UTC machine (CI's). With a +08:00
        # offset this 1.5B model sometimes shifts the hour (README, limitations).
        Message(
            "tool",
            json.dumps({"local_time": "2026-12-07T17:42:10+00:00", "weekday": "Monday"}),
            tool_call_id=calls[0].id,
        ),
    ]
    reply = qwen.chat(history, tools=TOOLS)
    items = list(reply)
    text = "".join(c for c in items if isinstance(c, str))
    assert not any(isinstance(c, ToolCall) for c in items)
    assert "42" in text and ("5" in text or "17" in text), text
    assert reply.stats.finish_reason == "stop"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_volume_request_calls_the_device_tool_with_the_number(qwen: Any) -> None:
    calls = [c for c in ask(qwen, ZH_SYSTEM, "把音量调到50") if isinstance(c, ToolCall)]
    assert calls == [ToolCall("call_1", "self_audio_speaker_set_volume", {"volume": 50})]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_small_talk_is_chinese_text_without_calls(qwen: Any) -> None:
    out = ask(qwen, ZH_SYSTEM, "你好，你是谁？")
    text = "".join(c for c in out if isinstance(c, str))
    assert not any(isinstance(c, ToolCall) for c in out)
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 4, text


def test_parser_counts_what_it_dropped_and_said() -> None:
    p = ToolCallParser(TOOLS)
    run(p, ['<tool_call>{"name": "get_weather", "arguments": {"city": "北京"}}</tool_call>'])
    assert (p.calls, p.dropped, p.text_chars) == (0, 1, 0)
    p = ToolCallParser(TOOLS)
    run(p, ["好的。", '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'])
    assert (p.calls, p.dropped, p.text_chars) == (1, 0, 3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_request_for_a_missing_tool_still_gets_a_spoken_answer(qwen: Any) -> None:
    """With only get_time and volume offered, a weather question must not end silent."""
    reply = qwen.chat(
        [Message("system", ZH_SYSTEM), Message("user", "今天天气怎么样？")], tools=TOOLS
    )
    out = list(reply)
    text = "".join(c for c in out if isinstance(c, str))
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 2 or any(
        isinstance(c, ToolCall) for c in out
    ), (out, reply.stats)
    assert "{" not in text, text
