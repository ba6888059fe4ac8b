"""Benchmark of the downstream Opus encoder settings: CPU per 60 ms frame of speech at the
device's rate against an objective quality score, for each complexity 0..10.

The speech is espeak's (the same TTS the offline default deploys), resampled to the
downstream rate (24 kHz by default) like a turn does; each setting encodes it, the result
is decoded and scored with PESQ wideband (ITU-T P.862.2, via the ``pesq`` package) against
the 16 kHz source. CPU is the encoding thread's own time (``time.thread_time``), so the
numbers hold on a shared machine too.

What it shows: at complexity 7..10 libopus codes speech in SILK/hybrid mode (~0.4–0.55 ms
per frame, PESQ-WB ~3.9–4.0); at 6 and below it switches to CELT-only (~0.04–0.1 ms) and
PESQ-WB drops to ~2.4–2.9. ``session.opus_complexity`` picks the trade
(default: libopus's own, 9: quality first).

Run: ``.venv/bin/python bench/benchmarks/bench_opus_encode.py [--rate 24000]``. Writes
``bench/benchmarks/results/opus_encode.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pesq import pesq

from xiaozhi_core.audio import Resampler
from xiaozhi_core.protocol.opus import OpusDecoder, OpusEncoder
from xiaozhi_core.sim.upstream import synthesize

RESULTS = Path(__file__).resolve().parent / "results" / "opus_encode.json"
TEXTS = (
    "Hello! How can I help? The weather today is sunny with a light breeze, and the "
    "temperature will reach twenty degrees.",
    "I set a timer for five minutes. Is there anything else you would like me to do?",
)


def measure(rate: int, complexity: int) -> dict[str, Any]:
    costs, sizes, scores = [], [], []
    for text in TEXTS:
        src = synthesize(text)  # 16 kHz int16
        pcm = Resampler(16000, rate).process(src) if rate != 16000 else src
        enc = OpusEncoder(rate, 60, complexity=complexity)
        t0 = time.thread_time()
        packets = enc.encode(pcm.astype(np.int16).tobytes()) + enc.flush()
        costs.append((time.thread_time() - t0) / len(packets))
        sizes.append(sum(map(len, packets)) / len(packets))
        dec = OpusDecoder(rate)
        out = np.frombuffer(b"".join(dec.decode(p) for p in packets), np.int16)
        out16 = Resampler(rate, 16000).process(out) if rate != 16000 else out
        n = min(len(out16), len(src))
        scores.append(pesq(16000, src[:n].astype(np.float64), out16[:n].astype(np.float64), "wb"))
    return {
        "rate": rate,
        "complexity": complexity,
        "us_per_frame": round(float(np.mean(costs)) * 1e6, 1),
        "bytes_per_frame": round(float(np.mean(sizes)), 1),
        "pesq_wb": round(float(np.mean(scores)), 2),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=24000, help="downstream sample rate")
    args = ap.parse_args(argv)
    rows = []
    for complexity in range(10, -1, -1):
        r = measure(args.rate, complexity)
        rows.append(r)
        print(
            f"complexity {complexity:2d}: {r['us_per_frame']:6.1f} us CPU per 60 ms frame, "
            f"{r['bytes_per_frame']:5.1f} B/frame, PESQ-WB {r['pesq_wb']:.2f}",
            flush=True,
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "runs": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
