"""Profiles, tool policies and the config errors of the fleet sections (fast, no server)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from xiaozhi_core.config import _validate
from xiaozhi_core.errors import ConfigError
from xiaozhi_core.registry import default_registry
from xiaozhi_core.session.memory import Memory
from xiaozhi_core.session.profiles import build_profiles
from xiaozhi_core.session.tools import ToolBox
from xiaozhi_core.types import Message, ToolCall

REGISTRY = default_registry()
BASE: dict[str, Any] = {
    "vad": {"provider": "fake"},
    "asr": {"provider": "fake"},
    "llm": {"provider": "fake"},
    "tts": {"provider": "fake"},
    "store": {"enabled": False},
}


def config(**sections: Any) -> Any:
    return _validate({**BASE, **sections}, REGISTRY, ["<test>"])


@pytest.mark.parametrize(
    ("sections", "path", "text"),
    [
        (
            {"profiles": {"kids": {"llm": {"modle": "x"}}}},
            "profiles.kids.llm.modle",
            "unknown key 'modle' (did you mean 'model'?); allowed keys: model, temperature",
        ),
        (
            {"llm": {"provider": "fake_io"}, "profiles": {"kids": {"llm": {"model": "x"}}}},
            "profiles.kids.llm",
            "takes no per-request options",
        ),
        (
            {"profiles": {"kids": {"reply_chars": -1}}},
            "profiles.kids",
            "reply_chars must be 0 (no limit) or more, got -1",
        ),
        ({"profiles": {"k i d s": {}}}, "profiles.k i d s", "a profile name is letters"),
        ({"devices": {"aa:bb": "nope"}}, "devices.aa:bb", "unknown profile 'nope'"),
        ({"session": {"default_profile": "nope"}}, "session.default_profile", "unknown profile"),
        ({"memory": {"provider": "history"}}, "memory.provider", "needs the device store"),
        ({"store": {"enabled": True, "batch_size": 0}}, "store.batch_size", "at least 1"),
    ],
)
def test_fleet_sections_are_validated_with_key_paths(
    sections: dict[str, Any], path: str, text: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config(**sections)
    assert err.value.path == path and text in err.value.message


def test_an_unknown_server_tool_in_a_profile_names_its_key() -> None:
    cfg = config(profiles={"kids": {"server_tools": ["get_time", "launch_rockets"]}})
    with pytest.raises(ConfigError) as err:
        build_profiles(cfg)
    assert err.value.path == "profiles.kids.server_tools"
    assert "launch_rockets" in err.value.message and "get_time" in err.value.message


def test_profiles_inherit_from_session_and_resolve_by_store_then_yaml_then_default() -> None:
    cfg = config(
        session={"system_prompt": "S", "greeting": "G", "tts_voice": "v0"},
        profiles={"a": {"system_prompt": "A", "language": "zh"}, "b": {"greeting": "GB"}},
        devices={"AA:01": "a"},
    )
    book = build_profiles(cfg)
    assert book.resolve("aa:01", None).name == "a"
    assert book.resolve("aa:01", "b").name == "b"  # the store wins
    assert book.resolve("aa:01", "gone").name == "a"  # unless the config lost it
    assert book.resolve("aa:02", None).name == "default"
    b = book.profiles["b"]
    assert (b.system_prompt, b.greeting, b.voice) == ("S", "GB", "v0")
    assert book.profiles["a"].prompt == (
        "A\nAlways answer in this language: Simplified Chinese (zh)."
    )
    cfg = config(profiles={"a": {}}, session={"default_profile": "a"})
    assert build_profiles(cfg).resolve("x", None).name == "a"


def test_tool_policy_filters_what_the_llm_sees_and_may_call() -> None:
    cfg = config(
        profiles={
            "quiet": {"server_tools": [], "device_tools": ["self.light.on"]},
            "none": {"device_tools": False},
        }
    )
    book = build_profiles(cfg)
    box = ToolBox(["get_time"])

    async def device_call(name: str, arguments: Any) -> str:
        return json.dumps({"called": name})

    box.set_device_tools([{"name": "self.light.on"}, {"name": "self.reboot"}], device_call)
    default = book.default.tools
    assert [t.name for t in box.specs(default)] == ["get_time", "self_light_on", "self_reboot"]
    quiet = book.profiles["quiet"].tools
    assert [t.name for t in box.specs(quiet)] == ["self_light_on"]
    assert [t.name for t in box.specs(book.profiles["none"].tools)] == ["get_time"]
    refused = asyncio.run(box.call(ToolCall("1", "self_reboot", {}), quiet))
    assert "not available" in refused
    assert "get_time" not in [t.name for t in box.specs(quiet)]
    assert "not available" in asyncio.run(box.call(ToolCall("2", "get_time", {}), quiet))
    assert json.loads(asyncio.run(box.call(ToolCall("3", "self_light_on", {}), quiet))) == {
        "called": "self.light.on"
    }


def test_seeded_history_goes_before_the_session_and_within_the_budget() -> None:
    memory = Memory("S", budget_chars=12)
    memory.seed(
        [
            Message("user", "old1"),
            Message("assistant", "x"),
            Message("user", "old2"),
            Message("assistant", "y"),
        ]
    )
    memory.add_turn([Message("user", "new"), Message("assistant", "z")])
    contents = [m.content for m in memory.messages("note", "P")]
    assert contents == ["P\nnote", "old2", "y", "new", "z"]
