"""Time the ``resemblyzer`` voiceprint provider: model load, and ``embed`` per utterance length.

Run: ``.venv/bin/python plugins/xiaozhi-voiceprint/benchmarks/bench_embed.py``. Prints the
median (and min/max) wall time of ``embed`` over the committed test utterance, tiled or
cut to 1.5, 3 and 10 seconds, first on one thread, then with two threads embedding
3 s utterances at once (what the core's worker pool does).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from xiaozhi_core.audio import read_wav

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _utterance(seconds: float) -> np.ndarray:
    x = read_wav(DATA / "en-us_1.wav", 16000)
    n = int(seconds * 16000)
    return np.tile(x, n // len(x) + 1)[:n].copy()


def main(repeats: int = 20) -> None:
    from xiaozhi_voiceprint._encoder import _CACHE
    from xiaozhi_voiceprint.plugin import ResemblyzerOptions
    from xiaozhi_voiceprint.voiceprint import ResemblyzerVoiceprint

    _CACHE.clear()
    t0 = time.perf_counter()
    vp = ResemblyzerVoiceprint(ResemblyzerOptions(store_dir=tempfile.mkdtemp()))
    print(f"model load: {1000 * (time.perf_counter() - t0):.0f} ms")
    for seconds in (1.5, 3.0, 10.0):
        pcm = _utterance(seconds)
        vp.embed(pcm)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            vp.embed(pcm)
            times.append(time.perf_counter() - t)
        print(
            f"embed {seconds:4.1f} s: median {1000 * statistics.median(times):6.1f} ms "
            f"(min {1000 * min(times):.1f}, max {1000 * max(times):.1f}) "
            f"= {seconds / statistics.median(times):.0f}x real time"
        )
    pcm = _utterance(3.0)
    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        list(pool.map(vp.embed, [pcm] * (2 * repeats)))
        wall = time.perf_counter() - t
    print(f"2 threads, {2 * repeats} x 3 s: {1000 * wall / (2 * repeats):.1f} ms per utterance")


if __name__ == "__main__":
    main()
