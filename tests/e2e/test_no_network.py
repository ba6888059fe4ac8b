"""The server makes no network traffic beyond loopback by itself: building every provider
of the offline default deployment (onnxruntime, CTranslate2, llama.cpp, espeak-ng load
here) is traced with strace, and every connect/send must target loopback or a local
socket."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ADDR = re.compile(r'(?:sin_addr=inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")')


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1")


def remote_connections(lines: list[str]) -> list[str]:
    """The traced calls that address something other than loopback."""
    remote = []
    for line in lines:
        if "AF_INET" not in line:
            continue  # AF_UNIX, AF_NETLINK: local
        for v4, v6 in ADDR.findall(line):
            if not _is_loopback(v4 or v6):
                remote.append(line)
    return remote


def test_the_trace_parser_catches_remote_addresses():
    """The detector itself can fail (fabricated strace lines, no traffic sent)."""
    lines = [
        '12 connect(3, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 110) = 0',
        "12 connect(7, {sa_family=AF_INET, sin_port=htons(8000), "
        'sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '13 sendto(9, "..."..., 40, MSG_NOSIGNAL, {sa_family=AF_INET, sin_port=htons(53), '
        'sin_addr=inet_addr("192.0.2.53")}, 16) = 40',
        "14 connect(5, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), "
        'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1',
    ]
    assert [line.split()[0] for line in remote_connections(lines)] == ["13", "14"]


@pytest.mark.parametrize("config", ["default.yaml", "zh.yaml"])
def test_offline_deployment_stays_on_loopback(tmp_path: Path, config: str):
    strace = shutil.which("strace")
    assert strace, "strace is installed by scripts/setup.sh --dev"
    env = {
        k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "HF_HUB_OFFLINE")
    }  # the product sets them
    trace = tmp_path / "trace.txt"
    result = subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-e",
            "trace=connect,sendto,sendmsg",
            "-o",
            str(trace),
            sys.executable,
            "-m",
            "xiaozhi_core",
            "serve",
            "--check",
            "--no-local",
            "-c",
            str(ROOT / "configs" / config),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "every provider started" in result.stdout
    lines = trace.read_text().splitlines()
    assert lines, "strace recorded nothing: the trace did not work"
    remote = remote_connections(lines)
    assert remote == [], "\n".join(remote[:10])
