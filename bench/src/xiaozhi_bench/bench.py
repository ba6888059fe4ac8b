"""``xiaozhi bench``: a load generator that measures a server from the outside.

Simulated devices (:class:`~xiaozhi_core.device.FakeDevice` + a real-time
:class:`~xiaozhi_core.sim.driver.Mic`) run in ``--procs`` separate processes
(multiprocessing, spawn). The utterance is encoded **once** in the parent (Opus 16 kHz,
60 ms, DTX on, like the firmware), in four variants shifted by 0/15/30/45 ms of leading
silence, and the packets are shipped to the workers, so a device costs a timer and a
``send`` per frame. The server is either started by the
bench in its own process (``-c`` configs, or by default the fake providers with fixed,
known delays and the silero VAD), one fresh server per phase, or an existing one
(``--url`` and ``--metrics``).

Phases (``--phases``, default all):

* **ingest**: ``--devices`` devices connect over ``--ramp`` seconds, then all stream
  real-time audio for ``--duration`` seconds; each speaks, waits for the whole reply
  (``tts stop``), pauses ``--gap`` and speaks again. Server side, from ``/metrics``
  scraped at the start and end of the steady window: frames per second through the
  lanes, lane lag (arrival → VAD result) p50/p99/max, loop lag p99, frames lost and
  reordered (must be 0; also checked against the frames the devices sent), server CPU
  per stream and RSS per connection. Turns: end of speech → first audio frame at the
  device (p50/p95, client side, including the server's end-of-utterance silence) and,
  server side, end-of-speech decision → first frame sent, split into provider time
  and the server's own overhead. *End of speech* is the true end of voice, not a
  packet boundary: each turn speaks a variant picked at random, and its end of speech
  is the send time of the packet holding the last voiced sample (10 ms envelope over
  2% of full scale) minus the audio after that sample in the packet (a device sends a
  packet once its 60 ms are captured). With a single alignment every TTFA fell on one
  of two values ~52 ms apart (the 60 ms packets against the server's 32 ms VAD
  windows), and a p50 over them was meaningless.
* **idle**: ``--idle`` devices connect, say hello and stay silent: RSS per idle
  connection (the file-descriptor limit is raised as far as allowed).
* **churn**: ``--churn`` connect → hello → disconnect cycles (half dropped TCP like the
  firmware, half closed cleanly): cycles per second, and the server's asyncio tasks,
  OS threads, open fds and RSS after the cycles compared with before.

Results print as a table and go to ``--json``; ``xiaozhi bench --compare A.json B.json``
diffs two runs. Correctness (no lost/reordered frames, every turn completed, nothing
leaked) is reported as ``ok``/``FAIL``; speed is only reported against the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from xiaozhi_core.command import Command
from xiaozhi_core.errors import XiaozhiError

__all__ = [
    "BenchOptions",
    "checks",
    "compare",
    "first_audio_by_turn",
    "frames_outside_speaking",
    "print_report",
    "run_bench",
]

TARGETS = {
    "lane_lag_p99_ms": 50.0,
    "server_overhead_p95_ms": 30.0,
    "idle_rss_kb_per_connection": 200.0,
}
DEFAULT_TEXT = "What is the weather like today?"
DEFAULT_REPLY = "Hello! How can I help?"


@dataclass
class BenchOptions:
    configs: list[str] = field(default_factory=list)
    url: str | None = None
    metrics_url: str | None = None
    vad: str = "silero"
    delays_ms: tuple[float, float, float] = (50.0, 100.0, 50.0)
    vad_tick_ms: int | None = None
    silence_ms: int | None = None
    #: Default config's device store: "off", "sqlite" (a file in a temp dir) or a URL.
    store: str = "off"
    phases: tuple[str, ...] = ("ingest", "idle", "churn")
    devices: int = 20
    procs: int = 1
    ramp: float = 5.0
    duration: float = 30.0
    mode: str = "realtime"
    protocol_version: str = "1"
    wav: str | None = None
    text: str = DEFAULT_TEXT
    lead: float = 0.5
    gap: float = 1.0
    turn_timeout: float = 20.0
    idle: int = 200
    churn: int = 1000
    churn_concurrency: int = 8
    client_nice: int = 10
    json_path: str | None = None
    profile_server: str | None = None
    #: ``wall`` (cProfile's default: waits count) or ``cpu`` (the loop thread's CPU time).
    profile_clock: str = "wall"
    #: Run the server as ``xiaozhi serve --workers N`` (its own process tree) instead of
    #: in a bench-owned process; None: the bench-owned server.
    workers: int | None = None
    quiet: bool = False


# ============================================================================ helpers
def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = q * (len(data) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def _raise_nofile() -> int:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, ValueError, OSError):
        return -1


def _device_id(prefix: int, index: int) -> str:
    return (
        f"b{prefix:01x}:00:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:"
        f"{index & 0xFF:02x}:00"
    )


def _versions(spec: str, n: int) -> list[int]:
    if spec == "mix":
        return [1 + i % 3 for i in range(n)]
    return [int(spec)] * n


# ============================================================================ server process
def _default_config(o: BenchOptions) -> dict[str, Any]:
    asr, llm, tts = (d / 1000 for d in o.delays_ms)
    return {
        "server": {"host": "127.0.0.1", "port": 0, "http_port": 0},
        "vad": {"provider": o.vad},
        "asr": {
            "provider": "fake_io",
            "options": {"text": "what is the weather like today", "delay": asr},
        },
        "llm": {
            "provider": "fake_io",
            "options": {"reply": DEFAULT_REPLY, "first_token_delay": llm},
        },
        "tts": {"provider": "fake_io", "options": {"first_chunk_delay": tts}},
        "session": {
            "greeting": "",
            "server_tools": [],
            **({"vad_tick_ms": o.vad_tick_ms} if o.vad_tick_ms else {}),
            **({"silence_ms": o.silence_ms} if o.silence_ms else {}),
        },
        "store": _store_section(o.store),
    }


def _store_section(store: str) -> dict[str, Any]:
    """``--store``: off, ``sqlite`` (a fresh file in a temp dir) or a database URL.

    >>> _store_section("off")
    {'enabled': False}
    >>> _store_section("postgresql://u:p@h/db")
    {'url': 'postgresql://u:p@h/db'}
    """
    if store == "off":
        return {"enabled": False}
    if store == "sqlite":
        return {"data_dir": tempfile.mkdtemp(prefix="xiaozhi-bench-store-")}
    return {"url": store}


def _server_main(
    files: list[str], max_sessions: int, profile: str | None, conn: Any, profile_clock: str = "wall"
) -> None:
    """Child process: run a server until the parent sends anything on ``conn``."""
    _raise_nofile()
    try:
        asyncio.run(_server_async(files, max_sessions, profile, conn, profile_clock))
    except BaseException as exc:  # report start-up failures to the parent
        try:
            conn.send({"error": f"{type(exc).__name__}: {exc}"})
        except Exception:
            pass
        raise


async def _server_async(
    files: list[str], max_sessions: int, profile: str | None, conn: Any, profile_clock: str = "wall"
) -> None:
    import xiaozhi_core.gateway.run as run
    from xiaozhi_core.config import load_config
    from xiaozhi_core.gateway import XiaozhiServer
    from xiaozhi_core.registry import default_registry

    # None: an older core under test (A/B runs), which had no GC settling
    settle_gc = getattr(run, "settle_gc", None)

    config = load_config(files, default_registry(), auto_local=False)
    s = config.server
    s.host, s.port, s.http_port, s.public_ws_url = "127.0.0.1", 0, 0, ""
    s.auth.enabled = False
    lim = s.limits
    lim.max_sessions = max(lim.max_sessions, max_sessions)
    # Every simulated device comes from 127.0.0.1: the per-address budgets that keep one
    # abusive address from starving a real server would refuse the bench's own devices.
    lim.max_pending_handshakes = max(lim.max_pending_handshakes, max_sessions)
    lim.max_pending_per_peer = max(lim.max_pending_per_peer, max_sessions)
    lim.max_connections_per_peer = max(lim.max_connections_per_peer, max_sessions)
    server = await XiaozhiServer.create(config)
    await server.start()
    if settle_gc is not None:
        settle_gc()  # as 'xiaozhi serve' does once it is up
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile(time.thread_time) if profile_clock == "cpu" else cProfile.Profile()
        prof.enable()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(conn.fileno(), stop.set)
    conn.send(
        {
            "ws_url": server.ws_url,
            "metrics": f"http://127.0.0.1:{server.http_port}/metrics",
            "pid": os.getpid(),
            "providers": {str(r): b.name for r, b in server.providers.items()},
        }
    )
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        if prof is not None and profile:
            prof.disable()
            prof.dump_stats(profile)
        await server.stop()


class _Server:
    """A bench-owned server in a spawned process."""

    def __init__(
        self,
        files: list[str],
        max_sessions: int,
        profile: str | None = None,
        profile_clock: str = "wall",
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_server_main,
            args=(files, max_sessions, profile, child, profile_clock),
            name="xiaozhi-bench-server",
            daemon=True,
        )
        self.proc.start()
        if not self._conn.poll(120):
            self.stop()
            raise XiaozhiError("the bench server did not start within 120 s")
        info = self._conn.recv()
        if "error" in info:
            self.proc.join(5)
            raise XiaozhiError(f"the bench server failed to start: {info['error']}")
        self.ws_url: str = info["ws_url"]
        self.metrics_url: str = info["metrics"]
        self.providers: dict[str, str] = info["providers"]

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self._conn.send("stop")
            except OSError:
                pass
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)


def _serve_overlay(max_sessions: int, workers: int) -> dict[str, Any]:
    """The bench's changes to any config when it runs ``xiaozhi serve``: loopback, free
    ports, no auth, the worker count, and the per-address budgets raised to the device
    count (every simulated device comes from 127.0.0.1).

    >>> _serve_overlay(100, 2)["server"]["workers"]
    2
    """
    return {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "http_port": 0,
            "public_ws_url": "",
            "workers": workers,
            "auth": {"enabled": False},
            "limits": {
                "max_sessions": max_sessions,
                "max_pending_handshakes": max_sessions,
                "max_pending_per_peer": max_sessions,
                "max_connections_per_peer": max_sessions,
            },
        }
    }


class _ServeProcess:
    """``xiaozhi serve --workers N`` started by the bench (``--workers``): the real
    supervisor and worker processes. ``/metrics`` is then the workers' merged one, so
    ``process_cpu_seconds_total`` is the CPU of every worker together."""

    def __init__(self, files: list[str], max_sessions: int, workers: int, tmp: str) -> None:
        import subprocess

        import yaml

        overlay = Path(tmp) / f"serve-overlay-{os.getpid()}-{time.monotonic_ns()}.yaml"
        overlay.write_text(yaml.safe_dump(_serve_overlay(max_sessions, workers)))
        cmd = [sys.executable, "-m", "xiaozhi_core", "serve", "--no-local"]
        for f in [*files, str(overlay)]:
            cmd += ["-c", f]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.ws_url = self.metrics_url = ""
        self.providers: dict[str, str] = {}
        self.pids: list[int] = []
        deadline = time.time() + 180
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("WebSocket URL"):
                self.ws_url = line.split(": ", 1)[1]
            elif line.startswith("Health:"):
                self.metrics_url = line.split("Metrics: ", 1)[1].strip()
            elif line.startswith("Workers:"):
                self.pids = [int(x) for x in line.split("pids ")[1].split(";")[0].split(", ")]
            elif (
                ": " in line
                and line.endswith(")")
                and line.startswith(("vad", "asr", "llm", "tts"))
            ):
                role, rest = line.split(": ", 1)
                self.providers[role] = rest.split(" (")[0]
            if self.ws_url and self.metrics_url and len(self.providers) >= 4:
                break  # the last lines it prints: one per provider
            if time.time() > deadline:
                break
        if not (self.ws_url and self.metrics_url):
            self.stop()
            raise XiaozhiError(f"xiaozhi serve --workers {workers} did not start: {cmd}")
        if workers == 1:
            self.pids = [self.proc.pid]
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if _scrape(self.metrics_url) is not None:
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise XiaozhiError("xiaozhi serve: /metrics did not answer within 60 s")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ============================================================================ workers
@dataclass
class _Job:
    kind: str  # "ingest" | "idle" | "churn"
    url: str
    worker: int
    indexes: list[int]
    offsets: list[float]
    versions: list[int]
    mode: str = "realtime"
    #: The utterance's variants as (packets, voice_end, voice_tail_s), see
    #: :func:`xiaozhi_core.sim.upstream.shifted_utterances`; each turn picks one.
    variants: list[tuple[list[bytes], int, float]] = field(default_factory=list)
    filler: list[bytes] = field(default_factory=list)
    lead: float = 0.5
    gap: float = 1.0
    turn_timeout: float = 20.0
    run_for: float = 0.0  # seconds after t0: no new turn after this
    cycles: int = 0
    concurrency: int = 8
    #: Lower the worker's CPU priority by this much (the load generator shares the
    #: machine with the server it measures; under contention the server goes first).
    nice: int = 0


def _worker_main(job: _Job, t0: Any, go: Any, release: Any, results: Any) -> None:
    """Child process: announce readiness, wait for ``go`` (``t0`` = start, wall clock),
    run the job and put its result on ``results``."""
    _raise_nofile()
    if job.nice:
        try:
            os.nice(job.nice)
        except OSError:
            pass
    results.put(("ready", job.worker, None))
    go.wait()
    try:
        out = asyncio.run(_worker_async(job, float(t0.value), release, results))
    except BaseException as exc:
        out = {"fatal": f"{type(exc).__name__}: {exc}"}
    cpu = os.times()
    out["cpu_seconds"] = round(cpu.user + cpu.system, 3)
    results.put(("done", job.worker, out))


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _worker_async(job: _Job, t0: float, release: Any, results: Any) -> dict[str, Any]:
    if job.kind == "ingest":
        lags: list[float] = []
        stop_at = t0 + job.run_for
        devs = await asyncio.gather(
            *(
                _ingest_device(job, i, t0, t0 + off, stop_at, v, lags)
                for i, off, v in zip(job.indexes, job.offsets, job.versions, strict=True)
            )
        )
        return {
            "devices": devs,
            "send_lag_ms": {
                "p50": _ms(_pct(lags, 0.5)),
                "p99": _ms(_pct(lags, 0.99)),
                "max": _ms(max(lags) if lags else None),
                "n": len(lags),
            },
        }
    if job.kind == "idle":
        return await _idle_worker(job, release, results)
    return await _churn_worker(job, t0)


async def _wait_tts(dev: Any, states: tuple[str, ...], after: int, limit: float) -> bool:
    try:
        async with asyncio.timeout(limit):
            while True:
                for r in dev.received[after:]:
                    m = r.message
                    if m is not None and m.get("type") == "tts" and m.get("state") in states:
                        return True
                if dev.closed_code is not None:
                    return False
                dev._new.clear()
                await dev._new.wait()
    except TimeoutError:
        return False


async def _ingest_device(
    job: _Job, index: int, t0: float, start: float, stop_at: float, version: int, lags: list[float]
) -> dict[str, Any]:
    from xiaozhi_core.device import FakeDevice
    from xiaozhi_core.sim.driver import Mic, turn_record

    # Identical devices with identical pauses fall into step (a slow moment delays all
    # of them alike) and then speak in bursts; real users do not: jitter each pause.
    rng = random.Random(index)
    stats: dict[str, Any] = {
        "index": index,
        "version": version,
        "frames_sent": 0,
        "turns": [],
        "error": None,
    }
    await _sleep_until(start)
    dev = FakeDevice(
        job.url,
        device_id=_device_id(1, index),
        protocol_version=version,
        features={"aec": job.mode == "realtime", "mcp": False},
    )
    try:
        await dev.connect()
    except Exception as exc:
        stats["error"] = f"connect: {type(exc).__name__}: {exc}"
        return stats
    mic = Mic(dev, None if job.mode == "manual" else job.filler)
    mic.start()
    mic.pause()
    try:
        if job.mode != "manual":
            await dev.listen("start", job.mode)
            mic.resume()
        # Jittered like the gaps: the server segments in 512-sample windows, 60 ms packets
        # cross that grid with a period of 8 packets, and where an utterance falls on the
        # grid moves its end-of-speech decision by up to ~60 ms. A fixed lead gave every
        # device's first turn the same alignment (a first-turn "penalty" or "bonus" of
        # up to 60 ms that was only that), while later turns spread over all of them.
        pause = job.lead * rng.uniform(0.5, 1.5)
        while time.time() < stop_at and dev.closed_code is None:
            mark = len(dev.received)
            # Real speech ends anywhere within a packet: pick where, and count from the
            # true end of voice (the packet holding it is sent once fully captured).
            speech, voice_end, voice_tail_s = rng.choice(job.variants)
            if job.mode == "manual":
                await asyncio.sleep(pause)
                await dev.listen("start", "manual")
                await mic.say(speech)
                await dev.listen("stop")
                eos = time.monotonic()
            else:
                await asyncio.sleep(pause)
                eos = await mic.say(speech, voice_end) - voice_tail_s
            error = None
            if not await _wait_tts(dev, ("start", "stop"), mark, job.turn_timeout):
                error = "no tts start"
            else:
                if job.mode == "auto":
                    mic.pause()
                if not await _wait_tts(dev, ("stop",), mark, job.turn_timeout):
                    error = "no tts stop"
            rec = turn_record(dev.received[mark:], eos)
            rec.audio = []
            turn = {
                "at_s": round(time.time() - t0, 3),
                "stt_ms": rec.stt_ms,
                "first_audio_ms": rec.first_audio_ms,
                "tts_stop_ms": rec.tts_stop_ms,
                "frames": rec.frames,
                "frames_after_stop": rec.frames_after_stop,
                "stt": rec.stt is not None,
                "alerts": len(rec.alerts),
                "error": error,
            }
            stats["turns"].append(turn)
            if error is not None:
                await dev.abort()  # get the server back to a known state
                await _wait_tts(dev, ("stop",), len(dev.received), 5.0)
            if job.mode == "auto":
                await dev.listen("start", "auto")
                mic.resume()
            pause = job.gap * rng.uniform(0.5, 1.5)
    except Exception as exc:
        stats["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await mic.stop()
        await asyncio.sleep(0.5)  # let the server's lane drain
        stats["frames_sent"] = mic.frames_sent
        stats["frames_outside_speaking"] = frames_outside_speaking(dev.received)
        stats["closed_by_server"] = dev.closed_code
        lags.extend(mic.send_lags)
        await dev.drop()
    return stats


def frames_outside_speaking(received: list[Any]) -> int:
    """Audio frames that arrived while the device was not Speaking (before the first
    ``tts start`` or after a ``tts stop``): the firmware would drop them; must be 0."""
    speaking, n = False, 0
    for r in received:
        if r.audio is not None:
            n += not speaking
        elif r.message is not None and r.message.get("type") == "tts":
            state = r.message.get("state")
            if state == "start":
                speaking = True
            elif state == "stop":
                speaking = False
    return n


async def _idle_worker(job: _Job, release: Any, results: Any) -> dict[str, Any]:
    from xiaozhi_core.device import FakeDevice

    devices: list[Any] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(32)

    async def one(i: int, v: int) -> None:
        async with sem:
            dev = FakeDevice(job.url, device_id=_device_id(2, i), protocol_version=v)
            try:
                await dev.connect()
                devices.append(dev)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i, v) for i, v in zip(job.indexes, job.versions, strict=True)))
    results.put(
        (
            "connected",
            job.worker,
            {"connected": len(devices), "errors": errors[:5], "failed": len(errors)},
        )
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, release.wait)
    closed_early = sum(1 for d in devices if d.closed_code is not None)
    await asyncio.gather(*(d.drop() for d in devices))
    return {
        "connected": len(devices),
        "failed": len(errors),
        "errors": errors[:5],
        "closed_by_server": closed_early,
    }


async def _churn_worker(job: _Job, t0: float) -> dict[str, Any]:
    from xiaozhi_core.device import FakeDevice

    await _sleep_until(t0)
    remaining = job.cycles
    done = 0
    errors: list[str] = []
    hello_ms: list[float] = []
    started = time.monotonic()

    async def loop_(k: int) -> None:
        nonlocal remaining, done
        n = 0
        while remaining > 0:
            remaining -= 1
            n += 1
            dev = FakeDevice(
                job.url,
                device_id=_device_id(3, job.worker * 1000 + k),
                protocol_version=job.versions[0],
            )
            t = time.monotonic()
            try:
                await dev.connect()
                hello_ms.append((time.monotonic() - t) * 1000)
                if n % 2:
                    await dev.drop()  # the firmware's way: TCP gone, no close
                else:
                    await dev.close()  # a browser's way: close handshake
                done += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await dev.drop()

    await asyncio.gather(*(loop_(k) for k in range(job.concurrency)))
    elapsed = time.monotonic() - started
    return {
        "cycles": done,
        "failed": len(errors),
        "errors": errors[:5],
        "seconds": round(elapsed, 3),
        "hello_ms": {"p50": _r(_pct(hello_ms, 0.5), 2), "p99": _r(_pct(hello_ms, 0.99), 2)},
    }


class _Workers:
    """``n`` spawned worker processes running ``jobs``, started together."""

    def __init__(self, jobs: list[_Job]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.go = ctx.Event()
        self.release = ctx.Event()
        self.t0 = ctx.Value("d", 0.0)
        self.procs = [
            ctx.Process(
                target=_worker_main,
                args=(job, self.t0, self.go, self.release, self.results),
                name=f"xiaozhi-bench-{job.kind}-{job.worker}",
                daemon=True,
            )
            for job in jobs
        ]
        self.out: dict[int, dict[str, Any]] = {}
        self.events: list[tuple[str, int, Any]] = []
        for p in self.procs:
            p.start()
        self.wait_for("ready", len(jobs), 120)

    def wait_for(self, kind: str, n: int, timeout: float) -> list[Any]:
        got = [e for e in self.events if e[0] == kind]
        deadline = time.time() + timeout
        while len(got) < n:
            left = deadline - time.time()
            if left <= 0:
                raise XiaozhiError(
                    f"bench workers: only {len(got)} of {n} reported '{kind}' within {timeout:g} s"
                )
            try:
                event = self.results.get(timeout=min(left, 1.0))
            except Exception:
                if not any(p.is_alive() for p in self.procs) and kind != "done":
                    raise XiaozhiError("bench workers died (see their stderr)") from None
                continue
            self.events.append(event)
            if event[0] == "done":
                self.out[event[1]] = event[2]
            if event[0] == kind:
                got.append(event)
        return [e[2] for e in got]

    def start(self, delay: float = 0.3) -> float:
        t0 = time.time() + delay
        self.t0.value = t0
        self.go.set()
        return t0

    def join(self, timeout: float) -> list[dict[str, Any]]:
        self.wait_for("done", len(self.procs), timeout)
        for p in self.procs:
            p.join(10)
        return [self.out[i] for i in sorted(self.out)]

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()


def _split(items: list[int], parts: int) -> list[list[int]]:
    return [items[i::parts] for i in range(parts)]


# ============================================================================ orchestration
class _Target:
    """Where the phases run: a fresh bench-owned server per phase, or ``--url``."""

    def __init__(self, o: BenchOptions, files: list[str], tmp: str = "") -> None:
        self.o = o
        self.files = files
        self.tmp = tmp or tempfile.gettempdir()
        self.server: _Server | _ServeProcess | None = None
        self.providers: dict[str, str] = {}
        #: The server's process ids (``--workers``: the workers').
        self.pids: list[int] = []

    def start(self, max_sessions: int, profile: str | None = None) -> tuple[str, str | None]:
        if self.o.url:
            return self.o.url, self.o.metrics_url
        if self.o.workers is not None:
            serve = _ServeProcess(self.files, max_sessions, self.o.workers, self.tmp)
            self.server, self.providers, self.pids = serve, serve.providers, serve.pids
            return serve.ws_url, serve.metrics_url
        self.server = _Server(self.files, max_sessions, profile, self.o.profile_clock)
        self.providers = self.server.providers
        return self.server.ws_url, self.server.metrics_url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _scrape(url: str | None) -> Any:
    if not url:
        return None
    from .promtext import scrape

    return scrape(url)


def _wait_drained(metrics: str | None, limit: float = 30.0) -> Any:
    """Scrape until the server has no session left (or ``limit``); return that scrape."""
    deadline = time.time() + limit
    while True:
        s = _scrape(metrics)
        if s is None or s.get("xiaozhi_sessions_active") == 0 or time.time() > deadline:
            return s
        time.sleep(0.2)


def _cpu_times() -> tuple[float, float, float] | None:
    """(busy, steal, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            parts = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    steal = parts[7] if len(parts) > 7 else 0.0
    return sum(parts[:8]) - idle, steal, sum(parts[:8])


def _machine_load(
    a: tuple[float, float, float] | None,
    b: tuple[float, float, float] | None,
    server_cores: float,
    client_cores: float,
) -> dict[str, float] | None:
    """Cores busy on the whole machine between two :func:`_cpu_times`, and the part of
    it not used by the bench (other processes: the numbers are only comparable when
    this is near 0)."""
    if a is None or b is None or b[2] <= a[2]:
        return None
    cpus = os.cpu_count() or 1
    busy = (b[0] - a[0]) / (b[2] - a[2]) * cpus
    return {
        "cores_busy": round(busy, 2),
        "steal_cores": round((b[1] - a[1]) / (b[2] - a[2]) * cpus, 2),
        "other_processes_cores": round(max(0.0, busy - server_cores - client_cores), 2),
    }


def _process_state(s: Any) -> dict[str, float] | None:
    if s is None:
        return None
    return {
        "asyncio_tasks": s.get("xiaozhi_runtime", stat="asyncio_tasks"),
        "threads": s.get("xiaozhi_runtime", stat="threads"),
        "open_fds": s.get("process_open_fds"),
        "rss_mb": round(s.get("process_resident_memory_bytes") / 2**20, 2),
        "sessions": s.get("xiaozhi_sessions_active"),
    }


def _say(o: BenchOptions, text: str) -> None:
    if not o.quiet:
        print(text, file=sys.stderr, flush=True)


def _prepare_audio(o: BenchOptions) -> tuple[list[Any], list[bytes]]:
    """The utterance's shifted variants (:func:`~xiaozhi_core.sim.upstream.shifted_utterances`)
    and the DTX filler."""
    from xiaozhi_core.sim.upstream import load_wav, shifted_utterances, silence_packets, synthesize

    if o.wav:
        pcm = load_wav(o.wav)
    else:
        try:
            pcm = synthesize(o.text)
        except XiaozhiError:
            if o.vad == "silero" and not o.configs:
                raise
            import numpy as np

            from xiaozhi_core.testing import tone

            pcm = np.concatenate([tone(1.2), np.zeros(8000, np.int16)])
    return shifted_utterances(pcm), silence_packets()


def _phase_ingest(
    o: BenchOptions, target: _Target, variants: list[Any], filler: list[bytes]
) -> dict[str, Any]:
    n = o.devices
    ws_url, metrics = target.start(n + 16, o.profile_server)
    try:
        procs = max(1, min(o.procs, n))
        indexes = list(range(n))
        versions = _versions(o.protocol_version, n)
        offsets = [i * o.ramp / n for i in indexes]
        settle = 1.0  # after the ramp, before the steady window
        jobs = []
        for w, part in enumerate(_split(indexes, procs)):
            jobs.append(
                _Job(
                    "ingest",
                    ws_url,
                    w,
                    part,
                    [offsets[i] for i in part],
                    [versions[i] for i in part],
                    mode=o.mode,
                    variants=[(u.packets, u.voice_end, u.voice_tail_s) for u in variants],
                    filler=filler,
                    lead=o.lead,
                    gap=o.gap,
                    turn_timeout=o.turn_timeout,
                    run_for=o.ramp + settle + o.duration,
                    nice=o.client_nice,
                )
            )
        m0 = _scrape(metrics)
        workers = _Workers(jobs)
        try:
            t0 = workers.start(0.5)
            steady_start = t0 + o.ramp + settle
            steady_end = steady_start + o.duration
            time.sleep(max(0.0, steady_start - time.time()))
            ma, ca = _scrape(metrics), _cpu_times()
            time.sleep(max(0.0, steady_end - time.time()))
            mb, cb = _scrape(metrics), _cpu_times()
            outs = workers.join(o.turn_timeout * 3 + 60)
        finally:
            workers.kill()
        mc = _wait_drained(metrics, 10)
    finally:
        target.stop()
    rep = _ingest_report(o, outs, m0, ma, mb, mc)
    server_cores = rep.get("ingest", {}).get("server_cpu_cores", 0.0)
    client_cores = rep["client"]["cpu_seconds"] / max(1.0, o.ramp + 1.0 + o.duration)
    rep["machine_load"] = _machine_load(ca, cb, server_cores, client_cores)
    return rep


def _ingest_report(
    o: BenchOptions, outs: list[dict[str, Any]], m0: Any, ma: Any, mb: Any, mc: Any
) -> dict[str, Any]:
    devices = [d for out in outs for d in out.get("devices", [])]
    fatal = [out["fatal"] for out in outs if "fatal" in out]
    turns = [t for d in devices for t in d["turns"]]
    completed = [t for t in turns if t["error"] is None and t["tts_stop_ms"] is not None]
    sent = sum(d["frames_sent"] for d in devices)
    errors = [d["error"] for d in devices if d["error"]]
    rep: dict[str, Any] = {
        "devices": o.devices,
        "connected": sum(1 for d in devices if not (d["error"] or "").startswith("connect")),
        "duration_s": o.duration,
        "mode": o.mode,
        "protocol_version": o.protocol_version,
        "device_errors": errors[:10],
        "device_error_count": len(errors),
        "fatal": fatal,
        "client": {
            "frames_sent": sent,
            "send_lag_ms": [out.get("send_lag_ms") for out in outs],
            "cpu_seconds": sum(out.get("cpu_seconds", 0) for out in outs),
        },
    }
    firsts = [t["first_audio_ms"] for t in completed if t["first_audio_ms"] is not None]
    steady_from = o.ramp + 1.0
    rep["turns"] = {
        "started": len(turns),
        "completed": len(completed),
        "failed": len(turns) - len(completed),
        "with_alert": sum(1 for t in turns if t["alerts"]),
        "frames_after_tts_stop": sum(d.get("frames_outside_speaking", 0) for d in devices),
        "client_ms": {
            "eos_to_stt": {
                "p50": _r(_pct([t["stt_ms"] for t in completed if t["stt_ms"] is not None], 0.5)),
                "p95": _r(_pct([t["stt_ms"] for t in completed if t["stt_ms"] is not None], 0.95)),
            },
            "eos_to_first_audio": {"p50": _r(_pct(firsts, 0.5)), "p95": _r(_pct(firsts, 0.95))},
            "eos_to_tts_stop": {
                "p50": _r(_pct([t["tts_stop_ms"] for t in completed], 0.5)),
                "p95": _r(_pct([t["tts_stop_ms"] for t in completed], 0.95)),
            },
        },
        "note": "client times count from the true end of voice (the send time of the packet "
        "holding the last voiced sample minus the audio after it; the utterance starts at "
        "a random 0/15/30/45 ms offset so it ends anywhere in a packet), so they include "
        "the server's end-of-utterance silence (VAD min silence)",
        "first_audio_by_turn": first_audio_by_turn([d["turns"] for d in devices], steady_from),
        # every turn as [device, index in its session, end of speech (s after the start),
        # first audio ms or None]: for plotting latency against time and turn index
        "samples": [
            [d["index"], i, t.get("at_s"), t["first_audio_ms"] if t["error"] is None else None]
            for d in devices
            for i, t in enumerate(d["turns"], 1)
        ],
    }
    if m0 is None or mc is None:
        return rep
    total = mc - m0
    frames_in = total.get("xiaozhi_audio_frames_in_total")
    processed = total.get("xiaozhi_audio_frames_processed_total")
    rep["frames"] = {
        "sent_by_devices": sent,
        "received": int(frames_in),
        "processed": int(processed),
        "lost": int(total.get("xiaozhi_audio_frames_lost_total") + frames_in - processed),
        "reordered": int(total.get("xiaozhi_audio_frames_reordered_total")),
        "missing_in_transit": int(sent - frames_in),
        "backpressure_events": int(total.get("xiaozhi_audio_lane_backpressure_total")),
        "frame_errors": int(
            sum(v for (name, _), v in total.values.items() if name == "xiaozhi_frame_errors_total")
        ),
    }
    steady = mb - ma
    secs = max(1e-9, mb.at - ma.at)
    lane = "xiaozhi_audio_lane_lag_seconds"
    cpu = steady.get("process_cpu_seconds_total")
    streams = max(1, o.devices)
    rep["ingest"] = {
        "steady_seconds": round(secs, 2),
        "frames_per_s": round(steady.get("xiaozhi_audio_frames_processed_total") / secs, 1),
        "lane_lag_ms": {
            "p50": _ms(steady.quantile(lane, 0.5)),
            "p99": _ms(steady.quantile(lane, 0.99)),
            "max_since_start": _ms(mc.get("xiaozhi_audio_lane_lag_max_seconds")),
            "share_le_50ms": steady.share_le(lane, 0.05),
        },
        "loop_lag_ms": {
            "p50": _ms(mb.get("xiaozhi_loop_lag_seconds", stat="p50")),
            "p99": _ms(mb.get("xiaozhi_loop_lag_seconds", stat="p99")),
            "max_since_start": _ms(mb.get("xiaozhi_loop_lag_seconds", stat="max")),
        },
        "server_cpu_cores": round(cpu / secs, 3),
        "cpu_percent_per_stream": round(100 * cpu / secs / streams, 3),
        "rss_mb_before": round(m0.get("process_resident_memory_bytes") / 2**20, 1),
        "rss_mb_streaming": round(ma.get("process_resident_memory_bytes") / 2**20, 1),
        # at the start of the steady window: every device connected and streaming, few
        # turns done yet (the fake ASR keeps every utterance it hears, ~70 KB per turn,
        # so later RSS grows with the number of turns, not with the connections)
        "rss_kb_per_connection": round(
            (ma.get("process_resident_memory_bytes") - m0.get("process_resident_memory_bytes"))
            / 1024
            / streams,
            1,
        ),
        "rss_mb_growth_during_steady": round(
            (mb.get("process_resident_memory_bytes") - ma.get("process_resident_memory_bytes"))
            / 2**20,
            1,
        ),
        "vad_windows_per_s": round(steady.get("xiaozhi_vad", stat="windows") / secs, 1)
        if steady.get("xiaozhi_vad", stat="windows") > 0
        else None,
        # windows the VAD did not have to run on (deep in a run of DTX packets)
        "vad_windows_dtx_skipped_share": round(
            steady.get("xiaozhi_vad", stat="windows_dtx_skipped")
            / steady.get("xiaozhi_vad", stat="windows"),
            3,
        )
        if steady.get("xiaozhi_vad", stat="windows") > 0
        else None,
        # frames the lane processed on arrival (silence deep in DTX: no decode, no VAD,
        # no queue), as a share of the frames processed
        "frames_at_once_share": round(
            steady.get("xiaozhi_audio_frames_at_once_total")
            / steady.get("xiaozhi_audio_frames_processed_total"),
            3,
        )
        if steady.get("xiaozhi_audio_frames_processed_total") > 0
        else None,
    }
    hist = "xiaozhi_turn_latency_seconds"
    over = "xiaozhi_turn_server_overhead_seconds"
    server_ms: dict[str, Any] = {}

    def mean(name: str, **labels: str) -> float | None:
        n = total.get(f"{name}_count", **labels)
        return total.get(f"{name}_sum", **labels) / n if n else None

    for stage in ("asr_final", "llm_first_token", "tts_first_audio", "first_frame_sent"):
        server_ms[f"eos_to_{stage}"] = {
            "mean": _ms(mean(hist, stage=stage)),
            "p50": _ms(total.quantile(hist, 0.5, stage=stage)),
            "p95": _ms(total.quantile(hist, 0.95, stage=stage)),
        }
    server_ms["server_overhead"] = {
        "mean": _ms(mean(over)),
        "p50": _ms(total.quantile(over, 0.5)),
        "p95": _ms(total.quantile(over, 0.95)),
        "share_le_30ms": total.share_le(over, 0.03),
    }
    rep["turns"]["server_ms"] = server_ms
    rep["turns"]["server_counts"] = {
        k: int(total.get("xiaozhi_turns_total", outcome=k)) for k in ("ok", "failed", "aborted")
    }
    if not o.configs and not o.url:
        known = sum(o.delays_ms)
        ff = server_ms["eos_to_first_frame_sent"]
        rep["turns"]["provider_delays_ms"] = {
            "asr": o.delays_ms[0],
            "llm_first_token": o.delays_ms[1],
            "tts_first_audio": o.delays_ms[2],
            "sum": known,
        }
        # exact on average (histogram sum / count); percentiles are bucket-interpolated
        rep["turns"]["first_frame_mean_minus_known_delays_ms"] = (
            _r(ff["mean"] - known, 2) if ff["mean"] is not None else None
        )
    return rep


def first_audio_by_turn(
    sessions: list[list[dict[str, Any]]], steady_from: float | None = None
) -> dict[str, Any]:
    """End of speech → first audio (client ms) by the turn's index in its session.

    ``sessions`` holds each device's turns in order (a turn is a dict with
    ``first_audio_ms``, ``error`` and, optionally, ``at_s``: seconds after the run's start).
    Returns p50/p95/n for the first turns, the later turns, each index 1..5 and "6+"; with
    ``steady_from``, also for later turns whose end of speech came after that many seconds
    (every device connected: the steady window).

    >>> s = [[{"first_audio_ms": 900.0, "error": None, "at_s": 1.0},
    ...       {"first_audio_ms": 300.0, "error": None, "at_s": 4.0}],
    ...      [{"first_audio_ms": 1000.0, "error": None, "at_s": 2.0},
    ...       {"first_audio_ms": None, "error": "no tts start", "at_s": 5.0}]]
    >>> r = first_audio_by_turn(s, steady_from=3.0)
    >>> r["first"], r["later"]["n"], r["by_index"]["2"]["p50"]
    ({'p50': 950.0, 'p95': 995.0, 'n': 2}, 1, 300.0)
    >>> r["first_over_later_p50"]
    3.17
    """
    groups: dict[str, list[float]] = {"first": [], "later": [], "later_steady": []}
    by_index: dict[str, list[float]] = {}
    for turns in sessions:
        for i, t in enumerate(turns, 1):
            ms = t.get("first_audio_ms")
            if t.get("error") is not None or ms is None:
                continue
            groups["first" if i == 1 else "later"].append(ms)
            if i > 1 and steady_from is not None and t.get("at_s", 0.0) >= steady_from:
                groups["later_steady"].append(ms)
            by_index.setdefault(str(i) if i <= 5 else "6+", []).append(ms)

    def stats(values: list[float]) -> dict[str, Any]:
        return {"p50": _r(_pct(values, 0.5)), "p95": _r(_pct(values, 0.95)), "n": len(values)}

    out: dict[str, Any] = {
        k: stats(v) for k, v in groups.items() if k != "later_steady" or steady_from is not None
    }
    out["by_index"] = {k: stats(by_index[k]) for k in sorted(by_index, key=lambda k: (len(k), k))}
    first, later = out["first"]["p50"], out["later"]["p50"]
    out["first_over_later_p50"] = round(first / later, 2) if first and later else None
    return out


def _phase_idle(o: BenchOptions, target: _Target) -> dict[str, Any]:
    n = o.idle
    ws_url, metrics = target.start(n + 16)
    try:
        # warm-up: the first sessions import and allocate what every later one reuses
        warm = _Workers([_Job("churn", ws_url, 0, [0], [0.0], [1], cycles=20, concurrency=4)])
        warm.start(0.0)
        warm.join(120)
        before = _wait_drained(metrics)
        time.sleep(1.0)
        before = _scrape(metrics)
        procs = max(1, min(o.procs, n))
        indexes = list(range(n))
        versions = _versions(o.protocol_version, n)
        jobs = [
            _Job(
                "idle",
                ws_url,
                w,
                part,
                [0.0] * len(part),
                [versions[i] for i in part],
                nice=o.client_nice,
            )
            for w, part in enumerate(_split(indexes, procs))
        ]
        workers = _Workers(jobs)
        try:
            t_start = time.time()
            workers.start(0.0)
            connected = workers.wait_for("connected", len(jobs), 60 + n / 10)
            t_conn = time.time() - t_start
            at_connect = _scrape(metrics)
            time.sleep(3.0)
            held = _scrape(metrics)
            workers.release.set()
            outs = workers.join(120)
        finally:
            workers.kill()
        after = _wait_drained(metrics)
    finally:
        target.stop()
    ok = sum(c["connected"] for c in connected)
    rep: dict[str, Any] = {
        "connections": n,
        "connected": ok,
        "failed": sum(c["failed"] for c in connected),
        "errors": [e for c in connected for e in c["errors"]][:5],
        "closed_by_server_while_idle": sum(out.get("closed_by_server", 0) for out in outs),
        "connect_seconds": round(t_conn, 2),
    }
    if before is not None and held is not None:
        rss0 = before.get("process_resident_memory_bytes")
        rss1 = held.get("process_resident_memory_bytes")
        rep.update(
            {
                "rss_mb_before": round(rss0 / 2**20, 1),
                "rss_mb_held": round(rss1 / 2**20, 1),
                "rss_kb_per_connection": round((rss1 - rss0) / 1024 / max(1, ok), 1),
                "tasks_per_connection": round(
                    (
                        held.get("xiaozhi_runtime", stat="asyncio_tasks")
                        - before.get("xiaozhi_runtime", stat="asyncio_tasks")
                    )
                    / max(1, ok),
                    2,
                ),
                "sessions_held": held.get("xiaozhi_sessions_active"),
                "loop_lag_p99_ms_held": _ms(held.get("xiaozhi_loop_lag_seconds", stat="p99")),
                "cpu_cores_held": round(
                    (held - at_connect).get("process_cpu_seconds_total")
                    / max(1e-9, held.at - at_connect.at),
                    3,
                )
                if at_connect is not None
                else None,
                "after_release": _process_state(after),
            }
        )
    return rep


def _phase_churn(o: BenchOptions, target: _Target) -> dict[str, Any]:
    n = o.churn
    ws_url, metrics = target.start(o.churn_concurrency * o.procs + 16)
    try:
        warm_n = max(50, n // 20)
        warm = _Workers(
            [
                _Job(
                    "churn",
                    ws_url,
                    0,
                    [0],
                    [0.0],
                    [1],
                    cycles=warm_n,
                    concurrency=o.churn_concurrency,
                )
            ]
        )
        warm.start(0.0)
        warm.join(300)
        _wait_drained(metrics)
        time.sleep(2.0)
        before = _scrape(metrics)
        procs = max(1, o.procs)
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        versions = _versions(o.protocol_version, procs)
        jobs = [
            _Job(
                "churn",
                ws_url,
                w,
                [w],
                [0.0],
                [versions[w]],
                cycles=per[w],
                concurrency=o.churn_concurrency,
                nice=o.client_nice,
            )
            for w in range(procs)
        ]
        workers = _Workers(jobs)
        try:
            t_start = workers.start(0.2)
            outs = workers.join(max(600, n / 5))
            elapsed = time.time() - t_start
        finally:
            workers.kill()
        drained = _wait_drained(metrics)
        time.sleep(2.0)
        after = _scrape(metrics)
        del drained
    finally:
        target.stop()
    cycles = sum(out.get("cycles", 0) for out in outs)
    rep: dict[str, Any] = {
        "cycles": cycles,
        "failed": sum(out.get("failed", 0) for out in outs),
        "errors": [e for out in outs for e in out.get("errors", [])][:5],
        "warmup_cycles": warm_n,
        "concurrency": o.churn_concurrency * procs,
        "seconds": round(elapsed, 2),
        "cycles_per_s": round(cycles / max(1e-9, elapsed), 1),
        "hello_ms": [out.get("hello_ms") for out in outs],
    }
    b, a = _process_state(before), _process_state(after)
    if b is not None and a is not None:
        rep["before"], rep["after"] = b, a
        rep["growth"] = {k: round(a[k] - b[k], 2) for k in b}
        total = after - before
        rep["server_connections"] = {
            k: int(total.get("xiaozhi_connections_total", outcome=k))
            for k in ("accepted", "refused_full", "refused_overload", "refused_auth")
        }
    return rep


def run_bench(o: BenchOptions) -> dict[str, Any]:
    """Run the selected phases; return the report (also written to ``o.json_path``)."""
    _raise_nofile()
    if o.url and not o.metrics_url:
        _say(o, "note: without --metrics only client-side numbers are measured")
    report: dict[str, Any] = {
        "version": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "options": {k: v for k, v in asdict(o).items() if k not in ("quiet",)},
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        files = list(o.configs)
        if not files and not o.url:
            import yaml

            path = Path(tmp) / "bench.yaml"
            path.write_text(yaml.safe_dump(_default_config(o)))
            files = [str(path)]
            report["server_config"] = _default_config(o)
        target = _Target(o, files, tmp)
        if "ingest" in o.phases:
            variants, filler = _prepare_audio(o)
            utterance = variants[0]
            report["utterance"] = {
                "seconds": round(utterance.seconds, 2),
                "frames": len(utterance.packets),
                "voice_frames": utterance.voice_end,
                # per shifted variant: the voice's end after the start of the audio, ms
                "voice_end_ms": [
                    round((u.voice_end * 60 - u.voice_tail_s * 1000), 1) for u in variants
                ],
            }
            _say(
                o,
                f"ingest: {o.devices} devices, ramp {o.ramp:g} s, {o.duration:g} s steady "
                f"({o.mode} mode)...",
            )
            report["ingest"] = _phase_ingest(o, target, variants, filler)
            report["providers"] = target.providers
            if o.workers is not None:
                report["ingest"]["server_workers"] = {"count": o.workers, "pids": target.pids}
        if "idle" in o.phases:
            _say(o, f"idle: {o.idle} connections...")
            report["idle"] = _phase_idle(o, target)
        if "churn" in o.phases:
            _say(o, f"churn: {o.churn} connect/hello/disconnect cycles...")
            report["churn"] = _phase_churn(o, target)
    report["checks"] = checks(report)
    if o.json_path:
        Path(o.json_path).write_text(json.dumps(report, indent=2))
    return report


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Correctness checks (must hold) and targets (reported) of a report."""
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, ok: bool | None, value: Any, kind: str = "correctness") -> None:
        out[name] = {"ok": ok, "value": value, "kind": kind}

    ing = report.get("ingest")
    if ing:
        add(
            "devices connected",
            ing["connected"] == ing["devices"] and not ing["fatal"],
            f"{ing['connected']}/{ing['devices']}",
        )
        t = ing["turns"]
        add(
            "every turn completed",
            t["started"] > 0 and t["failed"] == 0,
            f"{t['completed']}/{t['started']}",
        )
        add("no audio after tts stop", t["frames_after_tts_stop"] == 0, t["frames_after_tts_stop"])
        fr = ing.get("frames")
        if fr:
            add("frames lost", fr["lost"] == 0 and fr["missing_in_transit"] == 0, fr["lost"])
            add("frames reordered", fr["reordered"] == 0, fr["reordered"])
            lag = ing["ingest"]["lane_lag_ms"]["p99"]
            add("lane lag p99 <= 50 ms", None if lag is None else lag <= 50, lag, "target")
            ov = t.get("server_ms", {}).get("server_overhead", {}).get("p95")
            add("server overhead p95 <= 30 ms", None if ov is None else ov <= 30, ov, "target")
    idle = report.get("idle")
    if idle:
        add(
            "idle connections held",
            idle["connected"] == idle["connections"] and idle["closed_by_server_while_idle"] == 0,
            f"{idle['connected']}/{idle['connections']}",
        )
        per = idle.get("rss_kb_per_connection")
        if per is not None:
            add("idle RSS <= 200 KB/connection", per <= 200, per, "target")
    churn = report.get("churn")
    if churn:
        add(
            "churn cycles completed",
            churn["failed"] == 0,
            f"{churn['cycles']} ({churn['failed']} failed)",
        )
        g = churn.get("growth")
        if g:
            add(
                "no task/thread/fd growth after churn",
                g["asyncio_tasks"] <= 0
                and g["threads"] <= 0
                and g["open_fds"] <= 0
                and churn["after"]["sessions"] == 0,
                f"tasks {g['asyncio_tasks']:+g}, threads {g['threads']:+g}, fds {g['open_fds']:+g}",
            )
            add("RSS growth after churn (MB)", None, g["rss_mb"], "target")
    return out


# ============================================================================ output
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "; ".join(_fmt(x) for x in v)
    return str(v)


def print_report(report: dict[str, Any], out: TextIO) -> None:
    rows: list[tuple[str, str]] = []
    ing = report.get("ingest")
    if ing:
        rows.append(
            (
                "INGEST",
                f"{ing['devices']} devices, {ing['mode']} mode, protocol {ing['protocol_version']}",
            )
        )
        if "ingest" in ing:
            i = ing["ingest"]
            rows += [
                ("frames/s through the lanes", _fmt(i["frames_per_s"])),
                ("lane lag ms (arrival->VAD)", _fmt(i["lane_lag_ms"])),
                ("loop lag ms", _fmt(i["loop_lag_ms"])),
                (
                    "server CPU cores / % per stream",
                    f"{i['server_cpu_cores']} / {i['cpu_percent_per_stream']}%"
                    + (
                        f" (all {ing['server_workers']['count']} workers)"
                        if ing.get("server_workers")
                        else ""
                    ),
                ),
                (
                    "RSS MB before / streaming / KB per conn",
                    f"{i['rss_mb_before']} / {i['rss_mb_streaming']} / "
                    f"{i['rss_kb_per_connection']} (+{i['rss_mb_growth_during_steady']} MB "
                    "during the steady window)",
                ),
                ("frames", _fmt(ing["frames"])),
            ]
        rows.append(("client", _fmt(ing["client"])))
        if ing.get("machine_load"):
            rows.append(("machine load (steady window)", _fmt(ing["machine_load"])))
        t = ing["turns"]
        rows += [
            (
                "turns",
                f"{t['completed']}/{t['started']} completed, {t['failed']} failed, "
                f"{t['frames_after_tts_stop']} frames after tts stop",
            ),
            ("client ms from end of voice (sample)", _fmt(t["client_ms"])),
        ]
        by = t.get("first_audio_by_turn")
        if by:
            rows += [
                ("first audio ms: first turns", _fmt(by["first"])),
                ("first audio ms: later turns", _fmt(by["later"])),
            ]
            if "later_steady" in by:
                rows.append(("first audio ms: later, steady", _fmt(by["later_steady"])))
            rows.append(
                (
                    "first audio ms by turn index",
                    "; ".join(f"#{k}: {_fmt(v)}" for k, v in by["by_index"].items()),
                )
            )
        if "server_ms" in t:
            for k, v in t["server_ms"].items():
                rows.append((f"server {k} ms", _fmt(v)))
        if "first_frame_mean_minus_known_delays_ms" in t:
            rows.append(
                (
                    "first frame mean - known provider delays ms",
                    _fmt(t["first_frame_mean_minus_known_delays_ms"]),
                )
            )
        if ing["device_errors"] or ing["fatal"]:
            rows.append(("errors", _fmt(ing["device_errors"][:3] + ing["fatal"])))
    idle = report.get("idle")
    if idle:
        rows.append(
            (
                "IDLE",
                f"{idle['connected']}/{idle['connections']} connections in "
                f"{idle['connect_seconds']} s",
            )
        )
        for k in (
            "rss_mb_before",
            "rss_mb_held",
            "rss_kb_per_connection",
            "tasks_per_connection",
            "cpu_cores_held",
            "loop_lag_p99_ms_held",
            "after_release",
        ):
            if k in idle:
                rows.append((k, _fmt(idle[k])))
    churn = report.get("churn")
    if churn:
        rows.append(
            (
                "CHURN",
                f"{churn['cycles']} cycles in {churn['seconds']} s = "
                f"{churn['cycles_per_s']}/s (concurrency {churn['concurrency']})",
            )
        )
        for k in ("hello_ms", "before", "after", "growth", "server_connections", "errors"):
            if churn.get(k):
                rows.append((k, _fmt(churn[k])))
    rows.append(("CHECKS", ""))
    for name, c in report.get("checks", {}).items():
        verdict = (
            "ok"
            if c["ok"]
            else ("-" if c["ok"] is None else ("FAIL" if c["kind"] == "correctness" else "MISSED"))
        )
        rows.append((f"  {name}", f"{verdict}  ({_fmt(c['value'])})"))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}" if v else k, file=out)


def _flatten(d: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    elif isinstance(d, bool):
        pass
    elif isinstance(d, int | float):
        out[prefix] = float(d)
    return out


def compare(a: dict[str, Any], b: dict[str, Any], out: TextIO) -> None:
    """Print the numeric differences between two reports."""
    fa = _flatten({k: v for k, v in a.items() if k not in ("options", "machine", "targets")})
    fb = _flatten({k: v for k, v in b.items() if k not in ("options", "machine", "targets")})
    keys = [k for k in fa if k in fb] + [k for k in fb if k not in fa]
    rows = [("metric", "A", "B", "B-A", "change")]
    for k in keys:
        va, vb = fa.get(k), fb.get(k)
        if va == vb:
            continue
        diff = "" if va is None or vb is None else f"{vb - va:+g}"
        rel = "" if not va or vb is None else f"{100 * (vb - va) / abs(va):+.1f}%"
        rows.append((k, _fmt(va), _fmt(vb), diff, rel))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
    if len(rows) == 1:
        print("no numeric differences", file=out)


# ============================================================================ CLI
def _delays(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ASR,LLM,TTS in ms") from None
    if len(parts) != 3 or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three delays >= 0 (ms)")
    return parts[0], parts[1], parts[2]


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compare", nargs=2, metavar=("A.json", "B.json"), help="diff two result files and exit"
    )
    srv = p.add_argument_group("server")
    srv.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="start a server on these configs (repeat to merge); default: fake "
        "providers with fixed delays and the silero VAD",
    )
    srv.add_argument("--url", help="target an already running server's WebSocket URL instead")
    srv.add_argument(
        "--metrics",
        dest="metrics_url",
        metavar="URL",
        help="that server's /metrics URL (server-side numbers need it)",
    )
    srv.add_argument(
        "--vad",
        choices=("silero", "fake"),
        default="silero",
        help="VAD of the default config (default silero)",
    )
    srv.add_argument(
        "--delays",
        type=_delays,
        default=(50.0, 100.0, 50.0),
        metavar="A,L,T",
        help="default config: ASR, LLM first token and TTS first audio delays in "
        "ms (default 50,100,50; 0,0,0 = instant providers)",
    )
    srv.add_argument(
        "--vad-tick-ms",
        type=int,
        metavar="MS",
        help="default config: session.vad_tick_ms (the audio hub's batch tick)",
    )
    srv.add_argument(
        "--silence-ms",
        type=int,
        metavar="MS",
        help="default config: session.silence_ms (unvoiced audio that ends an "
        "utterance; default: the VAD's own, 700 ms for silero)",
    )
    srv.add_argument(
        "--store",
        default="off",
        metavar="off|sqlite|URL",
        help="default config: the device store (default off; sqlite: a file in "
        "a temp dir; or a postgresql:// URL)",
    )
    srv.add_argument(
        "--profile-server",
        metavar="FILE",
        help="cProfile the server process during the ingest phase (pstats file)",
    )
    srv.add_argument(
        "--profile-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="--profile-server's clock: wall time (default) or the event-loop "
        "thread's CPU time (where its CPU goes, without the waits)",
    )
    srv.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run the server as 'xiaozhi serve --workers N' (its supervisor and N worker "
        "processes; server CPU is then all workers together) instead of in one "
        "bench-owned process",
    )
    load = p.add_argument_group("load")
    load.add_argument(
        "--phases",
        default="ingest,idle,churn",
        help="comma-separated: ingest, idle, churn (default all)",
    )
    load.add_argument("--devices", type=int, default=20, help="streaming devices (ingest)")
    load.add_argument("--procs", type=int, default=1, help="device processes (default 1)")
    load.add_argument("--ramp", type=float, default=5.0, help="seconds to connect all devices")
    load.add_argument(
        "--duration", type=float, default=30.0, help="steady seconds with every device streaming"
    )
    load.add_argument(
        "--mode",
        choices=("realtime", "auto", "manual"),
        default="realtime",
        help="listening mode (default realtime: the mic never closes, so every "
        "device streams all the time; auto closes it while the reply plays)",
    )
    load.add_argument(
        "--protocol-version",
        choices=("1", "2", "3", "mix"),
        default="1",
        help="binary framing (mix: devices cycle through 1, 2, 3)",
    )
    load.add_argument("--wav", help="the utterance (default: --text spoken by espeak)")
    load.add_argument("--text", default=DEFAULT_TEXT, help="the utterance's text")
    load.add_argument(
        "--lead",
        type=float,
        default=0.5,
        help="silence before the first turn (jittered by +-50%%, like --gap)",
    )
    load.add_argument(
        "--gap",
        type=float,
        default=1.0,
        help="silence between a reply's end and the next utterance (each pause "
        "is jittered by +-50%% so devices do not fall into step)",
    )
    load.add_argument("--turn-timeout", type=float, default=20.0)
    load.add_argument("--idle", type=int, default=200, help="idle connections (idle phase)")
    load.add_argument("--churn", type=int, default=1000, help="connect/disconnect cycles")
    load.add_argument(
        "--churn-concurrency",
        type=int,
        default=8,
        help="concurrent connect loops per device process",
    )
    load.add_argument(
        "--client-nice",
        type=int,
        default=10,
        metavar="N",
        help="run the device processes at this lower CPU priority (default 10; "
        "0 = same as the server): on a shared machine the server goes "
        "first, and the devices' own lateness is reported as send lag",
    )
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write the results here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _bench(args: argparse.Namespace) -> int:
    if args.compare:
        a, b = (json.loads(Path(f).read_text()) for f in args.compare)
        compare(a, b, sys.stdout)
        return 0
    phases = tuple(x.strip() for x in args.phases.split(",") if x.strip())
    bad = [x for x in phases if x not in ("ingest", "idle", "churn")]
    if bad or not phases:
        raise XiaozhiError(f"--phases: unknown phase(s) {bad}; use ingest, idle, churn")
    if args.url and args.config:
        raise XiaozhiError("give either -c (the bench starts a server) or --url, not both")
    if args.workers is not None and (args.url or args.profile_server):
        raise XiaozhiError("--workers starts its own server: not with --url or --profile-server")
    if args.workers is not None and args.workers < 1:
        raise XiaozhiError("--workers must be at least 1")
    for name in ("devices", "procs", "idle", "churn", "churn_concurrency"):
        if getattr(args, name) < 1:
            raise XiaozhiError(f"--{name.replace('_', '-')} must be at least 1")
    o = BenchOptions(
        configs=args.config,
        url=args.url,
        metrics_url=args.metrics_url,
        vad=args.vad,
        delays_ms=args.delays,
        vad_tick_ms=args.vad_tick_ms,
        silence_ms=args.silence_ms,
        store=args.store,
        phases=phases,
        devices=args.devices,
        procs=args.procs,
        ramp=args.ramp,
        duration=args.duration,
        mode=args.mode,
        protocol_version=args.protocol_version,
        wav=args.wav,
        text=args.text,
        lead=args.lead,
        gap=args.gap,
        turn_timeout=args.turn_timeout,
        idle=args.idle,
        churn=args.churn,
        churn_concurrency=args.churn_concurrency,
        client_nice=args.client_nice,
        json_path=args.json_path,
        profile_server=args.profile_server,
        profile_clock=args.profile_clock,
        workers=args.workers,
        quiet=args.quiet,
    )
    report = run_bench(o)
    print_report(report, sys.stdout)
    failed = [
        n for n, c in report["checks"].items() if c["kind"] == "correctness" and c["ok"] is False
    ]
    if failed:
        print(
            f"xiaozhi: error: bench correctness checks failed: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


def commands() -> list[Command]:
    """The ``xiaozhi bench`` command (entry point ``xiaozhi_core.commands: bench``)."""
    return [
        Command(
            ("bench",),
            "load-test a server with simulated devices and report the numbers",
            _bench,
            _args,
        )
    ]
