"""Benchmark of the ``silero`` VAD provider: cost per stream per 512-sample window.

For each batch size, ``speech_probs`` is called repeatedly on one thread (the provider's
ONNX Runtime session uses one intra-op thread) with windows of that many streams; the
time of one call divided by the batch size is the cost of one stream's window. A stream
produces 31.25 windows per second of audio, so ``1e6 / (31.25 * us)`` streams fit in
one core in real time. ``session.run`` alone is timed too, to show the Python overhead
of building the batch (state stacking, context) around it.

Run:  python plugins/xiaozhi-silero/benchmarks/bench_vad.py [--out PATH] [--seconds 0.4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "vad.json"
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WINDOWS_PER_SECOND = 16000 / 512


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time_calls(fn: Any, seconds: float, repeats: int) -> tuple[float, float]:
    """Seconds per call of ``fn``: the best (over ``repeats`` rounds) median, and the
    fastest single call (the cost without interference from other processes)."""
    fn()  # warm-up
    best, fastest = float("inf"), float("inf")
    for _ in range(repeats):
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(samples) < 5:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        best = min(best, statistics.median(samples))
        fastest = min(fastest, *samples)
    return best, fastest


def run(sizes: tuple[int, ...], seconds: float, repeats: int) -> dict[str, Any]:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import numpy as np
    import onnxruntime as ort
    from xiaozhi_silero.vad import CONTEXT, WINDOW, SileroVAD

    vad = SileroVAD()
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        windows = (rng.standard_normal((n, WINDOW)) * 0.1).astype(np.float32)
        # Realistic states: advance every stream a few windows first.
        states = [vad.initial_state() for _ in range(n)]
        for _ in range(3):
            _, states = vad.speech_probs(windows, states)
        feeds = {
            "input": np.concatenate([np.stack([s.context for s in states]), windows], axis=1),
            "state": np.stack([s.rnn for s in states], axis=1),
            "sr": np.array(16000, np.int64),
        }
        assert feeds["input"].shape == (n, CONTEXT + WINDOW)
        call, fastest = _time_calls(
            lambda w=windows, s=states: vad.speech_probs(w, s), seconds, repeats
        )
        ort_call, _ = _time_calls(lambda f=feeds: vad._session.run(None, f), seconds, repeats)
        us = call / n * 1e6
        rows.append(
            {
                "batch": n,
                "us_per_call": round(call * 1e6, 2),
                "us_per_stream_window": round(us, 3),
                "min_us_per_stream_window": round(fastest / n * 1e6, 3),
                "ort_run_us_per_stream_window": round(ort_call / n * 1e6, 3),
                "realtime_streams_per_core": int(1e6 / (us * WINDOWS_PER_SECOND)),
            }
        )
        print_row(rows[-1])
    return {
        "benchmark": "silero VAD speech_probs, one thread",
        "unit": "microseconds per stream per 512-sample window (16 kHz, 32 ms)",
        "method": f"median of calls over {seconds}s, best of {repeats} rounds; min = fastest call",
        "model": str(vad.model_path),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "intra_op_num_threads": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
    }


HEADER = (
    f"{'batch':>5}  {'us/call':>10}  {'us/stream/window':>16}  {'(fastest)':>9}  "
    f"{'ort.run only':>12}  {'streams/core':>12}"
)


def print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['batch']:>5}  {r['us_per_call']:>10.1f}  {r['us_per_stream_window']:>16.2f}  "
        f"{r['min_us_per_stream_window']:>9.2f}  {r['ort_run_us_per_stream_window']:>12.2f}  "
        f"{r['realtime_streams_per_core']:>12}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON ({DEFAULT_OUT})")
    parser.add_argument(
        "--sizes",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=SIZES,
        help="comma-separated batch sizes",
    )
    parser.add_argument("--seconds", type=float, default=0.4, help="timing per size and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size (best kept)")
    args = parser.parse_args(argv)
    print(HEADER)
    report = run(args.sizes, args.seconds, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
