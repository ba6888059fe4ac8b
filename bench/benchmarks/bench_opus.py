"""Benchmark of Opus on the hot path: per-frame decode (upstream, 16 kHz / 60 ms, speech
and DTX packets) and encode (downstream, 24 kHz / 60 ms), through the core's wrappers
(:mod:`xiaozhi_core.protocol.opus`) and, for comparison, opuslib's bare ctypes calls.

Also measures how decode scales over threads (libopus runs outside the GIL only inside
the C call; the ctypes glue around it holds the GIL).

Run: ``.venv/bin/python bench/benchmarks/bench_opus.py [--frames 3000]``. Prints a summary and
writes ``bench/benchmarks/results/opus.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from xiaozhi_core.protocol.opus import OpusDecoder, OpusEncoder
from xiaozhi_core.sim.upstream import encode_upstream, synthesize
from xiaozhi_core.testing import tone

RESULTS = Path(__file__).resolve().parent / "results" / "opus.json"


def _speech(seconds: float) -> np.ndarray:
    try:
        pcm = synthesize("What is the weather like today in Shanghai? Tell me, please.")
    except Exception:  # espeak missing: a tone mix is close enough
        pcm = (tone(2.0, freq=220) // 2 + tone(2.0, freq=1330) // 2).astype(np.int16)
    reps = int(np.ceil(seconds * 16000 / len(pcm)))
    return np.tile(pcm, reps)[: int(seconds * 16000)]


def _per_call(fn: Any, items: list[Any]) -> float:
    """Best of three passes, µs per item."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t)
    return best / len(items) * 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000)
    args = ap.parse_args(argv)
    n = args.frames
    speech = encode_upstream(_speech(n * 0.06))[:n]
    dtx = [b"X"] * n
    out: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "frames": n,
        "speech_packet_bytes_mean": round(float(np.mean([len(p) for p in speech])), 1),
    }
    dec = OpusDecoder(16000)
    out["decode_16k_60ms_speech_us"] = round(_per_call(dec.decode, speech), 2)
    out["decode_16k_60ms_dtx_us"] = round(_per_call(dec.decode, dtx), 2)
    import opuslib.api.decoder as raw

    state = raw.create_state(16000, 1)
    # opuslib's own decode path (every sample through a Python int), for comparison
    out["decode_opuslib_api_us"] = round(
        _per_call(lambda p: raw.decode(state, p, len(p), 1920, False, 1), speech), 2
    )
    pcm24 = tone(n * 0.06, 24000, 300).tobytes()
    step = 1440 * 2
    chunks = [pcm24[i : i + step] for i in range(0, len(pcm24) - step + 1, step)]
    enc = OpusEncoder(24000, 60)
    out["encode_24k_60ms_us"] = round(_per_call(enc.encode, chunks), 2)
    enc16 = OpusEncoder(16000, 60, application="voip")
    pcm16 = _speech(n * 0.06).tobytes()
    chunks16 = [pcm16[i : i + 1920] for i in range(0, len(pcm16) - 1919, 1920)]
    out["encode_16k_60ms_voip_us"] = round(_per_call(enc16.encode, chunks16), 2)

    # threads: per-stream decoders, N streams split over 1 or 2 threads
    streams = 100
    per = max(1, n // streams)
    packets = [speech[(i * per) % len(speech) :][:per] for i in range(streams)]
    decoders = [OpusDecoder(16000) for _ in range(streams)]

    def work(idx: list[int]) -> None:
        for i in idx:
            d = decoders[i]
            for p in packets[i]:
                d.decode(p)

    for threads in (1, 2):
        parts = [list(range(t, streams, threads)) for t in range(threads)]
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            t = time.perf_counter()
            list(pool.map(work, parts))
            dt = time.perf_counter() - t
        frames = sum(len(p) for p in packets)
        out[f"decode_threads_{threads}_frames_per_s"] = round(frames / dt)
    out["realtime_streams_per_core_decode"] = round(
        1e6 / out["decode_16k_60ms_speech_us"] / (1000 / 60), 1
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    for k, v in out.items():
        if k != "machine":
            print(f"{k:40s} {v}")
    print(f"wrote {RESULTS}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
