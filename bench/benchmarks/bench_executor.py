"""Benchmark of the executor policy: dispatch overhead and event-loop lag under CPU load.

Measures

1. the cost of one ``cpu`` call through a :class:`~xiaozhi_core.executor.BoundProvider`
   (awaited, thread pool and process pool) against a direct call, and of an ``io`` call
   through the wrapper against awaiting the method directly (µs per call);
2. the per-item cost of a ``cpu`` stream (a plain generator pumped through the pool)
   against iterating the generator directly (µs per item);
3. the event-loop lag (p50 / p99 / max, :class:`~xiaozhi_core.looplag.LoopLagMonitor`)
   while two pool workers run CPU-heavy work that holds the GIL (pure-Python loops) or
   releases it (numpy matmul, hashlib over large buffers), in a thread pool and, for
   the GIL-holding case, in a process pool.

Run: ``.venv/bin/python bench/benchmarks/bench_executor.py [--seconds 3]``. Prints a summary
and writes ``bench/benchmarks/results/executor.json``. Numbers depend on the machine and on
whatever else runs on it; the JSON records the CPU count and Python version.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

# One BLAS thread per pool worker: the pool is what spreads work over the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from xiaozhi_core.executor import Executor, ExecutorSettings, bind, build
from xiaozhi_core.looplag import LoopLagMonitor
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.types import ASRResult

RESULTS = Path(__file__).resolve().parent / "results" / "executor.json"
_RESULT = ASRResult("ok")


class TrivialASR:
    """A cpu provider whose work is nothing: what remains is the policy's overhead."""

    def __init__(self, options: Any = None) -> None:
        pass

    def transcribe(self, pcm: Any, *, language: str | None = None) -> ASRResult:
        return _RESULT


class TrivialAsyncASR:
    def __init__(self, options: Any = None) -> None:
        pass

    async def transcribe(self, pcm: Any, *, language: str | None = None) -> ASRResult:
        return _RESULT


class CountTTS:
    sample_rate = 16000

    def __init__(self, options: Any = None) -> None:
        pass

    def synthesize(self, text: str, *, voice: str | None = None) -> Iterator[bytes]:
        chunk = b"\0\0" * 160
        for _ in range(int(text)):
            yield chunk


def _spec(role: str, execution: str, factory: Any) -> ProviderSpec:
    return ProviderSpec(role=role, name="bench", execution=execution, factory=factory)


def _per_call_us(seconds: float, n: int) -> float:
    return round(seconds / n * 1e6, 3)


async def _timed_async(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return time.perf_counter() - t0


def _best(runs: list[float]) -> float:
    return min(runs)


# ------------------------------------------------------------------ 1. call overhead
async def bench_calls(n: int) -> dict[str, Any]:
    pcm = np.zeros(160, np.int16)
    direct = TrivialASR()
    direct_s = _best([_time_sync(lambda: direct.transcribe(pcm), n) for _ in range(3)])

    # baseline: asyncio's own thread hop, without the policy
    loop = asyncio.get_running_loop()
    bare_pool = concurrent.futures.ThreadPoolExecutor(2)
    await loop.run_in_executor(bare_pool, int)
    bare_s = _best(
        [await _timed_async(lambda: loop.run_in_executor(bare_pool, int), n) for _ in range(3)]
    )
    bare_pool.shutdown()

    ex = Executor(ExecutorSettings(cpu_workers=2))
    bound = bind(_spec("asr", "cpu", TrivialASR), TrivialASR(), ex)
    await bound.transcribe(pcm)  # warm the pool
    bound_s = _best([await _timed_async(lambda: bound.transcribe(pcm), n) for _ in range(3)])

    # throughput with many calls in flight (what a busy server sees)
    in_flight = 64
    t0 = time.perf_counter()
    for _ in range(n // in_flight):
        await asyncio.gather(*(bound.transcribe(pcm) for _ in range(in_flight)))
    concurrent_s = time.perf_counter() - t0

    io_direct = TrivialAsyncASR()
    io_bound = bind(_spec("asr", "io", TrivialAsyncASR), TrivialAsyncASR(), ex)
    io_direct_s = _best(
        [await _timed_async(lambda: io_direct.transcribe(pcm), n) for _ in range(3)]
    )
    io_bound_s = _best([await _timed_async(lambda: io_bound.transcribe(pcm), n) for _ in range(3)])
    ex.shutdown()

    pex = Executor(ExecutorSettings(kind="process", cpu_workers=2))
    remote = await build(_spec("asr", "cpu", f"{__name__}:TrivialASR"), None, pex)
    await remote.transcribe(pcm)  # start the workers, create the instance there
    await remote.transcribe(pcm)
    n_proc = max(200, n // 10)
    proc_s = await _timed_async(lambda: remote.transcribe(pcm), n_proc)
    pex.shutdown()

    return {
        "iterations": n,
        "direct_call_us": _per_call_us(direct_s, n),
        "bare_run_in_executor_us": _per_call_us(bare_s, n),
        "cpu_thread_pool_awaited_us": _per_call_us(bound_s, n),
        "cpu_thread_pool_overhead_us": _per_call_us(bound_s - direct_s, n),
        f"cpu_thread_pool_{in_flight}_in_flight_us_per_call": _per_call_us(
            concurrent_s, (n // in_flight) * in_flight
        ),
        "io_direct_await_us": _per_call_us(io_direct_s, n),
        "io_bound_await_us": _per_call_us(io_bound_s, n),
        "io_wrapper_overhead_us": _per_call_us(io_bound_s - io_direct_s, n),
        "cpu_process_pool_awaited_us": _per_call_us(proc_s, n_proc),
        "process_pool_iterations": n_proc,
    }


def _time_sync(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ 2. stream overhead
async def bench_stream(n: int) -> dict[str, Any]:
    tts = CountTTS()
    t0 = time.perf_counter()
    for _ in tts.synthesize(str(n)):
        pass
    direct_s = time.perf_counter() - t0

    out: dict[str, Any] = {"items": n, "direct_us_per_item": _per_call_us(direct_s, n)}
    for buffer in (1, 8):
        ex = Executor(ExecutorSettings(cpu_workers=2, stream_buffer=buffer))
        bound = bind(_spec("tts", "cpu", CountTTS), CountTTS(), ex)
        async for _ in bound.synthesize("10"):
            pass
        t0 = time.perf_counter()
        count = 0
        async for _ in bound.synthesize(str(n)):
            count += 1
        stream_s = time.perf_counter() - t0
        ex.shutdown()
        assert count == n
        out[f"cpu_stream_buffer{buffer}_us_per_item"] = _per_call_us(stream_s, n)
        out[f"cpu_stream_buffer{buffer}_overhead_us_per_item"] = _per_call_us(
            stream_s - direct_s, n
        )
    return out


# ------------------------------------------------------------------ 3. loop lag under load
def gil_holding(seconds: float) -> int:
    """Pure-Python arithmetic: holds the GIL except at the interpreter's switch points."""
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        total = 0
        for i in range(20000):
            total += i * i
        rounds += 1
    return rounds


def numpy_matmul(seconds: float) -> int:
    """BLAS matmul: releases the GIL while it computes."""
    a = np.random.default_rng(0).standard_normal((384, 384))
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        a = np.tanh(a @ a)
        rounds += 1
    return rounds


def hashlib_sha256(seconds: float) -> int:
    """sha256 over 8 MiB buffers: hashlib releases the GIL for large inputs."""
    data = os.urandom(8 * 1024 * 1024)
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        hashlib.sha256(data).digest()
        rounds += 1
    return rounds


async def _lag_while(
    ex: Executor | None, work: Callable[[float], int] | None, seconds: float
) -> dict[str, Any]:
    monitor = LoopLagMonitor(interval=0.005, slow_callback=0.02, window=100000)
    await asyncio.sleep(0)
    monitor.start()
    rounds: list[int] = []
    try:
        if ex is None or work is None:
            await asyncio.sleep(seconds)
        else:
            rounds = list(await asyncio.gather(*(ex.run(work, seconds) for _ in range(2))))
    finally:
        monitor.stop()
    lags_ms = sorted(x * 1000 for x in monitor.lags)
    stats = monitor.stats()
    return {
        "seconds": seconds,
        "samples": len(lags_ms),
        "p50_ms": round(statistics.median(lags_ms), 3) if lags_ms else 0.0,
        "p99_ms": stats["p99_ms"],
        "max_ms": stats["max_ms"],
        "slow_callbacks": stats["slow_callbacks"],
        "work_rounds": rounds,
    }


async def bench_lag(seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tick_interval_ms": 5.0,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
    }
    out["idle"] = await _lag_while(None, None, seconds)
    threads = Executor(ExecutorSettings(cpu_workers=2))
    await threads.run(int)  # start the pool
    for name, work in [
        ("thread_pool_gil_holding_python", gil_holding),
        ("thread_pool_gil_releasing_numpy_matmul", numpy_matmul),
        ("thread_pool_gil_releasing_hashlib", hashlib_sha256),
    ]:
        out[name] = await _lag_while(threads, work, seconds)
    threads.shutdown()
    procs = Executor(ExecutorSettings(kind="process", cpu_workers=2))
    await asyncio.gather(procs.run(int), procs.run(int))  # spawn the workers first
    out["process_pool_gil_holding_python"] = await _lag_while(procs, gil_holding, seconds)
    procs.shutdown()
    return out


# ------------------------------------------------------------------ main
async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "calls": await bench_calls(args.calls),
        "stream": await bench_stream(args.items),
        "loop_lag": await bench_lag(args.seconds),
    }


def _print(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"executor benchmark: {m['cpu_count']} CPUs, Python {m['python']}")
    print("\n1. one call (µs)")
    for k, v in results["calls"].items():
        print(f"  {k:48} {v}")
    print("\n2. cpu stream, per item (µs)")
    for k, v in results["stream"].items():
        print(f"  {k:48} {v}")
    print("\n3. event-loop lag while 2 workers compute (ms; 5 ms ticks)")
    print(f"  {'load':42} {'p50':>8} {'p99':>8} {'max':>8}")
    for k, v in results["loop_lag"].items():
        if isinstance(v, dict):
            print(f"  {k:42} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f} {v['max_ms']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per call benchmark")
    parser.add_argument("--items", type=int, default=20000, help="items of the stream")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each lag phase")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output file")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    _print(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
