"""Discovery, options, API-key resolution and the core's executor policy."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fake_openai import ChatReply, FakeOpenAI, TranscriptionReply
from xiaozhi_openai.plugin import xiaozhi_providers

from xiaozhi_core.errors import ConfigError, ProviderError
from xiaozhi_core.executor import Executor, ExecutorSettings, bind, build, check_policy
from xiaozhi_core.registry import Registry
from xiaozhi_core.testing import tone
from xiaozhi_core.types import Execution, Message, ToolCall, ToolSpec


def spec(role: str) -> Any:
    return next(s for s in xiaozhi_providers() if str(s.role) == role)


def test_entry_point_is_discovered_and_cheap() -> None:
    registry = Registry()
    registry.load_entry_points()
    assert not [f for f in registry.failures if "xiaozhi-openai" in str(f)]
    found = {str(r.spec.role): r for r in registry.providers() if r.spec.name == "openai"}
    assert sorted(found) == ["asr", "llm", "tts", "vision"]
    assert all(r.origin.distribution == "xiaozhi-openai" for r in found.values())
    assert all(r.spec.execution is Execution.IO for r in found.values())
    assert found["llm"].spec.capabilities == {"tools", "options"}  # options: request_options
    assert found["tts"].spec.factory_path == "xiaozhi_openai.tts:OpenAITTS"


def test_plugin_module_does_not_import_the_sdk() -> None:
    import subprocess

    code = "import sys, xiaozhi_openai.plugin; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("role", "options", "message"),
    [
        (
            "llm",
            {"base_url": "api.openai.com/v1"},
            r"llm\.options: base_url 'api\.openai\.com/v1' "
            r"must be an http\(s\) URL",
        ),
        (
            "llm",
            {"first_token_timeout": 0},
            r"^llm\.options\.first_token_timeout: must be > 0, got 0$",
        ),
        ("asr", {"max_retries": -1}, r"^asr\.options\.max_retries: must be >= 0, got -1$"),
        ("tts", {"speed": 9.0}, r"^tts\.options\.speed: must be in 0\.25\.\.4\.0, got 9\.0$"),
        ("asr", {"read_timeout": -1}, r"^asr\.options\.read_timeout: must be > 0, got -1$"),
        ("tts", {"voices": "nova"}, r"unknown key 'voices'"),
        ("llm", {"extra_body": ["x"]}, r"llm\.options\.extra_body: expected a mapping"),
    ],
)
def test_options_are_validated(role: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec(role).validate(options, path=f"{role}.options")


@pytest.mark.parametrize("role", ["llm", "asr", "tts"])
def test_missing_api_key_names_the_env_var_at_factory_time(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(
        ProviderError,
        match=rf"openai {role}: no API key for "
        r"https://api\.openai\.com/v1: set the environment "
        r"variable OPENAI_API_KEY",
    ):
        spec(role).create({})


def test_missing_api_key_for_another_vendor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with pytest.raises(ProviderError, match=r"set the environment variable DEEPSEEK_API_KEY"):
        spec("llm").create(
            {
                "base_url": "https://api.deepseek.com/v1",
                "api_key_env": "DEEPSEEK_API_KEY",
                "model": "deepseek-chat",
            }
        )


async def test_api_key_from_a_custom_env_var(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-key")
    llm = make_provider("llm", api_key=None, api_key_env="DASHSCOPE_API_KEY")
    assert [x async for x in llm.chat([Message("user", "hi")])] == ["Hello!"]
    assert fake_openai.requests[-1].authorization == "Bearer sk-test-key"


async def test_a_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with FakeOpenAI(api_key=None) as ollama:  # like Ollama: any key is accepted
        llm = spec("llm").create({"base_url": ollama.base_url, "model": "qwen2.5:7b"})
        try:
            assert [x async for x in llm.chat([Message("user", "hi")])] == ["Hello!"]
        finally:
            await llm.close()
        assert ollama.requests[-1].authorization == "Bearer no-key-required"


async def test_providers_pass_the_executor_policy_as_io(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    executor = Executor(ExecutorSettings(cpu_workers=1))
    try:
        llm, asr, tts = (make_provider(role) for role in ("llm", "asr", "tts"))
        assert check_policy(spec("llm"), llm) == ["chat"]
        assert check_policy(spec("asr"), asr) == ["transcribe"]
        assert check_policy(spec("tts"), tts) == ["synthesize"]

        bound_llm = bind(spec("llm"), llm, executor)
        fake_openai.script_chat(
            ChatReply("Sure.", tool_calls=[{"id": "c1", "name": "now", "arguments": {}}])
        )
        items = [
            x
            async for x in bound_llm.chat(
                [Message("user", "time?")], tools=[ToolSpec("now", "time")]
            )
        ]
        assert items == ["Sure.", ToolCall("c1", "now", {})]

        bound_asr = bind(spec("asr"), asr, executor)
        fake_openai.script_transcription(TranscriptionReply("ok"))
        assert (await bound_asr.transcribe(tone(0.2))).text == "ok"

        bound_tts = bind(spec("tts"), tts, executor)
        assert bound_tts.sample_rate == 24000
        audio = b"".join([c async for c in bound_tts.synthesize("Hello.")])
        assert len(audio) > 0 and len(audio) % 2 == 0
        assert np.frombuffer(audio, "<i2").any()
        await bound_tts.aclose()  # the provider's async close() (closes the SDK client)
    finally:
        executor.shutdown()


async def test_build_through_the_core(fake_openai: FakeOpenAI) -> None:
    executor = Executor(ExecutorSettings(cpu_workers=1))
    try:
        options = spec("llm").validate(
            {"base_url": fake_openai.base_url, "api_key": "sk-test-key"}, path="llm.options"
        )
        bound = await build(spec("llm"), options, executor)
        stream = bound.chat([Message("user", "hi")])
        assert [x async for x in stream] == ["Hello!"]
        await bound.aclose()
    finally:
        executor.shutdown()
