"""Building a deployment's providers: every role through the executor policy, clear
errors when one cannot start, and no leaks when that happens."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import xiaozhi_core.testing
from xiaozhi_core import ProviderSpec, hookimpl
from xiaozhi_core.app import build_providers, close_providers
from xiaozhi_core.config import load_config
from xiaozhi_core.errors import ExecutionPolicyError, PluginError, ProviderError
from xiaozhi_core.executor import BoundProvider, Executor
from xiaozhi_core.registry import Registry
from xiaozhi_core.types import Role


@dataclass
class ProbeOptions:
    fail: str = ""


class ClosableVAD:
    """An energy VAD that records being closed (and can fail to start)."""

    closed: ClassVar[list[str]] = []
    sample_rate = 16000
    window = 512

    def __init__(self, options: ProbeOptions) -> None:
        if options.fail:
            raise RuntimeError(options.fail)
        self.inner = xiaozhi_core.testing.EnergyVAD()

    def initial_state(self) -> Any:
        return None

    def speech_probs(self, windows: np.ndarray, states: Any) -> Any:
        return self.inner.speech_probs(windows, states)

    def close(self) -> None:
        ClosableVAD.closed.append("vad")


class AsyncOnCpuTTS:
    sample_rate = 16000

    def __init__(self, options: Any) -> None: ...

    async def synthesize(self, text: str, *, voice: str | None = None) -> Any:
        yield b""


class Probes:
    @hookimpl
    def xiaozhi_providers(self) -> list[ProviderSpec]:
        return [
            ProviderSpec(
                role="vad", name="probe", execution="cpu", factory=ClosableVAD, options=ProbeOptions
            ),
            ProviderSpec(role="tts", name="wrong", execution="cpu", factory=AsyncOnCpuTTS),
        ]


@pytest.fixture
def registry() -> Registry:
    ClosableVAD.closed.clear()
    r = Registry()
    r.register(xiaozhi_core.testing)
    r.register(Probes())
    return r


def config(
    tmp_path: Path,
    registry: Registry,
    vad: str = "{provider: probe}",
    tts: str = "{provider: fake}",
) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"vad: {vad}\nasr: {{provider: fake_io}}\nllm: {{provider: fake}}\n"
        f"tts: {tts}\nvoiceprint: {{provider: fake}}\nvision: {{provider: fake}}\n"
    )
    return load_config([path], registry, auto_local=False)


async def test_builds_every_selected_role_behind_the_policy(
    tmp_path: Path, registry: Registry
) -> None:
    cfg = config(tmp_path, registry)
    executor = Executor(cfg.executor)
    try:
        providers = await build_providers(cfg, executor)
        assert {r for r, _ in providers.items()} == set(Role) - {Role.MEMORY}
        assert all(isinstance(p, BoundProvider) for _, p in providers.items())
        assert {r: p.name for r, p in providers.items()}[Role.VAD] == "probe"
        probs, _ = await providers.vad.speech_probs(np.zeros((1, 512), np.float32), [None])
        assert probs.tolist() == [0.0]
        await close_providers(providers)
        assert ClosableVAD.closed == ["vad"]
    finally:
        executor.shutdown()


async def test_a_provider_that_fails_to_start_is_named_and_the_others_closed(
    tmp_path: Path, registry: Registry
) -> None:
    cfg = config(tmp_path, registry)
    # the VAD builds first; make a later role fail
    cfg.llm.spec = ProviderSpec(
        role="llm", name="fake", execution="cpu", factory="xiaozhi_core.testing:NoSuchLLM"
    )
    executor = Executor(cfg.executor)
    try:
        with pytest.raises(PluginError) as err:
            await build_providers(cfg, executor)
        assert str(err.value).startswith(
            "llm provider 'fake': factory 'xiaozhi_core.testing:NoSuchLLM': module"
        )
        assert ClosableVAD.closed == ["vad"]  # what was built got released
    finally:
        executor.shutdown()


async def test_factory_exception_and_policy_error_are_clear(
    tmp_path: Path, registry: Registry
) -> None:
    executor = Executor()
    try:
        cfg = config(tmp_path, registry, vad="{provider: probe, options: {fail: no model}}")
        with pytest.raises(
            ProviderError, match="vad provider 'probe' failed to start: RuntimeError: no model"
        ):
            await build_providers(cfg, executor)
        cfg = config(tmp_path, registry, tts="{provider: wrong}")
        with pytest.raises(ExecutionPolicyError, match="tts provider 'wrong': synthesize"):
            await build_providers(cfg, executor)
    finally:
        executor.shutdown()


async def test_close_providers_logs_a_failing_close_and_closes_the_rest(
    tmp_path: Path, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, registry)
    executor = Executor(cfg.executor)
    try:
        providers = await build_providers(cfg, executor)

        class Broken:
            name = "broken"

            async def aclose(self) -> None:
                raise OSError("socket already gone")

        with_broken = dataclasses.replace(providers, asr=Broken())  # the failing one first
        await close_providers(with_broken)
        assert ClosableVAD.closed == ["vad"]
        assert "closing asr provider 'broken' failed: OSError: socket already gone" in caplog.text
    finally:
        executor.shutdown()
