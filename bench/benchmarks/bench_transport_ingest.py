"""Ingest cost per device: MQTT + UDP versus WebSocket, N devices streaming at once.

Starts ``xiaozhi serve`` in its own process (fake providers, MQTT + UDP enabled), then
connects N devices of one transport that each open a session, start listening and send
one 60 ms Opus packet every 60 ms in real time — low-level noise, real Opus (~40-60 byte
packets), below the energy VAD's threshold, so the server decodes and runs VAD on every
frame but no turn starts and nothing flows back. Measured over a steady window:

* server CPU (user+system of the server process, /proc) per device;
* uplink bytes per device per second at the socket (WebSocket frames with their
  header and mask; UDP datagrams with the 16-byte header), plus the IP/TCP or IP/UDP
  headers one packet each costs (TCP 20+20+12 option bytes, UDP 20+8; TCP ACKs not
  counted).

    .venv/bin/python bench/benchmarks/bench_transport_ingest.py --devices 100 --seconds 20

The machine is shared with whatever else runs: quote numbers with that caveat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.mqtt_device import FakeMqttDevice
from xiaozhi_core.sim.driver import ota_body

FRAME_S = 0.06
TCP_IP = 20 + 20 + 12  # IPv4 + TCP + timestamp option
UDP_IP = 20 + 8


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def noise_packets(seconds: float) -> list[bytes]:
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(int(seconds * 16000)) * 0.004 * 32767).astype(np.int16)
    return encode_utterance(pcm)


async def ota(http_port: int, mac: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{http_port}/xiaozhi/ota/"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=json.dumps(ota_body(mac, mac)), headers={"Device-Id": mac}) as resp,
    ):
        return dict(await resp.json())


async def processed_frames(http_port: int) -> float:
    """``xiaozhi_audio_frames_processed_total`` (frames through decode + VAD)."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("xiaozhi_audio_frames_processed_total")
    )


async def stream(
    dev: Any, packets: list[bytes], stop: asyncio.Event, sent: list[int], transport: str
) -> None:
    loop = asyncio.get_running_loop()
    start, i = loop.time(), 0
    while not stop.is_set():
        packet = packets[i % len(packets)]
        if transport == "mqtt":
            datagram = dev.seal(packet)
            dev.send_datagram(datagram)
            sent[0] += len(datagram) + UDP_IP
        else:
            await dev.send_packet(packet)
            # v3 framing (4) + WebSocket header (2, masked: +4) from the client
            sent[0] += len(packet) + 4 + 2 + 4 + TCP_IP
        sent[1] += 1
        i += 1
        delay = start + i * FRAME_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def run(transport: str, devices: int, seconds: float, warmup: float) -> dict[str, Any]:
    ports = {
        "port": free_port(),
        "http_port": free_port(),
        "mqtt": free_port(),
        "udp": free_port(socket.SOCK_DGRAM),
    }
    config = f"""
server:
  host: 127.0.0.1
  port: {ports["port"]}
  http_port: {ports["http_port"]}
  # every simulated device asks the OTA endpoint from 127.0.0.1: lift its per-address
  # rate limit (and the per-address connection budgets) to the device count
  limits:
    max_sessions: {devices + 10}
    max_loop_lag_ms: 0
    max_connections_per_peer: {devices + 10}
    max_pending_per_peer: {devices + 10}
    max_pending_handshakes: {devices + 10}
  http: {{ota_burst: {devices + 10}}}
  timeouts: {{idle: 3600}}
  mqtt: {{enabled: true, port: {ports["mqtt"]}, udp_port: {ports["udp"]}}}
session: {{greeting: ""}}
vad: {{provider: fake}}
asr: {{provider: fake}}
llm: {{provider: fake}}
tts: {{provider: fake}}
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(config)
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "xiaozhi_core",
            "serve",
            "-c",
            str(path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", ports["http_port"]), 0.2).close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            packets = noise_packets(3.0)
            devs: list[Any] = []
            for n in range(devices):
                mac = f"aa:bb:cc:00:{n // 256:02x}:{n % 256:02x}"
                answer = await ota(ports["http_port"], mac)
                if transport == "mqtt":
                    dev: Any = FakeMqttDevice(answer["mqtt"])
                else:
                    dev = FakeDevice(answer["websocket"]["url"], device_id=mac, protocol_version=3)
                await dev.connect()
                await dev.listen("start", "auto")
                devs.append(dev)
            stop, sent = asyncio.Event(), [0, 0]
            tasks = [asyncio.create_task(stream(d, packets, stop, sent, transport)) for d in devs]
            await asyncio.sleep(warmup)
            frames0 = await processed_frames(ports["http_port"])
            cpu0, bytes0, pkts0, t0 = cpu_seconds(server.pid), sent[0], sent[1], time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, bytes1, pkts1, t1 = cpu_seconds(server.pid), sent[0], sent[1], time.monotonic()
            frames1 = await processed_frames(ports["http_port"])
            stop.set()
            await asyncio.gather(*tasks)
            for dev in devs:
                await dev.close()
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), 10)
    elapsed = t1 - t0
    return {
        "transport": transport,
        "devices": devices,
        "window_s": round(elapsed, 1),
        "server_cpu_pct_total": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "server_cpu_ms_per_device_s": round(1000 * (cpu1 - cpu0) / elapsed / devices, 3),
        "packets_per_s": round((pkts1 - pkts0) / elapsed),
        "processed_per_s": round((frames1 - frames0) / elapsed),
        "uplink_bytes_per_device_s": round((bytes1 - bytes0) / elapsed / devices),
        "mean_packet_on_wire": round((bytes1 - bytes0) / max(1, pkts1 - pkts0), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--transports", default="websocket,mqtt")
    args = parser.parse_args()
    for transport in args.transports.split(","):
        print(json.dumps(await run(transport, args.devices, args.seconds, args.warmup)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
