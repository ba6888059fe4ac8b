"""``xiaozhi bench``: a short smoke run of every phase (5 devices for 5 s, 20 idle
connections, 200 churn cycles) against a bench-owned server on the default config (fake
providers with fixed delays, silero VAD). Correctness only — never a speed threshold."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from xiaozhi_bench.bench import compare, first_audio_by_turn
from xiaozhi_bench.promtext import Scrape

from xiaozhi_core.cli import main


@pytest.mark.slow
def test_bench_smoke_run_is_correct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--devices",
            "5",
            "--duration",
            "5",
            "--ramp",
            "1",
            "--idle",
            "20",
            "--churn",
            "200",
            "--protocol-version",
            "mix",
            "--json",
            str(out),
            "-q",
        ]
    )
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
    # end of speech -> first audio by turn index: every device's first turn is there
    by_turn = turns["first_audio_by_turn"]
    assert by_turn["first"]["n"] == 5 and by_turn["by_index"]["1"]["n"] == 5
    assert by_turn["first"]["n"] + by_turn["later"]["n"] == turns["completed"]
    assert len(turns["samples"]) == turns["started"]
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


@pytest.mark.slow
def test_bench_against_serve_with_two_workers(tmp_path: Path) -> None:
    """--workers 2: the bench runs the real 'xiaozhi serve --workers 2' and reads the
    merged /metrics (frames and CPU of both workers)."""
    out = tmp_path / "bench.json"
    args = ["bench", "--phases", "ingest", "--vad", "fake", "--devices", "6", "--duration", "4"]
    code = main([*args, "--ramp", "1", "--workers", "2", "--json", str(out), "-q"])
    assert code == 0
    ing = json.loads(out.read_text())["ingest"]
    workers = ing["server_workers"]
    assert workers["count"] == 2 and len(set(workers["pids"])) == 2
    frames = ing["frames"]
    assert frames["sent_by_devices"] == frames["received"] == frames["processed"] > 6 * 4 * 15
    assert ing["turns"]["completed"] == ing["turns"]["started"] >= 6
    assert ing["ingest"]["server_cpu_cores"] > 0


def test_compare_prints_changes() -> None:
    a = {"ingest": {"x": 10.0, "y": 1}, "options": {"devices": 1}}
    b = {"ingest": {"x": 12.5, "y": 1}, "options": {"devices": 2}}
    buf = io.StringIO()
    compare(a, b, buf)
    lines = buf.getvalue().splitlines()
    assert lines[1].split() == ["ingest.x", "10", "12.5", "+2.5", "+25.0%"]
    assert len(lines) == 2  # options and equal values are left out


def test_histogram_quantiles_from_prometheus_text() -> None:
    text = "\n".join(
        [
            "# TYPE lag_seconds histogram",
            'lag_seconds_bucket{le="0.01"} 0.0',
            'lag_seconds_bucket{le="0.02"} 80.0',
            'lag_seconds_bucket{le="0.05"} 99.0',
            'lag_seconds_bucket{le="+Inf"} 100.0',
            "lag_seconds_count 100.0",
            "lag_seconds_sum 2.0",
            "",
        ]
    )
    before = Scrape.parse(
        text.replace("80.0", "40.0").replace("99.0", "49.0").replace("100.0", "50.0"), at=0
    )
    after = Scrape.parse(text, at=10)
    d = after - before
    assert d.count("lag_seconds") == 50
    assert d.quantile("lag_seconds", 0.5) == pytest.approx(0.01 + 0.01 * 25 / 40)
    assert d.share_le("lag_seconds", 0.05) == 1.0
    assert after.share_le("lag_seconds", 0.05) == 0.99
    assert after.share_le("lag_seconds", 0.02) == 0.8
    assert d.quantile("lag_seconds", 1.0) == 0.05  # +Inf: the largest finite bound
    assert Scrape.parse("", at=0).quantile("lag_seconds", 0.5) is None


def test_first_audio_by_turn_index_separates_first_turns() -> None:
    def turn(ms: float | None, at: float, error: str | None = None) -> dict[str, object]:
        return {"first_audio_ms": ms, "at_s": at, "error": error}

    sessions = [
        [turn(1300.0, 1.0), turn(300.0, 5.0), turn(290.0, 9.0)],
        [turn(1250.0, 2.0), turn(280.0, 3.5), turn(None, 8.0, "no tts start")],
        [turn(None, 2.5, "no tts start"), turn(310.0, 7.0)],
    ]
    r = first_audio_by_turn(sessions, steady_from=4.0)
    # a failed turn still takes its index, but no latency
    assert r["first"] == {"p50": 1275.0, "p95": 1297.5, "n": 2}
    assert r["later"]["n"] == 4 and r["later"]["p50"] == 295.0
    assert r["later_steady"]["n"] == 3  # 280 ms came before 4 s
    assert list(r["by_index"]) == ["1", "2", "3"]
    assert r["by_index"]["2"] == {"p50": 300.0, "p95": 309.0, "n": 3}
    assert r["first_over_later_p50"] == 4.32
    many = [[turn(100.0 + i, float(i)) for i in range(8)]]
    assert list(first_audio_by_turn(many)["by_index"]) == ["1", "2", "3", "4", "5", "6+"]
    assert first_audio_by_turn(many)["by_index"]["6+"]["n"] == 3
    assert "later_steady" not in first_audio_by_turn(many)


def test_shifted_utterances_move_the_end_of_voice_within_a_packet() -> None:
    """Each 15 ms of leading silence moves the last voiced sample 15 ms later: the audio
    after it in its packet shrinks by 15 ms until it wraps into the next packet, and the
    end of voice (packet end minus that audio) moves by exactly the offset."""
    import numpy as np

    from xiaozhi_core.sim.upstream import last_voiced_sample, shifted_utterances
    from xiaozhi_core.testing import tone

    pcm = np.concatenate([tone(1.0), np.zeros(8000, np.int16)])
    last = last_voiced_sample(pcm)
    assert 15900 <= last <= 16100  # the tone's end, within half an envelope window
    variants = shifted_utterances(pcm, (0, 15, 30, 45))
    ends_ms = [u.voice_end * 60 - u.voice_tail_s * 1000 for u in variants]
    assert ends_ms[0] == pytest.approx((last + 1) / 16, abs=1e-6)
    assert [e - ends_ms[0] for e in ends_ms] == pytest.approx([0, 15, 30, 45], abs=1e-6)
    for u in variants:
        assert 0 <= u.voice_tail_s < 0.060
        assert 1 <= u.voice_end <= len(u.packets)
    # four different positions in the packet, not one
    assert len({round(u.voice_tail_s, 4) for u in variants}) == 4
    # silence only: no voice, the whole utterance counts, nothing to subtract
    (quiet,) = shifted_utterances(np.zeros(4000, np.int16), (0,))
    assert (quiet.voice_end, quiet.voice_tail_s) == (len(quiet.packets), 0.0)
    assert last_voiced_sample(np.zeros(4000, np.int16)) == -1
