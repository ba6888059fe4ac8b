"""Measure the whisper provider on this machine: join, load, latency/RTF, throughput.

Run:  python plugins/xiaozhi-whisper/benchmarks/bench_whisper.py [--runs 7]
Needs espeak-ng (the utterance is synthesised). Prints Markdown tables. Wall times on a
shared machine are noisy: the medians and minima of several runs are shown, with the
process CPU time (all threads) per call beside them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

from xiaozhi_core.audio import read_wav

Model = Literal["tiny.en", "base"]
MODELS: tuple[Model, Model] = ("tiny.en", "base")
UTTERANCE = "What is the weather like in Paris today?"
SENTENCES = [
    UTTERANCE,
    "Please turn on the lights in the kitchen.",
    "The quick brown fox jumps over the lazy dog.",
    "Remind me to call my mother tomorrow morning.",
    "Play some relaxing music in the living room.",
    "How far is the moon from the earth?",
]


def speak(text: str, folder: Path) -> np.ndarray:
    out = folder / "u.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(out), text],
        check=True,
        capture_output=True,
    )
    return read_wav(out, 16000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-whisper-"))
    try:
        run(args.runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(runs: int, tmp: Path) -> None:
    import jiwer
    from xiaozhi_whisper._models import resolve_model_dir
    from xiaozhi_whisper.asr import WhisperASR
    from xiaozhi_whisper.plugin import WhisperOptions

    clips = {s: speak(s, tmp) for s in SENTENCES}
    pcm = clips[UTTERANCE]
    seconds = len(pcm) / 16000
    print(
        f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}, "
        f"utterance: {seconds:.2f} s\n"
    )

    t0 = time.perf_counter()
    resolve_model_dir("base", cache_dir=str(tmp / "cache"))
    join = time.perf_counter() - t0
    t0 = time.perf_counter()
    resolve_model_dir("base", cache_dir=str(tmp / "cache"))
    reuse = time.perf_counter() - t0
    print(f"base: first join {join:.2f} s, later check of the cache {reuse * 1000:.0f} ms\n")

    print(
        "| model | language | cpu_threads | load s (median) | transcribe s median / min "
        "| RTF median | CPU s per call |"
    )
    print("|---|---|---|---|---|---|---|")
    layouts: list[tuple[Model, str | None]] = [("tiny.en", None), ("base", "en"), ("base", None)]
    for model, language in layouts:
        for threads in (1, 2):
            opts = WhisperOptions(
                model=model,
                language=language,
                cpu_threads=threads,
                num_workers=1,
                cache_dir=str(tmp / "cache"),
            )
            loads = []
            for _ in range(3):
                t0 = time.perf_counter()
                asr = WhisperASR(opts)
                loads.append(time.perf_counter() - t0)
            asr.transcribe(pcm)  # warm-up
            walls, cpus = [], []
            for _ in range(runs):
                c0, t0 = time.process_time(), time.perf_counter()
                asr.transcribe(pcm)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            med = statistics.median(walls)
            print(
                f"| {model} | {language or 'auto'} | {threads} | "
                f"{statistics.median(loads):.2f} | {med:.2f} / {min(walls):.2f} | "
                f"{med / seconds:.2f} | {statistics.median(cpus):.2f} |"
            )
            asr.close()

    print("\nThroughput, 8 utterances submitted from 2 threads (the core's pool size):\n")
    print("| model | cpu_threads x num_workers | wall s | utterances / s |")
    print("|---|---|---|---|")
    for model in MODELS:
        for threads, workers in ((1, 2), (2, 1), (2, 2)):
            asr = WhisperASR(
                WhisperOptions(
                    model=model,
                    language="en",
                    cpu_threads=threads,
                    num_workers=workers,
                    cache_dir=str(tmp / "cache"),
                )
            )
            asr.transcribe(pcm)
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                t0 = time.perf_counter()
                list(pool.map(asr.transcribe, [pcm] * 8))
                wall = time.perf_counter() - t0
            print(f"| {model} | {threads} x {workers} | {wall:.2f} | {8 / wall:.2f} |")
            asr.close()

    print("\nWord error rate, greedy, espeak-ng en-us, 6 sentences:\n")
    for model in MODELS:
        asr = WhisperASR(WhisperOptions(model=model, language="en", cache_dir=str(tmp / "cache")))
        hyps = [asr.transcribe(clips[s]).text for s in SENTENCES]
        norm = [
            " ".join("".join(c for c in t.lower() if c.isalnum() or c in " '").split())
            for t in (*SENTENCES, *hyps)
        ]
        print(f"- {model}: WER {jiwer.wer(norm[:6], norm[6:]):.3f}  {hyps}")
        asr.close()
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
