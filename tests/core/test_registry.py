"""Provider discovery: entry points of installed distributions, isolation of broken
plugins, spec validation, duplicates, direct registration, cheap entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import xiaozhi_core.testing
from xiaozhi_core import ProviderSpec, hookimpl
from xiaozhi_core.config import load_config
from xiaozhi_core.errors import ConfigError, PluginError
from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.registry import Registry, default_registry
from xiaozhi_core.types import Execution, Role


def failure_of(registry: Registry, distribution: str) -> Any:
    found = [f for f in registry.failures if f.origin.distribution == distribution]
    assert len(found) == 1, f"expected one failure of {distribution}, got {registry.failures}"
    return found[0]


# ----------------------------------------------------------- separately installed plugins
def test_entry_point_of_a_pip_installed_distribution_is_discovered(with_test_plugins: Path) -> None:
    # Not importable before the target dir is on sys.path, i.e. really installed there.
    assert (with_test_plugins / "xz_good" / "plugin.py").exists()
    registry = Registry()
    registry.load_entry_points()
    found = registry.lookup("tts", "xzbeep")
    assert found.origin.distribution == "xz-good"
    assert found.origin.version == "1.2.3"
    assert found.origin.entry_point == "xzbeep = xz_good.plugin"
    assert found.spec.execution is Execution.CPU and found.spec.description == "a beep per sentence"
    # the core's own plugin is discovered through its entry point too
    assert registry.lookup("llm", "fake").origin.distribution == "xiaozhi-testkit"
    # cheap: the implementation module is imported only when the provider is built
    assert "xz_good.impl" not in sys.modules


async def test_a_discovered_provider_builds_and_runs_through_the_policy(
    with_test_plugins: Path,
) -> None:
    registry = default_registry()
    spec = registry.get("tts", "xzbeep")
    executor = Executor(ExecutorSettings(cpu_workers=1))
    try:
        tts = await build(spec, spec.validate({"sample_rate": 8000}), executor)
        assert "xz_good.impl" in sys.modules
        assert tts.sample_rate == 8000
        chunks = [c async for c in tts.synthesize("two words")]
        assert chunks == [b"\x10\x00" * 160] * 2
    finally:
        executor.shutdown()


def test_cli_lists_the_template_package_from_its_installed_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xiaozhi_core", "plugins"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines() if line.strip()}
    assert rows[("llm", "echo")] == ["llm", "echo", "io", "tools", "xiaozhi-example", "0.1.0"]
    assert rows[("tts", "sine")] == ["tts", "sine", "cpu", "-", "xiaozhi-example", "0.1.0"]
    doc = json.loads(
        subprocess.run(
            [sys.executable, "-m", "xiaozhi_core", "plugins", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )
    echo = next(p for p in doc["providers"] if (p["role"], p["name"]) == ("llm", "echo"))
    assert echo["distribution"] == "xiaozhi-example"
    assert echo["entry_point"] == "example = xiaozhi_example.plugin"
    assert echo["factory"] == "xiaozhi_example.llm:EchoLLM"
    assert {"name": "word_delay", "type": "float", "default": 0.0} in echo["options"]


# ----------------------------------------------------------------------- isolation
def test_plugin_whose_import_fails_is_reported_and_the_rest_still_load(
    with_test_plugins: Path,
) -> None:
    registry = default_registry()
    failure = failure_of(registry, "xz-broken")
    assert failure.origin.version == "0.4.0"
    assert failure.origin.entry_point == "xzbroken = xz_broken.plugin"
    assert "import failed: ModuleNotFoundError" in failure.error
    assert "xz_sdk_that_is_not_installed" in failure.error
    assert "xz-broken 0.4.0" in str(failure)
    # the others are unaffected
    assert registry.get("tts", "xzbeep").name == "xzbeep"
    assert registry.get("llm", "fake").name == "fake"


def test_selecting_a_plugin_that_failed_to_import_names_the_failure(
    with_test_plugins: Path, tmp_path: Path
) -> None:
    registry = default_registry()
    path = tmp_path / "d.yaml"
    path.write_text(
        "vad: {provider: fake}\nasr: {provider: xzbroken}\n"
        "llm: {provider: fake}\ntts: {provider: fake}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config([path], registry, auto_local=False)
    assert err.value.path == "asr.provider"
    assert err.value.file == str(path)
    assert "asr provider 'xzbroken' is not installed" in err.value.message
    assert "a plugin failed to load: xz-broken 0.4.0" in err.value.message


def test_hook_that_raises_is_reported(with_test_plugins: Path) -> None:
    registry = default_registry()
    failure = failure_of(registry, "xz-hookfail")
    assert failure.origin.version == "0.5.0"
    assert failure.error == (
        "xiaozhi_providers() failed: RuntimeError: could not read the model list"
    )
    assert registry.get("tts", "xzbeep")


def test_hook_result_that_is_not_a_provider_spec_is_reported(with_test_plugins: Path) -> None:
    registry = default_registry()
    failure = failure_of(registry, "xz-notspec")
    assert failure.origin.version == "0.6.0"
    assert "returned dict, expected ProviderSpec" in failure.error


def test_invalid_spec_is_reported_and_earlier_specs_of_the_plugin_kept(
    with_test_plugins: Path,
) -> None:
    registry = default_registry()
    failure = failure_of(registry, "xz-badspec")
    assert failure.origin.version == "0.7.0"
    assert (
        "PluginError: provider 'xzbadspec': role 'translator' is not one of: vad, asr"
        in failure.error
    )
    assert registry.lookup("asr", "xzfine").origin.distribution == "xz-badspec"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"role": "translator"}, "role 'translator' is not one of: vad, asr, llm, tts, voiceprint"),
        ({"execution": "gpu"}, "execution 'gpu' must be 'io' or 'cpu'"),
        ({"name": "Bad Name"}, "provider name 'Bad Name' must be lowercase letters, digits"),
        ({"factory": "no_colon_here"}, "must look like 'package.module:attribute'"),
        ({"options": dict}, "options must be a dataclass type"),
        ({"capabilities": "tools"}, "capabilities must be a set of strings"),
    ],
)
def test_invalid_provider_spec_fields(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "role": "asr",
        "name": "ok",
        "execution": "io",
        "factory": "pkg.mod:ASR",
    }
    with pytest.raises(PluginError) as err:
        ProviderSpec(**{**base, **fields})
    assert message in str(err.value)

    class Plugin:
        @hookimpl
        def xiaozhi_providers(self) -> list[ProviderSpec]:
            return [ProviderSpec(**{**base, **fields})]

    registry = Registry()
    registry.register(xiaozhi_core.testing)
    registry.register(Plugin(), name="bad")
    assert len(registry.failures) == 1
    assert message in registry.failures[0].error
    assert registry.get("asr", "fake").name == "fake"


def test_duplicate_role_and_name_is_refused_naming_both_distributions(
    with_test_plugins: Path, tmp_path: Path
) -> None:
    registry = default_registry()
    failure = failure_of(registry, "xz-dup-b")
    assert (
        "duplicate provider asr 'xzdup' offered by xz-dup-a 1.0 and xz-dup-b 2.0" in failure.error
    )
    assert all(r.spec.name != "xzdup" for r in registry.providers())
    with pytest.raises(PluginError, match="offered by both xz-dup-a 1.0 and xz-dup-b 2.0"):
        registry.get("asr", "xzdup")
    path = tmp_path / "dup.yaml"
    path.write_text(
        "vad: {provider: fake}\nasr: {provider: xzdup}\n"
        "llm: {provider: fake}\ntts: {provider: fake}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config([path], registry, auto_local=False)
    assert err.value.path == "asr.provider" and err.value.file == str(path)
    assert "xz-dup-a 1.0 and xz-dup-b 2.0" in err.value.message
    assert "uninstall one" in err.value.message


# ---------------------------------------------------------------- direct registration
def test_pm_register_works_without_entry_points() -> None:
    class Plugin:
        @hookimpl
        def xiaozhi_providers(self) -> list[ProviderSpec]:
            return [
                ProviderSpec(
                    role="vad",
                    name="inline",
                    execution="cpu",
                    factory=xiaozhi_core.testing.EnergyVAD,
                    options=xiaozhi_core.testing.EnergyVADOptions,
                )
            ]

    registry = Registry()
    assert registry.specs() == []
    registry.pm.register(Plugin(), name="inline-plugin")  # plain pluggy, no entry point
    found = registry.lookup("vad", "inline")
    assert found.spec.role is Role.VAD
    assert found.origin.distribution == "<registered inline-plugin>"
    vad = found.spec.create()
    probs, _ = vad.speech_probs(np.zeros((1, 512), np.float32), [None])
    assert probs.tolist() == [0.0]


def test_plugin_with_a_misspelled_hook_or_no_hookimpl_is_reported() -> None:
    class Misspelled:
        @hookimpl
        def xiaozhi_provider(self) -> list[ProviderSpec]:
            return []

    undecorated = SimpleNamespace(xiaozhi_providers=lambda: [])
    registry = Registry()
    registry.register(Misspelled(), name="typo")
    registry.register(undecorated, name="bare")
    errors = {f.origin.distribution: f.error for f in registry.failures}
    assert (
        "unknown hook xiaozhi_provider(); the core's hooks are: xiaozhi_providers"
        in errors["<registered typo>"]
    )
    assert (
        "implements no hook; mark its xiaozhi_providers() function with @xiaozhi_core"
        in errors["<registered bare>"]
    )
    assert not registry.pm.get_plugins()


def test_hook_returning_a_single_spec_or_a_string() -> None:
    class Single:
        @hookimpl
        def xiaozhi_providers(self) -> Any:
            return xiaozhi_core.testing.fake_spec("tts")

    class Text:
        @hookimpl
        def xiaozhi_providers(self) -> Any:
            return "tts"

    registry = Registry()
    registry.register(Single(), name="single")
    registry.register(Text(), name="text")
    assert registry.get("tts", "fake").name == "fake"
    assert [f.error for f in registry.failures] == [
        "xiaozhi_providers() returned str; expected a list of ProviderSpec (or yield them)"
    ]


# ---------------------------------------------------------------- cheap entry points
HEAVY_MODULES = [
    "onnxruntime",
    "faster_whisper",
    "ctranslate2",
    "llama_cpp",
    "openai",
    "dashscope",
    "edge_tts",
    "torch",
    "resemblyzer",
]


def test_loading_entry_points_imports_no_heavy_module() -> None:
    # In a fresh interpreter, so that other tests' imports do not interfere. Entry points
    # are loaded one by one to name the plugin that pulled a heavy module in.
    code = textwrap.dedent(f"""
        import importlib.metadata as md, json, sys
        from xiaozhi_core.registry import ENTRY_POINT_GROUP, Registry
        heavy = {HEAVY_MODULES!r}
        culprits = {{}}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            before = {{m for m in heavy if m in sys.modules}}
            try:
                ep.load()
            except Exception:
                pass
            new = [m for m in heavy if m in sys.modules and m not in before]
            if new:
                culprits[ep.dist.name + ":" + ep.name] = new
        registry = Registry()
        registry.load_entry_points()
        print(json.dumps({{
            "loaded": sorted(m for m in heavy if m in sys.modules),
            "culprits": culprits,
            "providers": [[str(s.role), s.name] for s in registry.specs()],
        }}))
    """)
    result = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    )
    assert result["culprits"] == {}, f"entry points import heavy modules: {result['culprits']}"
    assert result["loaded"] == []
    # sanity: the check did load real plugins (the core's fakes and the template)
    assert ["llm", "echo"] in result["providers"] and ["tts", "fake"] in result["providers"]
