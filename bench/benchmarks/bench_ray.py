"""Benchmark of the Ray Serve backend against the thread pool.

Measures, with a local Ray instance started here (``--num-cpus``, default 2):

1. Ray start-up: ``ray.init`` + ``serve.start`` seconds, and the RSS of every process
   Ray started (daemons + idle workers), before any provider is deployed;
2. call overhead: one ``transcribe`` of the zero-delay fake ASR awaited through a
   thread-pool :class:`~xiaozhi_core.executor.BoundProvider` vs through a Serve
   deployment handle (sequential, µs per call; and 32 in flight, calls per second);
3. stream overhead: µs per item of the zero-delay fake LLM's token stream;
4. whisper (tiny.en) throughput, 16 spoken utterances submitted at once: thread pool
   (``--num-cpus`` workers), Serve without batching (one replica, ``max_ongoing_requests``
   16), Serve with ``@serve.batch`` (``transcribe_batch``, up to 8 per batch).

Run: ``.venv/bin/python bench/benchmarks/bench_ray.py``. Prints a summary and writes
``bench/benchmarks/results/ray.json``. The numbers depend on whatever else runs on the
machine; the JSON records the CPU count.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

RESULTS = Path(__file__).parent / "results"


def _descendants_rss_mb(root: int) -> tuple[float, int]:
    """RSS (MB) and count of every process descending from ``root`` (excluded)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, count, todo = 0, 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        count += 1
        except OSError:
            pass
    return total / 1024, count


async def _sequential(fn: Any, n: int) -> float:
    await fn()
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n * 1e6


async def _concurrent(fn: Any, n: int, width: int = 32) -> float:
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(width)

    async def one() -> None:
        async with sem:
            await fn()

    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


async def _stream_item_us(llm: Any, n_tokens: int, rounds: int) -> float:
    from xiaozhi_core.types import Message

    items, t0 = 0, time.perf_counter()
    for _ in range(rounds):
        async for _tok in llm.chat([Message("user", "x")]):
            items += 1
    assert items == n_tokens * rounds, items
    return (time.perf_counter() - t0) / items * 1e6


def _utterances(n: int) -> list[np.ndarray]:
    from xiaozhi_espeak.plugin import EspeakOptions
    from xiaozhi_espeak.tts import EspeakTTS

    tts = EspeakTTS(EspeakOptions(voice="en-us", rate=150, sample_rate=16000))
    texts = [
        "What is the capital of France?",
        "Turn on the kitchen light.",
        "How is the weather today?",
        "Play some music please.",
        "Set a timer for five minutes.",
        "Who wrote Hamlet?",
        "What time is it?",
        "Tell me a joke.",
    ]
    return [
        np.frombuffer(b"".join(tts.synthesize(texts[i % len(texts)])), np.int16) for i in range(n)
    ]


async def _throughput(asr: Any, pcms: list[np.ndarray]) -> tuple[float, list[str]]:
    await asr.transcribe(pcms[0])  # warm
    t0 = time.perf_counter()
    results = await asyncio.gather(*(asr.transcribe(p) for p in pcms))
    return len(pcms) / (time.perf_counter() - t0), [r.text for r in results]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from xiaozhi_core.executor import Executor, ExecutorSettings, RayPlacement, RaySettings, build
    from xiaozhi_core.ray_serve import deploy, ray_backend
    from xiaozhi_core.registry import default_registry
    from xiaozhi_core.testing import FakeASROptions, FakeLLMOptions, fake_spec
    from xiaozhi_core.types import Role

    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "num_cpus": args.num_cpus,
        "note": "shared 2-core machine: other work was running",
    }
    executor = Executor(
        ExecutorSettings(cpu_workers=args.num_cpus, ray=RaySettings(num_cpus=args.num_cpus))
    )
    t0 = time.perf_counter()
    backend = await ray_backend(executor)
    out["ray_start_s"] = round(time.perf_counter() - t0, 2)
    await asyncio.sleep(2)  # idle workers settle
    rss, procs = _descendants_rss_mb(os.getpid())
    out["ray_rss_mb"], out["ray_processes"] = round(rss), procs
    print(
        f"Ray {ray.__version__}: start {out['ray_start_s']} s, {procs} processes, {rss:.0f} MB RSS"
    )

    place = RayPlacement(num_cpus=0.5, max_ongoing_requests=64)
    asr_spec = fake_spec("asr")
    local_asr = await build(asr_spec, FakeASROptions(), executor)
    ray_asr = await deploy(asr_spec, FakeASROptions(), place, executor)
    pcm = np.zeros(16000, np.int16)
    for name, asr in (("thread", local_asr), ("ray", ray_asr)):
        us = await _sequential(lambda a=asr: a.transcribe(pcm), args.calls)
        rate = await _concurrent(lambda a=asr: a.transcribe(pcm), args.calls * 2)
        out[f"call_us_{name}"], out[f"calls_per_s_32_{name}"] = round(us, 1), round(rate)
        print(f"call {name:6s}: {us:8.1f} us sequential, {rate:7.0f} calls/s with 32 in flight")

    llm_spec = fake_spec("llm")
    reply = " ".join(f"t{i}" for i in range(50))
    local_llm = await build(llm_spec, FakeLLMOptions(reply=reply), executor)
    ray_llm = await deploy(llm_spec, FakeLLMOptions(reply=reply), place, executor)
    for name, llm in (("thread", local_llm), ("ray", ray_llm)):
        us = await _stream_item_us(llm, 50, 10)
        out[f"stream_item_us_{name}"] = round(us, 1)
        print(f"stream {name:6s}: {us:8.1f} us per item")

    if not args.skip_whisper:
        from ray import serve

        for app in list(backend.apps):
            serve.delete(app)
        backend.apps.clear()
        pcms = _utterances(args.utterances)
        spec = default_registry().get(Role.ASR, "whisper")
        options = spec.validate({"model": "tiny.en"})
        local = await build(spec, options, executor)
        rate, texts = await _throughput(local, pcms)
        out["whisper_per_s_thread"] = round(rate, 2)
        print(f"whisper thread pool ({args.num_cpus} workers): {rate:.2f} utterances/s")
        await local.aclose()
        whole = RayPlacement(
            num_cpus=args.num_cpus,
            max_ongoing_requests=len(pcms),
            max_batch_size=8,
            batch_wait_ms=20,
        )
        for label, sp in (
            ("ray_nobatch", dataclasses.replace(spec, capabilities=frozenset())),
            ("ray_batch", spec),
        ):
            bound = await deploy(sp, options, whole, executor)
            rate, got = await _throughput(bound, pcms)
            info = await bound.describe()
            out[f"whisper_per_s_{label}"] = round(rate, 2)
            out[f"whisper_batches_{label}"] = info["batches"]
            out[f"whisper_same_text_{label}"] = got == texts
            print(
                f"whisper Serve {label}: {rate:.2f} utterances/s (batches {info['batches']}, "
                f"same text as the pool: {got == texts})"
            )
            for app in list(backend.apps):
                serve.delete(app)
            backend.apps.clear()
    executor.shutdown()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--skip-whisper", action="store_true")
    result = asyncio.run(main(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'ray.json'}")
