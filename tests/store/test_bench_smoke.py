"""bench/benchmarks/bench_store.py still runs end to end (tiny phases; correctness only,
the numbers mean nothing here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "benchmarks" / "bench_store.py"


@pytest.mark.slow
def test_bench_store_runs(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--seconds",
            "0.5",
            "--devices",
            "20",
            "--repeat",
            "1",
            "--batch-sizes",
            "50",
            "--backends",
            "sqlite",
            "postgresql",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    for backend in ("sqlite", "postgresql"):
        r = results[backend]
        assert r["record_us"] > 0
        sustained = r["sustained"]["50"]
        assert sustained["events_per_s"] > 0 and sustained["failed"] == 0
        off, on = r["fleet"]
        assert (off["store"], on["store"]) == (False, True)
        assert on["written"] > 0 and on["dropped"] == 0
