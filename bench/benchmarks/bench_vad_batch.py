"""Benchmark of VAD per stream at batch sizes 1…256, the way the audio hub calls it.

For each batch size ``n`` (``n`` streams, one 512-sample window each):

* ``direct``: ``provider.speech_probs(windows, states)`` called in this thread — the
  provider's own cost;
* ``hub_round``: what one hub round costs in the pool job: stacking the streams' int16
  windows, converting to float32, the call, and handing the new states back;
* ``awaited``: the provider behind the executor policy (``BoundProvider``), awaited from
  the event loop — one loop → pool → loop round trip per call, as a non-fused hub does.

Reported as µs per window (per stream per 32 ms of audio) and as the number of real-time
streams one core could serve (a stream makes 31.25 windows per second).

Run: ``.venv/bin/python bench/benchmarks/bench_vad_batch.py [--vad silero] [--seconds 1]``.
Writes ``bench/benchmarks/results/vad_batch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.registry import default_registry

RESULTS = Path(__file__).resolve().parent / "results" / "vad_batch.json"
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 16000
    rows = [
        np.sin(2 * np.pi * rng.uniform(100, 800) * t) * rng.uniform(0.01, 0.5) for _ in range(n)
    ]
    return (np.array(rows) * 32767).astype(np.int16)


def _timeit(fn: Any, seconds: float) -> float:
    """Seconds per call: repeat ``fn`` for about ``seconds`` (best of 3 slices)."""
    fn()
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while (time.perf_counter() - t0) < seconds / 3 or n < 3:
            fn()
            n += 1
        best = min(best, (time.perf_counter() - t0) / n)
    return best


async def _main(vad_name: str, seconds: float) -> dict[str, Any]:
    registry = default_registry()
    spec = registry.get("vad", vad_name)
    executor = Executor(ExecutorSettings(cpu_workers=1))
    bound = await build(spec, spec.validate({}), executor)
    inst = bound.instance
    rows = []
    for n in SIZES:
        pcm = _windows(n)
        frames = pcm.astype(np.float32) / 32768.0
        states = [inst.initial_state() for _ in range(n)]
        direct = _timeit(lambda f=frames, s=states: inst.speech_probs(f, s), seconds)

        def hub_round(pcm: np.ndarray = pcm, states: list[Any] = states) -> None:
            win = [pcm[i] for i in range(len(pcm))]
            x = np.stack(win).astype(np.float32)
            x /= 32768.0
            p, new = inst.speech_probs(x, states)
            _ = [float(v) for v in p]
            states[:] = new

        hub = _timeit(hub_round, seconds)
        reps = max(5, int(seconds / max(direct, 1e-5) / 3))
        t0 = time.perf_counter()
        for _ in range(reps):
            await bound.speech_probs(frames, states)
        awaited = (time.perf_counter() - t0) / reps
        row = {
            "batch": n,
            "direct_us_per_window": round(direct / n * 1e6, 2),
            "hub_round_us_per_window": round(hub / n * 1e6, 2),
            "awaited_us_per_window": round(awaited / n * 1e6, 2),
            "direct_us_per_call": round(direct * 1e6, 1),
            "awaited_us_per_call": round(awaited * 1e6, 1),
            "realtime_streams_per_core": round(1 / (hub / n) / 31.25),
        }
        rows.append(row)
        print(
            f"batch {n:3d}: direct {row['direct_us_per_window']:7.2f} us/window, hub round "
            f"{row['hub_round_us_per_window']:7.2f}, awaited {row['awaited_us_per_window']:7.2f}"
            f" -> {row['realtime_streams_per_core']} streams/core",
            flush=True,
        )
    await bound.aclose()
    executor.shutdown()
    return {
        "vad": vad_name,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vad", default="silero")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args(argv)
    out = asyncio.run(_main(args.vad, args.seconds))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
