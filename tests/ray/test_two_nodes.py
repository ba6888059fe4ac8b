"""A two-node Ray cluster on one machine: ``ray start --head`` + ``ray start --address``
with its own custom resource, and the ASR replica pinned to the second node."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_asr_replica_pinned_to_the_second_node() -> None:
    port = free_port()
    temp = tempfile.mkdtemp(prefix="xzr", dir="/tmp")  # short: Unix socket paths
    # Token authentication (Ray's gRPC servers listen on every interface): one token for
    # the head, the second node and the gateway, handed over in the environment.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    # --block keeps each node in a child we own: terminating it stops that node only
    # (never `ray stop`, which would stop every Ray on the machine).
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            f"--temp-dir={temp}",
            "--include-dashboard=false",
            *common,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    nodes = [head]
    try:
        time.sleep(6)
        assert head.poll() is None, "ray start --head exited"
        worker = subprocess.Popen(
            [RAY, "start", f"--address=127.0.0.1:{port}", '--resources={"asr_node": 1}', *common],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        nodes.append(worker)
        time.sleep(6)
        assert worker.poll() is None, "ray start --address exited"
        out = subprocess.run(
            [sys.executable, "-m", "tests.ray._two_nodes_driver", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for node in reversed(nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in reversed(nodes):
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert report["nodes"] == 2
    assert len(report["asr_nodes"]) == 1
    assert report["placed"]["asr"] == report["asr_nodes"][0]  # pinned to node 2
    assert report["stt"] == "pinned"
