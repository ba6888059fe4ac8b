"""Measure the ``llamacpp`` provider on this machine: load time, time to first token and
generation speed for a short voice-assistant question, per ``n_threads``.

    python plugins/xiaozhi-llamacpp/benchmarks/bench_llamacpp.py         # n_threads 1 and 2
    python plugins/xiaozhi-llamacpp/benchmarks/bench_llamacpp.py --busy  # + one busy core

``--busy`` runs a CPU-bound process beside the model, as TTS/ASR of other sessions do in
the core's pool. "cold" TTFT evaluates the whole prompt; "cached" is the next question of
the same conversation start, whose system-prompt prefix llama.cpp keeps in its KV cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SYSTEM = "You are Xiaozhi, a friendly voice assistant. Answer in one or two short sentences."
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What colour is the sky?",
    "Who wrote Romeo and Juliet?",
]


def bench(n_threads: int, repeats: int) -> str:
    from xiaozhi_llamacpp.plugin import xiaozhi_providers

    from xiaozhi_core.types import Message

    spec = xiaozhi_providers()[0]
    options = {"n_threads": n_threads, "temperature": 0.0, "seed": 0, "max_tokens": 64}
    loads = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        llm = spec.create(options)
        loads.append(time.perf_counter() - t0)
        llm.close()
    llm = spec.create(options)
    cold, cached, speed, prompt = [], [], [], []
    for question in QUESTIONS[:repeats]:
        for model in llm._all:  # forget the KV cache: the whole prompt is evaluated
            model.llama.reset()
        for q, out in ((question, cold), (question + " Thanks.", cached)):
            reply = llm.chat([Message("system", SYSTEM), Message("user", q)])
            for _ in reply:
                pass
            out.append(reply.stats.first_token_seconds or 0.0)
            prompt.append(reply.stats.prompt_tokens)
            if reply.stats.tokens_per_second:
                speed.append(reply.stats.tokens_per_second)
    llm.close()
    med = statistics.median
    return (
        f"n_threads={n_threads}: load {med(loads) * 1000:.0f} ms | prompt ~{med(prompt):.0f} "
        f"tokens: TTFT cold {med(cold) * 1000:.0f} ms, cached {med(cached) * 1000:.0f} ms | "
        f"{med(speed):.1f} tokens/s (min {min(speed):.1f}, max {max(speed):.1f}) "
        f"[median of {repeats}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, choices=range(1, 5))
    parser.add_argument("--busy", action="store_true", help="one busy process beside")
    args = parser.parse_args()
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        print(
            f"cpus {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}"
            + (", with one busy process beside" if busy else "")
        )
        for n in args.threads:
            print(bench(n, args.repeats), flush=True)
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()


if __name__ == "__main__":
    main()
