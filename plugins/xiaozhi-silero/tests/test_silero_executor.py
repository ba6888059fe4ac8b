"""Through the core: discovered by entry point, accepted as cpu, runs in the worker pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from xiaozhi_silero.plugin import SileroOptions
from xiaozhi_silero.vad import SileroState, SileroVAD

from xiaozhi_core.executor import Executor, ExecutorSettings, bind, build, check_policy
from xiaozhi_core.registry import default_registry
from xiaozhi_core.types import Execution, Role

W = 512


def test_discovered_through_the_entry_point() -> None:
    registry = default_registry()
    assert not [f for f in registry.failures if "silero" in str(f)]
    spec = registry.get("vad", "silero")
    assert spec.role is Role.VAD and spec.execution is Execution.CPU
    assert spec.capabilities == frozenset({"batch"})
    assert spec.factory_path == "xiaozhi_silero.vad:SileroVAD"
    assert spec.options is SileroOptions


class RecordingVAD(SileroVAD):
    """Records the thread each call ran on."""

    threads: set[str]

    def speech_probs(
        self, windows: np.ndarray, states: Sequence[SileroState]
    ) -> tuple[np.ndarray, list[SileroState]]:
        self.threads.add(threading.current_thread().name)
        return super().speech_probs(windows, states)


@pytest.mark.slow
async def test_bound_as_cpu_and_runs_in_the_pool() -> None:
    spec = default_registry().get("vad", "silero")
    options = spec.validate({"threshold": 0.6})
    vad = RecordingVAD(options)
    vad.threads = set()
    assert check_policy(spec, vad) == ["speech_probs"]
    executor = Executor(ExecutorSettings(cpu_workers=2))
    try:
        bound = bind(spec, vad, executor, options)
        assert bound.execution is Execution.CPU
        assert bound.sample_rate == 16000 and bound.window == W
        rng = np.random.default_rng(4)
        windows = (rng.standard_normal((8, 20, W)) * 0.1).astype(np.float32)

        async def stream(k: int) -> list[float]:
            state = bound.initial_state()
            out = []
            for w in windows[k]:
                probs, (state,) = await bound.speech_probs(w[None], [state])
                out.append(float(probs[0]))
            return out

        # Eight streams at once: calls overlap in the two pool threads (session.run is
        # thread-safe) and every stream still gets its solo results.
        results = await asyncio.gather(*(stream(k) for k in range(8)))
        main = threading.current_thread().name
        assert main not in vad.threads and len(vad.threads) == 2
        assert all(name.startswith("xiaozhi-cpu") for name in vad.threads)
        assert executor.stats()["completed"] >= 8 * 20
        for k in range(8):
            state, expected = vad.initial_state(), []
            for w in windows[k]:
                p, (state,) = vad.speech_probs(w[None], [state])
                expected.append(float(p[0]))
            np.testing.assert_allclose(results[k], expected, rtol=0, atol=1e-6)
    finally:
        executor.shutdown()


@pytest.mark.slow
async def test_built_by_the_core_in_a_process_pool() -> None:
    spec = default_registry().get("vad", "silero")
    options = spec.validate({})
    executor = Executor(ExecutorSettings(kind="process", cpu_workers=1))
    try:
        bound = await build(spec, options, executor)
        state = await bound.remote_attr("initial_state")  # states cross process boundaries
        window = np.zeros((1, W), np.float32)
        probs, (state,) = await bound.speech_probs(window, [state])
        assert probs.shape == (1,) and probs[0] < 0.1
        assert isinstance(state, SileroState) and state.rnn.shape == (2, 128)
    finally:
        executor.shutdown()
