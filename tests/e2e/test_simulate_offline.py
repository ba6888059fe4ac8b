"""``xiaozhi simulate`` holds a spoken conversation with ``xiaozhi serve`` on the offline
default deployment, each in its own process, as a user without hardware would run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_simulate_talks_to_serve_on_the_default_config(tmp_path: Path):
    override = tmp_path / "ports.yaml"
    override.write_text(
        f'server: {{port: 18765, http_port: 18766}}\nstore: {{data_dir: "{tmp_path / "data"}"}}\n'
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xiaozhi_core",
            "serve",
            "--no-local",
            "-c",
            str(ROOT / "configs" / "default.yaml"),
            "-c",
            str(override),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 120
        ota = None
        while ota is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, server.stderr.read()[-3000:]
            if line.startswith("OTA URL"):
                ota = line.split()[-1]
        assert ota == "http://127.0.0.1:18766/xiaozhi/ota/"
        reply = tmp_path / "reply.wav"
        report = tmp_path / "report.json"
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "xiaozhi_core",
                "simulate",
                "--ota",
                ota,
                "--text",
                "What is the capital of France?",
                "--out",
                str(reply),
                "--json",
                str(report),
                "--timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert sim.returncode == 0, sim.stdout[-3000:] + sim.stderr[-3000:]
        out = sim.stdout.lower()
        assert "capital" in out and "france" in out  # the stt line came back
        with wave.open(str(reply)) as w:
            assert w.getnframes() / w.getframerate() > 0.5  # a spoken answer
        data = json.loads(report.read_text())
        assert data
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=30) == 0
        finally:
            if server.poll() is None:
                server.kill()
