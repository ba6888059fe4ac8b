"""Discovery, option schemas, API key resolution and endpoint defaults."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from xiaozhi_dashscope.plugin import xiaozhi_providers

from xiaozhi_core.errors import ConfigError, ProviderError
from xiaozhi_core.executor import Executor, ExecutorSettings, bind, check_policy
from xiaozhi_core.registry import default_registry
from xiaozhi_core.types import Message

SPECS = {s.name: s for s in xiaozhi_providers()}


def test_the_entry_point_registers_four_io_providers() -> None:
    registry = default_registry()
    found = {s.name: s for s in registry.specs() if s.factory_path.startswith("xiaozhi_dash")}
    assert {(s.role.value, n, s.execution.value) for n, s in found.items()} == {
        ("llm", "qwen", "io"),
        ("asr", "paraformer", "io"),
        ("tts", "cosyvoice", "io"),
        ("vision", "qwen_vl", "io"),
    }
    assert found["qwen"].capabilities == {"tools"}
    assert found["paraformer"].capabilities == {"streaming", "multilingual"}


def test_the_plugin_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys, xiaozhi_dashscope.plugin as p; p.xiaozhi_providers(); "
        "print('dashscope' in sys.modules, 'websocket' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("name", ["qwen", "paraformer", "cosyvoice"])
def test_missing_api_key_fails_at_factory_time(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with pytest.raises(
        ProviderError,
        match=rf"dashscope {name}: no API key\. Set the "
        r"DASHSCOPE_API_KEY environment variable",
    ):
        SPECS[name].create({})


@pytest.mark.parametrize("name", ["qwen", "paraformer", "cosyvoice"])
def test_sdk_default_endpoints(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-env")
    provider = SPECS[name].create({})
    url = provider.base_url if name == "qwen" else provider.ws_url
    assert url in (
        "https://dashscope.aliyuncs.com/api/v1",
        "wss://dashscope.aliyuncs.com/api-ws/v1/inference",
    )


async def test_the_key_comes_from_the_environment(
    fake_dashscope: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test")
    llm = SPECS["qwen"].create({"base_http_url": fake_dashscope.http_url})
    try:
        assert "".join([x async for x in llm.chat([Message("user", "hi")])])
    finally:
        await llm.close()
    assert fake_dashscope.http[-1].headers["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        (
            "qwen",
            {"temperature": 2.5},
            r"^qwen\.options\.temperature: must be in \[0, 2\), got 2\.5$",
        ),
        ("qwen", {"timeout": 0}, r"^qwen\.options\.timeout: must be > 0, got 0"),
        ("qwen", {"modle": "qwen-max"}, "unknown key 'modle'"),
        ("paraformer", {"sample_rate": 8000}, "not allowed"),
        ("paraformer", {"language_hints": "zh"}, "expected a list"),
        (
            "cosyvoice",
            {"volume": 120},
            r"^cosyvoice\.options\.volume: must be in 0\.\.100, got 120$",
        ),
        (
            "cosyvoice",
            {"rate": 3.0},
            r"^cosyvoice\.options\.rate: must be in 0\.5\.\.2\.0, got 3\.0$",
        ),
        ("paraformer", {"chunk_ms": 0}, r"^paraformer\.options\.chunk_ms: must be >= 1, got 0$"),
    ],
)
def test_option_validation(name: str, options: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        SPECS[name].validate(options, path=f"{name}.options")


@pytest.mark.parametrize(
    ("name", "methods"),
    [
        ("qwen", ["chat"]),
        ("paraformer", ["transcribe", "open_stream"]),
        ("cosyvoice", ["synthesize"]),
    ],
)
async def test_every_provider_binds_as_io(
    name: str, methods: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-env")
    spec = SPECS[name]
    instance = spec.create({})
    executor = Executor(ExecutorSettings(cpu_workers=1))
    try:
        assert check_policy(spec, instance) == methods
        bound = bind(spec, instance, executor)
        assert bound.execution.value == "io"
        await bound.aclose()
    finally:
        executor.shutdown()
