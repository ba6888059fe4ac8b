"""``xiaozhi serve`` runs the gateway until SIGTERM and prints where devices connect."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from xiaozhi_core.device import FakeDevice

from .conftest import speak

CONFIG = """
server: {host: 127.0.0.1, port: 0, http_port: 0, limits: {max_loop_lag_ms: 0}}
session: {silence_ms: 300, min_speech_ms: 120}
vad: {provider: fake}
asr: {provider: fake, options: {text: "hello from the cli"}}
llm: {provider: fake, options: {reply: "Hi. I am running."}}
tts: {provider: fake}
"""


async def test_serve_prints_urls_serves_a_turn_and_stops_on_sigterm(tmp_path: Path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "xiaozhi_core", "serve", "-c", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        lines: list[str] = []
        url = ota = None
        async with asyncio.timeout(60):
            while url is None or ota is None:
                raw = await proc.stdout.readline()
                assert raw, (await proc.stderr.read()).decode()
                line = raw.decode().strip()
                lines.append(line)
                if line.startswith("WebSocket URL"):
                    url = line.split()[-1]
                if line.startswith("OTA URL"):
                    ota = line.split()[-1]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/xiaozhi/v1/")
        assert ota.startswith("http://127.0.0.1:") and ota.endswith("/xiaozhi/ota/")
        async with FakeDevice(url) as dev:
            await speak(dev)
            await dev.wait_for("tts", "stop", timeout=15)
            assert dev.messages("stt")[0]["text"] == "hello from the cli"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            rc = await proc.wait()
        assert rc == 0
        rest = (await proc.stdout.read()).decode()
        assert "asr: fake (cpu" in "\n".join(lines) + rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
