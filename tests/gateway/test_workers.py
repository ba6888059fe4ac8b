"""``xiaozhi serve --workers 2``: real processes sharing the ports (SO_REUSEPORT).

Each test starts the supervisor as an operator would, connects fake devices until both
workers serve one (the ``X-Xiaozhi-Worker`` handshake header names the worker and its
PID), and checks what the issue asks: a conversation per worker, surviving a killed
worker, /health and /metrics for the whole server, one admission limit, one auth
secret, and a graceful drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.exceptions import InvalidStatus

from xiaozhi_core.device import FakeDevice
from xiaozhi_core.gateway.promerge import merge_expositions
from xiaozhi_core.store import Store, StoreSettings

from .conftest import speak

pytestmark = pytest.mark.slow

CONFIG = """
server:
  host: 127.0.0.1
  port: 0
  http_port: 0
  drain_timeout: {drain}
  limits: {{max_loop_lag_ms: 0, max_sessions: {max_sessions}}}
  auth: {{enabled: {auth}}}
session: {{silence_ms: 300, min_speech_ms: 120}}
vad: {{provider: fake}}
asr: {{provider: fake, options: {{text: "hello workers"}}}}
llm: {{provider: fake, options: {{reply: "Hi. Two workers here.", first_token_delay: {delay}}}}}
tts: {{provider: fake}}
store: {{data_dir: "{data}", flush_interval: 0.05}}
"""


class Served:
    """A running ``xiaozhi serve --workers N`` and what it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, ws_url: str, http: str) -> None:
        self.proc = proc
        self.ws_url = ws_url
        self.http = http

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(self.http + path) as r:
            return await (r.json() if path == "/health" else r.text())

    async def ota_token(self, device_id: str, client_id: str) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.http + "/xiaozhi/ota/",
                headers={"Device-Id": device_id, "Client-Id": client_id},
                data=json.dumps({"mac_address": device_id}),
            ) as r,
        ):
            return str((await r.json())["websocket"]["token"])

    async def exited(self, timeout: float = 20) -> int:  # noqa: ASYNC109
        """The supervisor's exit code, once it has exited."""
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def terminate(self) -> int:
        """SIGTERM (the supervisor drains its workers), then the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.exited()

    async def stop(self) -> None:
        """Terminate if still running (killed after 30 s): the supervisor drains its
        workers and removes its run dir."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await self.exited(timeout=30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def spawn(cfg: Path, workers: int = 2) -> Served:
    """``xiaozhi serve --workers N -c cfg`` in a process of its own, once it has printed
    its WebSocket and health URLs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xiaozhi_core",
        "serve",
        "--no-local",
        "-c",
        str(cfg),
        "--workers",
        str(workers),
        stdout=asyncio.subprocess.PIPE,
    )
    ws_url = http = ""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while not (ws_url and http):
                line = (await proc.stdout.readline()).decode()
                assert line, f"serve exited with {await proc.wait()}"
                if line.startswith("WebSocket URL"):
                    ws_url = line.split()[-1]
                if line.startswith("Health:"):
                    http = line.split()[1].removesuffix("/health")
    except BaseException:  # not started after all: leave no process behind
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return Served(proc, ws_url, http)


ServeWorkers = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeWorkers]:
    """Start ``xiaozhi serve --workers`` on CONFIG in ``tmp_path``; each is stopped after
    the test (SIGTERM: the supervisor drains its workers and removes its run dir)."""
    started: list[Served] = []

    async def start(
        workers: int = 2,
        drain: float = 10,
        max_sessions: int = 16,
        auth: bool = False,
        delay: float = 0.0,
    ) -> Served:
        cfg = tmp_path / "workers.yaml"
        cfg.write_text(
            CONFIG.format(
                drain=drain,
                max_sessions=max_sessions,
                auth=str(auth).lower(),
                delay=delay,
                data=tmp_path / "data",
            )
        )
        started.append(await spawn(cfg, workers))
        return started[-1]

    yield start
    for s in started:
        await s.stop()


def worker_of(dev: FakeDevice) -> tuple[int, int]:
    """(worker index, PID) from the handshake response header."""
    assert dev.ws is not None and dev.ws.response is not None
    index, pid = dev.ws.response.headers["X-Xiaozhi-Worker"].split("/")
    return int(index), int(pid)


async def one_device_per_worker(url: str, workers: int = 2) -> dict[int, FakeDevice]:
    """Connect devices until every worker holds one (the kernel picks by address hash);
    extra devices are closed."""
    found: dict[int, FakeDevice] = {}
    for attempt in range(60):
        device_id = f"aa:bb:cc:00:00:{attempt:02x}"
        dev = await FakeDevice(url, device_id=device_id).connect()
        index, _ = worker_of(dev)
        if index in found:
            await dev.close()
        else:
            found[index] = dev
        if len(found) == workers:
            return found
    raise AssertionError(f"60 connections all landed on workers {sorted(found)}")


async def turn(dev: FakeDevice) -> None:
    before = len(dev.messages("stt"))
    await speak(dev)
    await dev.wait_for("tts", "stop", timeout=20)
    assert len(dev.messages("stt")) > before
    assert dev.messages("stt")[-1]["text"] == "hello workers"


async def test_two_workers_serve_one_conversation_each_with_merged_health_and_metrics(
    serve: ServeWorkers,
) -> None:
    s = await serve()
    devs = await one_device_per_worker(s.ws_url)
    try:
        await asyncio.gather(*(turn(d) for d in devs.values()))
        pids = {worker_of(d)[1] for d in devs.values()}
        assert len(pids) == 2 and s.proc.pid not in pids
        health = await s.get("/health")
        assert health["status"] == "ok" and health["workers_up"] == 2
        assert health["sessions"] == 2
        assert {w["pid"] for w in health["workers"]} == pids
        assert [w["sessions"] for w in health["workers"]] == [1, 1]
        assert health["supervisor_pid"] == s.proc.pid
        metrics = await s.get("/metrics")
        # each worker counted one turn; the public endpoint (answered by either) has both
        assert 'xiaozhi_turns_total{outcome="ok"} 2.0' in metrics
        assert "xiaozhi_sessions_active 2.0" in metrics
        assert 'xiaozhi_workers{state="up"} 2.0' in metrics
    finally:
        for d in devs.values():
            await d.close()
    assert await s.terminate() == 0


async def greeting(dev: FakeDevice) -> str:
    before = len(dev.received)
    await dev.listen("detect", text="xiaozhi")
    start = await dev.wait_for("tts", "sentence_start", timeout=20, after=before)
    await dev.wait_for("tts", "stop", timeout=20, after=before)
    return str(start["text"])


async def test_workers_share_one_store_and_sighup_reloads_every_worker(
    tmp_path: Path, serve: ServeWorkers
) -> None:
    s = await serve()
    devs = await one_device_per_worker(s.ws_url)
    try:
        await asyncio.gather(*(turn(d) for d in devs.values()))
        assert {await greeting(d) for d in devs.values()} == {"Hi, I'm listening."}
        cfg = tmp_path / "workers.yaml"
        mapping = "".join(f'  "{d.device_id}": w\n' for d in devs.values())
        cfg.write_text(
            cfg.read_text() + f"profiles: {{w: {{greeting: Reloaded hello.}}}}\ndevices:\n{mapping}"
        )
        assert s.proc.pid is not None
        s.proc.send_signal(signal.SIGHUP)  # the supervisor passes it to each worker
        async with asyncio.timeout(30):
            for d in devs.values():
                for _ in range(100):  # each worker reloads on its own signal handler
                    if await greeting(d) == "Reloaded hello.":
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError(f"worker of {d.device_id} did not reload")
    finally:
        for d in devs.values():
            await d.close()
    assert await s.terminate() == 0
    store = Store(StoreSettings(data_dir=str(tmp_path / "data")))
    await store.open()
    try:  # both workers wrote to the one SQLite file
        devices = {d.device_id for d in await store.list_devices()}
        assert {d.device_id for d in devs.values()} <= devices  # (+ extra connections)
        for d in devs.values():
            kinds = [t.kind for t in await store.device_turns(d.device_id)]
            assert "voice" in kinds and kinds.count("greeting") >= 2
    finally:
        await store.close()


async def test_a_killed_worker_is_restarted_and_only_its_devices_reconnect(
    serve: ServeWorkers,
) -> None:
    s = await serve()
    devs = await one_device_per_worker(s.ws_url)
    victim, survivor = devs[0], devs[1]
    _, victim_pid = worker_of(victim)
    os.kill(victim_pid, signal.SIGKILL)
    code, _ = await victim.wait_closed(timeout=10)
    assert code is not None
    # the other worker's device never noticed: same connection, next turn works
    assert survivor.closed_code is None
    await turn(survivor)
    # the victim's device reconnects (to whichever worker the kernel picks) and talks
    async with FakeDevice(s.ws_url, device_id="aa:bb:cc:00:00:99") as again:
        await turn(again)
    # the supervisor restarts worker 0 with a new PID
    async with asyncio.timeout(20):
        while True:
            health = await s.get("/health")
            w0 = health["workers"][0]
            if w0["status"] == "ok" and w0["pid"] != victim_pid:
                break
            await asyncio.sleep(0.2)
    assert w0["restarts"] == 1 and health["workers_up"] == 2
    assert 'xiaozhi_worker_restarts{worker="0"} 1.0' in await s.get("/metrics")
    await survivor.close()


async def test_admission_limit_holds_for_the_whole_server(serve: ServeWorkers) -> None:
    s = await serve(max_sessions=3)
    devs = list((await one_device_per_worker(s.ws_url)).values())
    devs.append(await FakeDevice(s.ws_url, device_id="aa:bb:cc:00:01:00").connect())
    refused = 0
    for i in range(6):  # whichever worker each lands on, the server is full
        try:
            extra = await FakeDevice(s.ws_url, device_id=f"aa:bb:cc:00:02:{i:02x}").connect()
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
            refused += 1
        else:
            await extra.close()
            raise AssertionError(f"worker {worker_of(extra)} admitted a 4th session")
    assert refused == 6
    await devs.pop().close()
    await asyncio.sleep(0.3)
    async with FakeDevice(s.ws_url, device_id="aa:bb:cc:00:03:00") as dev:
        await turn(dev)
    for d in devs:
        await d.close()


async def test_one_generated_secret_for_every_worker(serve: ServeWorkers) -> None:
    s = await serve(auth=True)
    # one token from one OTA answer (whichever worker gave it) opens a session on both
    token = await s.ota_token("aa:bb:cc:00:00:01", "client-1")
    seen: dict[int, FakeDevice] = {}
    for _ in range(60):
        dev = await FakeDevice(
            s.ws_url, device_id="aa:bb:cc:00:00:01", client_id="client-1", token=token
        ).connect()
        index, _ = worker_of(dev)
        if index in seen:
            await dev.close()
        else:
            seen[index] = dev
            await turn(dev)
        if len(seen) == 2:
            break
    assert sorted(seen) == [0, 1]
    with pytest.raises(InvalidStatus):
        await FakeDevice(
            s.ws_url, device_id="aa:bb:cc:00:00:01", client_id="client-1", token="forged"
        ).connect()
    for d in seen.values():
        await d.close()


async def test_sigterm_drains_running_turns_then_closes_sessions(serve: ServeWorkers) -> None:
    # the LLM takes 1.5 s to its first token: SIGTERM arrives mid-turn
    s = await serve(drain=8, delay=1.5)
    devs = await one_device_per_worker(s.ws_url)
    busy, idle = devs[0], devs[1]
    await speak(busy)
    await busy.wait_for("stt", timeout=10)
    s.proc.send_signal(signal.SIGTERM)
    # the idle device is told to go (1012: reconnect elsewhere) at once
    code, _ = await idle.wait_closed(timeout=5)
    assert code == 1012
    assert busy.closed_code is None
    # the running turn is spoken to its end, then the session closes
    await busy.wait_for("tts", "stop", timeout=10)
    assert busy.audio_frames()
    code, _ = await busy.wait_closed(timeout=5)
    assert code == 1012
    events = busy.events()
    assert events.index("tts:stop") < len(events)
    assert await s.exited() == 0


async def test_drain_deadline_cuts_a_turn_that_runs_too_long(serve: ServeWorkers) -> None:
    s = await serve(workers=2, drain=1, delay=30)
    async with FakeDevice(s.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("stt", timeout=10)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        s.proc.send_signal(signal.SIGTERM)
        code, _ = await dev.wait_closed(timeout=10)
        assert code == 1012
        assert 0.8 < loop.time() - t0 < 5
    assert await s.exited() == 0


def test_merge_sums_counters_and_histograms_and_keeps_gauge_maxima() -> None:
    a = (
        '# TYPE t counter\nt_total{outcome="ok"} 2.0\nt_created{outcome="ok"} 100.0\n'
        '# TYPE h histogram\nh_bucket{le="0.1"} 1.0\nh_bucket{le="+Inf"} 2.0\n'
        "h_count 2.0\nh_sum 0.5\n"
        '# TYPE xiaozhi_loop_lag_seconds gauge\nxiaozhi_loop_lag_seconds{stat="p99"} 0.2\n'
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 50.0\n"
    )
    b = (
        a.replace("2.0", "3.0")
        .replace("100.0", "90.0")
        .replace("0.2", "0.1")
        .replace("50.0", "60.0")
    )
    text = merge_expositions([a, b]).decode()
    assert 't_total{outcome="ok"} 5.0' in text
    assert 't_created{outcome="ok"} 90.0' in text
    assert 'h_bucket{le="+Inf"} 5.0' in text and "h_count 5.0" in text
    assert "h_sum 1.0" in text and 'h_bucket{le="0.1"} 2.0' in text
    assert 'xiaozhi_loop_lag_seconds{stat="p99"} 0.2' in text
    assert "process_start_time_seconds 50.0" in text
