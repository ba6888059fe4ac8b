"""``xiaozhi serve`` runs the gateway until SIGTERM and prints where devices connect."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from xiaozhi_core.device import FakeDevice

from .conftest import speak


async def _log_line(proc: asyncio.subprocess.Process, text: str) -> dict[str, Any]:
    """The next JSON log line on the server's stderr whose message contains ``text``."""
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while True:
            raw = await proc.stderr.readline()
            assert raw, "stderr closed"
            record = json.loads(raw)
            if text in record["message"]:
                return dict(record)


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
    store = f'store: {{data_dir: "{tmp_path / "data"}"}}\n'
    cfg.write_text(CONFIG + store)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xiaozhi_core",
        "--log-format",
        "json",
        "serve",
        "--log-level",
        "info",
        "-c",
        str(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
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
        turn = (await _log_line(proc, "turn device="))["turn"]  # one line per turn
        assert (turn["device"], turn["profile"], turn["outcome"], turn["text"], turn["reply"]) == (
            dev.device_id,
            "default",
            "ok",
            "hello from the cli",
            "Hi. I am running.",
        )
        assert turn["latency"]["total_ms"] > 0 and turn["session"] == dev.session_id
        # SIGHUP reloads: a broken file is refused (one JSON log line), a good one applies
        cfg.write_text(CONFIG + store + "bogus: 1\n")
        proc.send_signal(signal.SIGHUP)
        refused = await _log_line(proc, "reload refused")
        assert refused["level"] == "error" and "bogus: unknown key 'bogus'" in refused["message"]
        cfg.write_text(CONFIG + store + "profiles: {kids: {system_prompt: Be gentle.}}\n")
        proc.send_signal(signal.SIGHUP)
        assert "1 profile(s)" in (await _log_line(proc, "reloaded"))["message"]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            rc = await proc.wait()
        assert rc == 0
        rest = (await proc.stdout.read()).decode()
        assert "asr: fake (cpu" in "\n".join(lines) + rest
        assert f"Store: sqlite {tmp_path / 'data' / 'xiaozhi.db'}" in "\n".join(lines) + rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
