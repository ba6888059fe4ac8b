"""``xiaozhi bench``: a short smoke run of every phase (5 devices for 5 s, 20 idle
connections, 200 churn cycles) against a bench-owned server on the default config (fake
providers with fixed delays, silero VAD). Correctness only — never a speed threshold."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from xiaozhi_bench.bench import compare
from xiaozhi_bench.promtext import Scrape

from xiaozhi_core.cli import main


@pytest.mark.slow
def test_bench_smoke_run_is_correct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "--devices", "5", "--duration", "5", "--ramp", "1", "--idle", "20",
                 "--churn", "200", "--protocol-version", "mix", "--json", str(out), "-q"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    ing = report["ingest"]
    assert ing["connected"] == 5 and not ing["fatal"] and ing["device_error_count"] == 0
    # every frame the devices sent was received and went through decode + VAD in order
    frames = ing["frames"]
    assert frames["sent_by_devices"] > 5 * 5 * 15
    assert frames["sent_by_devices"] == frames["received"] == frames["processed"]
    assert frames["lost"] == 0 and frames["reordered"] == 0 and frames["frame_errors"] == 0
    # every turn completed (stt, reply audio, tts stop) and nothing came after tts stop
    turns = ing["turns"]
    assert turns["started"] >= 5 and turns["completed"] == turns["started"]
    assert turns["frames_after_tts_stop"] == 0
    assert turns["server_counts"]["ok"] >= turns["completed"]
    assert turns["server_counts"]["failed"] == 0
    assert turns["server_ms"]["server_overhead"]["p95"] is not None
    assert ing["ingest"]["lane_lag_ms"]["p99"] is not None
    # idle connections were all held; churn left no session, task, thread or fd behind
    assert report["idle"]["connected"] == 20
    assert report["idle"]["closed_by_server_while_idle"] == 0
    churn = report["churn"]
    assert churn["cycles"] == 200 and churn["failed"] == 0
    assert churn["after"]["sessions"] == 0
    assert churn["growth"]["asyncio_tasks"] <= 0 and churn["growth"]["threads"] <= 0
    assert churn["growth"]["open_fds"] <= 0
    assert all(c["ok"] for c in report["checks"].values() if c["kind"] == "correctness")
    assert "CHECKS" in printed and "FAIL" not in printed
    # --compare of a run with itself: nothing differs
    assert main(["bench", "--compare", str(out), str(out)]) == 0
    assert "no numeric differences" in capsys.readouterr().out


def test_compare_prints_changes() -> None:
    a = {"ingest": {"x": 10.0, "y": 1}, "options": {"devices": 1}}
    b = {"ingest": {"x": 12.5, "y": 1}, "options": {"devices": 2}}
    buf = io.StringIO()
    compare(a, b, buf)
    lines = buf.getvalue().splitlines()
    assert lines[1].split() == ["ingest.x", "10", "12.5", "+2.5", "+25.0%"]
    assert len(lines) == 2                       # options and equal values are left out


def test_histogram_quantiles_from_prometheus_text() -> None:
    text = "\n".join([
        "# TYPE lag_seconds histogram",
        'lag_seconds_bucket{le="0.01"} 0.0', 'lag_seconds_bucket{le="0.02"} 80.0',
        'lag_seconds_bucket{le="0.05"} 99.0', 'lag_seconds_bucket{le="+Inf"} 100.0',
        "lag_seconds_count 100.0", "lag_seconds_sum 2.0", ""])
    before = Scrape.parse(text.replace("80.0", "40.0").replace("99.0", "49.0")
                          .replace("100.0", "50.0"), at=0)
    after = Scrape.parse(text, at=10)
    d = after - before
    assert d.count("lag_seconds") == 50
    assert d.quantile("lag_seconds", 0.5) == pytest.approx(0.01 + 0.01 * 25 / 40)
    assert d.share_le("lag_seconds", 0.05) == 1.0
    assert after.share_le("lag_seconds", 0.05) == 0.99
    assert after.share_le("lag_seconds", 0.02) == 0.8
    assert d.quantile("lag_seconds", 1.0) == 0.05          # +Inf: the largest finite bound
    assert Scrape.parse("", at=0).quantile("lag_seconds", 0.5) is None
