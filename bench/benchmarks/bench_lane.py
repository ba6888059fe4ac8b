"""Benchmark of one frame's trip through the audio lane: receive → session queue → hub
(batched Opus decode + VAD) → segmenter, for N sessions streaming in real time.

No sockets and no load generator: each session is a real
:class:`~xiaozhi_core.session.session.Session` of a real server (fake WebSocket object),
and a driver task per session hands it one 60 ms Opus packet every 60 ms (phases spread
evenly) through ``AudioLane.put_audio``, exactly what the receive loop does with a
binary frame once the transport removed its framing. So the numbers are the server's own
cost and latency, without the WebSocket parsing and without a client competing for the CPU.

Measured per configuration (streams × VAD tick × batches in flight):

* lane lag (arrival → VAD result) p50 / p99 / max, from every frame;
* event-loop CPU per frame (``time.thread_time`` of the loop thread) and process CPU per
  frame (all threads: decode and VAD in the pool included);
* hub batches per second, streams per batch, VAD calls per batch.

Run: ``.venv/bin/python bench/benchmarks/bench_lane.py [--seconds 10] [--streams 50,100,150,200]
[--vad silero|fake] [--ticks 10,20] [--inflight 1,2] [--skip-dtx 1,0] [--out FILE]``.
Writes ``bench/benchmarks/results/lane.json`` by default.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from xiaozhi_bench.bench import _cpu_times

from xiaozhi_core.config import load_config
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.registry import default_registry
from xiaozhi_core.session.session import Session
from xiaozhi_core.session.transport import Peer
from xiaozhi_core.sim.upstream import encode_upstream, silence_packets, synthesize

RESULTS = Path(__file__).resolve().parent / "results" / "lane.json"


class _NullTransport:
    """Stands in for the connection: the lane never sends (no turn starts)."""

    kind = "websocket"

    def __init__(self, i: int) -> None:
        self.peer = Peer(f"bench:{i}", "c", "127.0.0.1:0", 1)

    def hello_fields(self) -> dict[str, object]:
        return {}

    def negotiated(self, protocol_version: int) -> None:
        pass

    async def send_json(self, text: str) -> None:
        pass

    async def send_audio(self, packet: bytes, timestamp_ms: int) -> None:
        pass

    async def send_audio_many(self, packets: Sequence[bytes], timestamp_ms: int) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        return
        yield ""


def _packets() -> list[bytes]:
    try:
        speech = synthesize("What is the weather like today in Shanghai? Tell me, please.")
        voiced = encode_upstream(speech)
    except Exception:
        from xiaozhi_core.testing import tone

        voiced = encode_upstream(tone(3.0))
    # speech then DTX silence, like a device between utterances
    return voiced + silence_packets(2.0)


async def _run(
    streams: int,
    tick_ms: int,
    inflight: int,
    seconds: float,
    vad: str,
    packets: list[bytes],
    skip_dtx: bool = True,
) -> dict[str, Any]:
    raw = {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "http_port": 0,
            "limits": {"max_sessions": streams + 8},
        },
        "vad": {"provider": vad},
        "asr": {"provider": "fake"},
        "llm": {"provider": "fake"},
        "tts": {"provider": "fake"},
        "session": {"vad_tick_ms": tick_ms},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lane.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = load_config([str(path)], default_registry(), auto_local=False)
    server = await XiaozhiServer.create(config)
    server.hub.max_inflight = inflight
    server.hub.skip_dtx = skip_dtx
    server.hub.start()
    server.lag_monitor.start()
    lags: list[float] = []
    observe = server.metrics.observe_lane_lag

    def record(values: Any) -> None:
        values = list(values)
        lags.extend(values)
        observe(values)

    server.metrics.observe_lane_lag = record  # type: ignore[method-assign]
    host = await server.make_session_host()
    sessions = [Session(host, _NullTransport(i)) for i in range(streams)]
    for s in sessions:
        s._spawn(s.lane.run(), "lane")
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    frame_s = 0.060
    warmup = 2.0

    async def drive(i: int, s: Session) -> None:
        t0 = start + i * frame_s / streams
        k = i * 7 % len(packets)
        n = 0
        while True:
            due = t0 + n * frame_s
            if due > start + warmup + seconds:
                return
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # what the transport's receive loop does with a binary frame
            await s.lane.put_audio(packets[k % len(packets)])
            k += 1
            n += 1

    async def mark() -> tuple[float, float, int, int, int]:
        await asyncio.sleep(max(0.0, start + warmup - loop.time()))
        lags.clear()
        hub = server.hub
        machine.append(_cpu_times())
        return (
            time.thread_time(),
            time.process_time(),
            hub.batches,
            hub.vad_calls,
            sum(s.frames_processed for s in sessions),
        )

    machine: list[Any] = []
    drivers = [loop.create_task(drive(i, s)) for i, s in enumerate(sessions)]
    marker = loop.create_task(mark())
    await asyncio.gather(*drivers)
    await asyncio.sleep(0.3)  # let the last frames through
    th0, pr0, b0, c0, f0 = marker.result()
    th1, pr1 = time.thread_time(), time.process_time()
    m1 = _cpu_times()
    other = None
    if machine and machine[0] and m1:
        busy = (m1[0] - machine[0][0]) / (m1[2] - machine[0][2]) * (os.cpu_count() or 1)
        other = round(max(0.0, busy - (pr1 - pr0) / (seconds + 0.3)), 2)
    hub = server.hub
    frames = sum(s.frames_processed for s in sessions) - f0
    batches = hub.batches - b0
    lost = sum(s.frames_in - s.frames_processed for s in sessions)
    out = {
        "streams": streams,
        "tick_ms": tick_ms,
        "inflight": inflight,
        "vad": vad,
        "skip_dtx": skip_dtx,
        "vad_windows_skipped_share": round(hub.windows_dtx / max(1, hub.windows_total), 3),
        "seconds": seconds,
        "frames": frames,
        "frames_per_s": round(frames / seconds, 1),
        "lane_lag_ms": {
            q: round(float(np.percentile(lags, p)) * 1000, 2)
            for q, p in (("p50", 50), ("p99", 99), ("max", 100))
        }
        if lags
        else {},
        "loop_cpu_us_per_frame": round((th1 - th0) / max(1, frames) * 1e6, 1),
        "process_cpu_us_per_frame": round((pr1 - pr0) / max(1, frames) * 1e6, 1),
        "process_cpu_cores": round((pr1 - pr0) / seconds, 3),
        "batches_per_s": round(batches / seconds, 1),
        "streams_per_batch": round(frames / max(1, batches), 1),
        "vad_calls_per_batch": round((hub.vad_calls - c0) / max(1, batches), 2),
        "unprocessed_at_end": lost,
        "frames_lost": sum(s.frames_lost for s in sessions),
        "frames_reordered": sum(s.frames_reordered for s in sessions),
        "loop_lag_p99_ms": server.lag_monitor.stats()["p99_ms"],
        # CPU other processes used meanwhile: the numbers only compare when this is ~0
        "other_processes_cores": other,
    }
    for s in sessions:
        await s.close_tasks()
    gc.unfreeze()
    await server.stop()
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--streams", default="50,100,150,200")
    ap.add_argument("--ticks", default="10,20")
    ap.add_argument("--inflight", default="1,2")
    ap.add_argument("--vad", default="silero", choices=("silero", "fake"))
    ap.add_argument(
        "--skip-dtx",
        default="1",
        help="comma-separated 1/0: DTX-only windows skip the VAD (default 1)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="the JSON file to write")
    args = ap.parse_args(argv)
    packets = _packets()
    rows = []
    grid = itertools.product(
        (int(x) for x in args.streams.split(",")),
        (int(x) for x in args.ticks.split(",")),
        (int(x) for x in args.inflight.split(",")),
        (x.strip() == "1" for x in args.skip_dtx.split(",")),
    )
    for n, tick, inflight, skip in grid:
        r = asyncio.run(_run(n, tick, inflight, args.seconds, args.vad, packets, skip))
        rows.append(r)
        print(
            f"{n:4d} streams tick {tick:2d} ms inflight {inflight} skip_dtx {int(skip)}: lag "
            f"{r['lane_lag_ms']}, loop {r['loop_cpu_us_per_frame']} us/frame, "
            f"process {r['process_cpu_us_per_frame']} us/frame "
            f"({r['process_cpu_cores']} cores), {r['streams_per_batch']} streams/"
            f"batch, {r['vad_calls_per_batch']} VAD calls/batch, "
            f"{r['vad_windows_skipped_share']:.0%} windows DTX-skipped, lost "
            f"{r['frames_lost']}, reordered {r['frames_reordered']}; other "
            f"processes {r['other_processes_cores']} cores",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
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
    print(f"wrote {args.out}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
