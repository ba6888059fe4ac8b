"""Benchmark of the device store's batched writer on SQLite (WAL, in a temp dir) and
PostgreSQL (a throwaway server started in a temp dir with fsync on, or ``--pg-url``).

Three measurements per backend, with realistic turn events (a 40-character question, a
120-character reply, the per-turn latency record):

* ``record_us``: the cost of one ``turn_recorded`` call on the event loop (it only
  queues), microseconds.
* ``sustained``: the most events per second the writer keeps up with: the producer keeps
  the queue near full for ``--seconds``; events written per second, batch latency, and
  how late a 5 ms sleeper on the producer's loop woke up (the writer runs on a thread of
  its own; what remains is the producer's own work and GIL contention).
* ``fleet``: ``--devices`` devices each finishing a turn every ``--turn-every`` seconds
  (plus session events), with the store off and on (interleaved, ``--repeat`` times):
  the sleeper's lateness p50/p99/max and the process's CPU per second show what
  recording costs at that load.

Run: ``.venv/bin/python bench/benchmarks/bench_store.py [--seconds 10] [--devices 200]``
(needs Debian's postgresql for the PostgreSQL part, or ``--pg-url``, or
``--backends sqlite``). Prints a summary and writes
``bench/benchmarks/results/store.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xiaozhi_core.store import Store, StoreSettings

RESULTS = Path(__file__).resolve().parent / "results" / "store.json"
REPO = Path(__file__).resolve().parents[2]

QUESTION = "What will the weather be like tomorrow?!"  # 40 characters
REPLY = (
    "Tomorrow looks mostly sunny with a high of 24 degrees and a light breeze from the "
    "east; take a jacket for the evening, though."
)[:120]
LATENCY = {
    "turn": 1,
    "kind": "voice",
    "asr_final_ms": 212.4,
    "llm_first_token_ms": 530.1,
    "tts_first_audio_ms": 690.8,
    "first_frame_sent_ms": 702.3,
    "total_ms": 3120.5,
    "error": None,
}


def _turn(store: Store, device: str, n: int) -> None:
    store.turn_recorded(
        session_id=f"s-{device}",
        device_id=device,
        turn=n,
        kind="voice",
        outcome="ok",
        text=QUESTION,
        reply=REPLY,
        latency=LATENCY,
    )


class Sleeper:
    """Sleeps 5 ms at a time on the loop and records how late it wakes (ms)."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            self.late.append((time.perf_counter() - t - 0.005) * 1000)

    def __enter__(self) -> Sleeper:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def summary(self) -> dict[str, float]:
        xs = sorted(self.late)
        return {
            "p50_ms": round(statistics.median(xs), 2),
            "p99_ms": round(xs[int(len(xs) * 0.99)], 2),
            "max_ms": round(xs[-1], 2),
            "samples": len(xs),
        }


async def record_cost(settings: StoreSettings) -> float:
    settings = StoreSettings(
        **{
            **settings.__dict__,
            "queue_bound": 200_000,
            "batch_size": 200_000,
            "flush_interval": 3600,
        }
    )
    async with Store(settings) as store:
        n = 50_000
        t = time.perf_counter()
        for i in range(n):
            _turn(store, "aa:00:00:00:00:00", i)
        cost = (time.perf_counter() - t) / n * 1e6
        await store.flush(300)
        return cost


async def sustained(settings: StoreSettings, seconds: float) -> dict[str, Any]:
    async with Store(settings) as store:
        bound, batch = settings.queue_bound, settings.batch_size
        for i in range(200):  # warm up: connections, statement caches
            _turn(store, f"aa:00:00:00:{i // 256:02x}:{i % 256:02x}", i)
        await store.flush(30)
        stats = store.stats
        written0, batches0, busy0 = stats.written, stats.batches, stats.batch_seconds_total
        max0 = stats.batch_seconds_max = 0.0
        n = 0
        with Sleeper() as sleeper:
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                # small chunks, so the sleeper measures the writer, not this producer
                room = bound - stats.queue_depth - batch
                for _ in range(max(0, min(room, 50))):
                    _turn(store, f"aa:00:00:00:{n % 200 // 256:02x}:{n % 256:02x}", n)
                    n += 1
                await asyncio.sleep(0 if room > 50 else 0.001)
            elapsed = time.perf_counter() - start
        written = stats.written - written0
        batches = stats.batches - batches0
        result = {
            "events_per_s": round(written / elapsed),
            "batches": batches,
            "mean_batch_events": round(written / max(1, batches), 1),
            "mean_batch_ms": round((stats.batch_seconds_total - busy0) / max(1, batches) * 1000, 2),
            "max_batch_ms": round(max(max0, stats.batch_seconds_max) * 1000, 2),
            "dropped": stats.dropped,
            "failed": stats.failed,
            "loop_lateness": sleeper.summary(),
        }
        await store.flush(60)
        return result


async def fleet(
    settings: StoreSettings | None, devices: int, turn_every: float, seconds: float
) -> dict[str, Any]:
    """``devices`` devices, each finishing a turn every ``turn_every`` s (phases spread)."""
    store = Store(settings) if settings is not None else None
    if store is not None:
        await store.open()
    try:
        names = [f"bb:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(devices)]
        if store is not None:
            for name in names:
                store.device_seen(name, board="bread-compact-wifi", firmware="1.6.2")
                store.session_started(f"s-{name}", name, transport="websocket")
            await store.flush(30)
        recorded = 0
        with Sleeper() as sleeper:
            cpu = time.process_time()
            start = time.perf_counter()
            tick = turn_every / devices
            nxt = start
            i = 0
            while time.perf_counter() - start < seconds:
                nxt += tick
                await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
                if store is not None:
                    _turn(store, names[i % devices], i)
                recorded += 1
                i += 1
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
        out: dict[str, Any] = {
            "turns_per_s": round(recorded / elapsed, 1),
            # CPU of this process (all threads) per second of the run
            "cpu_ms_per_s": round(cpu / elapsed * 1000, 1),
            "loop_lateness": sleeper.summary(),
        }
        if store is not None:
            await store.flush(30)
            out.update(
                written=store.stats.written,
                dropped=store.stats.dropped,
                mean_batch_ms=round(
                    store.stats.batch_seconds_total / max(1, store.stats.batches) * 1000, 2
                ),
            )
        return out
    finally:
        if store is not None:
            await store.close()


async def run_backend(
    name: str, settings: StoreSettings, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {"record_us": round(await record_cost(settings), 2)}
    print(f"  {name}: turn_recorded() costs {out['record_us']} us on the loop", flush=True)
    out["sustained"] = {}
    for batch in args.batch_sizes:
        s = StoreSettings(
            **{**settings.__dict__, "batch_size": batch, "queue_bound": max(20_000, batch * 4)}
        )
        r = await sustained(s, args.seconds)
        out["sustained"][str(batch)] = r
        print(
            f"  {name}: sustained {r['events_per_s']} events/s (batch {batch}: mean "
            f"{r['mean_batch_events']} events, {r['mean_batch_ms']} ms); loop lateness p99 "
            f"{r['loop_lateness']['p99_ms']} ms, max {r['loop_lateness']['max_ms']} ms",
            flush=True,
        )
    out["fleet"] = []
    for _ in range(args.repeat):  # store off and on, interleaved
        for label, s in (("no store", None), (name, settings)):
            r = await fleet(s, args.devices, args.turn_every, args.seconds)
            r["store"] = label != "no store"
            out["fleet"].append(r)
            late = r["loop_lateness"]
            print(
                f"  {label}: fleet of {args.devices} ({r['turns_per_s']} turns/s) loop "
                f"lateness p50 {late['p50_ms']} / p99 {late['p99_ms']} / max "
                f"{late['max_ms']} ms; process CPU {r['cpu_ms_per_s']} ms/s",
                flush=True,
            )
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
        },
        "params": dict(vars(args)),
    }
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory() as d:
            results["sqlite"] = await run_backend("sqlite", StoreSettings(data_dir=d), args)
    if "postgresql" in args.backends:
        server = None
        url = args.pg_url
        if not url:
            sys.path.insert(0, str(REPO))
            from tests.store.pgserver import PostgresServer

            server = PostgresServer(fsync=True)
            server.start()
            url = server.create_database("bench")
        try:
            results["postgresql"] = await run_backend("postgresql", StoreSettings(url=url), args)
        finally:
            if server is not None:
                server.destroy()
    results["machine"]["load_after"] = os.getloadavg()
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument(
        "--turn-every",
        type=float,
        default=5.0,
        help="seconds between one device's turns in the fleet phase",
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[500, 100])
    p.add_argument(
        "--repeat", type=int, default=2, help="fleet runs per backend, store off and on interleaved"
    )
    p.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    p.add_argument("--pg-url", default="", help="an existing PostgreSQL database to use")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"result file (default {RESULTS})")
    args = p.parse_args()
    results = asyncio.run(main(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}")
