"""How much CPU the in-process MP3 decoding of ``edge`` costs, and how long it holds the loop.

Encodes ``--seconds`` of 24 kHz mono test audio (a sine plus noise, or espeak-ng speech
with ``--speech``) to MP3 at Edge's 48 kbit/s, then decodes it with the provider's
:class:`~xiaozhi_edge_tts._mp3.Mp3Decoder` in chunks of several sizes, at both output
rates. Reports CPU milliseconds per second of audio and the longest single ``feed()``
(the longest the event loop is held when a chunk of that size arrives).

Usage::

    .venv/bin/python plugins/xiaozhi-edge-tts/benchmarks/bench_decode.py [--seconds 30] [--speech]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import time

import numpy as np
from xiaozhi_edge_tts._mp3 import Mp3Decoder, encode_mp3

RATE = 24000


def test_audio(seconds: float, speech: bool) -> bytes:
    if speech:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise SystemExit("--speech needs espeak-ng on PATH")
        text = "The quick brown fox jumps over the lazy dog. " * max(1, int(seconds / 3))
        raw = subprocess.run(
            [exe, "--stdout", "-s", "170", text], capture_output=True, check=True
        ).stdout[44:]  # 22050 Hz s16 WAV body
        x = np.frombuffer(raw, "<i2").astype(np.float64)
        t_in = np.arange(len(x)) / 22050
        t_out = np.arange(int(len(x) * RATE / 22050)) / RATE
        return np.interp(t_out, t_in, x).astype("<i2").tobytes()
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * math.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))
    return (x * 32767).astype("<i2").tobytes()


def run(mp3: bytes, rate: int, chunk: int) -> tuple[float, float, float]:
    decoder = Mp3Decoder(rate)
    longest = 0.0
    cpu0 = time.process_time()
    for i in range(0, len(mp3), chunk):
        t0 = time.perf_counter()
        decoder.feed(mp3[i : i + chunk])
        longest = max(longest, time.perf_counter() - t0)
    decoder.flush()
    cpu = time.process_time() - cpu0
    return cpu, longest, decoder.samples_out / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--speech", action="store_true", help="espeak-ng speech, not a tone")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    mp3 = encode_mp3(test_audio(args.seconds, args.speech), RATE)
    audio_s = len(mp3) * 8 / 48000
    print(f"{len(mp3)} bytes of MP3 ({audio_s:.1f} s at 48 kbit/s)")
    print(
        f"{'out Hz':>7} {'chunk B':>8} {'ms CPU / s audio':>17} {'% real time':>12} "
        f"{'longest feed ms':>16}"
    )
    for rate in (24000, 16000):
        for chunk in (144, 1024, 4096, 16384):
            results = [run(mp3, rate, chunk) for _ in range(args.repeat)]
            cpu, longest, seconds = min(results)
            print(
                f"{rate:>7} {chunk:>8} {cpu * 1000 / seconds:>17.2f} "
                f"{cpu / seconds * 100:>11.2f}% {longest * 1000:>16.2f}"
            )


if __name__ == "__main__":
    main()
