"""The ``resemblyzer`` provider with the real model: enrol, identify, persist, policy."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from xiaozhi_voiceprint.plugin import ResemblyzerOptions
from xiaozhi_voiceprint.voiceprint import ResemblyzerVoiceprint, default_store_dir, enroll_wav

from xiaozhi_core.audio import resample
from xiaozhi_core.errors import ConfigError, ProviderError
from xiaozhi_core.executor import Executor, ExecutorSettings, build
from xiaozhi_core.registry import default_registry
from xiaozhi_core.types import Execution, Role, SpeakerMatch

pytestmark = pytest.mark.slow

Pcm = Callable[[str], np.ndarray]


def make(store: Path, **kw: object) -> ResemblyzerVoiceprint:
    return ResemblyzerVoiceprint(ResemblyzerOptions(store_dir=str(store), **kw))  # type: ignore[arg-type]


def test_embedding_is_unit_256d(tmp_path: Path, pcm: Pcm) -> None:
    e = make(tmp_path).embed(pcm("en-us_2.wav"))
    assert e.shape == (256,) and e.dtype == np.float32
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5
    assert float(e.min()) >= 0.0  # ReLU output


def test_never_imports_torch_or_resemblyzer(tmp_path: Path, data_dir: Path) -> None:
    # In a fresh interpreter: other tests of the session may import anything.
    script = (
        "import sys\n"
        "from xiaozhi_voiceprint.plugin import ResemblyzerOptions\n"
        "from xiaozhi_voiceprint.voiceprint import ResemblyzerVoiceprint, enroll_wav\n"
        f"vp = ResemblyzerVoiceprint(ResemblyzerOptions(store_dir={str(tmp_path)!r}))\n"
        f"enroll_wav(vp, 'alice', {str(data_dir / 'en-us_1.wav')!r})\n"
        "heavy = {'torch', 'librosa', 'webrtcvad', 'resemblyzer', 'scipy', 'numba'}\n"
        "print(sorted(heavy & set(sys.modules)), vp.speakers())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[] ['alice']"


def test_identify_two_enrolled_speakers(tmp_path: Path, pcm: Pcm) -> None:
    vp = make(tmp_path)
    assert vp.identify(pcm("en-us_2.wav")) == SpeakerMatch(None, 0.0)  # nobody enrolled
    vp.enroll("alice", pcm("en-us_1.wav"))
    vp.enroll("bob", pcm("en+f3_1.wav"))
    assert vp.speakers() == ["alice", "bob"]
    # Different sentences from the enrolment ones.
    a = vp.identify(pcm("en-us_2.wav"))
    b = vp.identify(pcm("en+f3_2.wav"))
    print("alice probe", a, "bob probe", b)
    assert a.name == "alice" and a.score >= 0.85
    assert b.name == "bob" and b.score >= 0.85


def test_unknown_voice_and_noise_are_unknown(tmp_path: Path, pcm: Pcm) -> None:
    vp = make(tmp_path)
    vp.enroll("alice", pcm("en-us_1.wav"))
    vp.enroll("bob", pcm("en+f3_1.wav"))
    stranger = vp.identify(pcm("en-us+klatt_1.wav"))
    rng = np.random.default_rng(7)
    noise = vp.identify(rng.normal(0, 3000, 48000).astype(np.int16))
    hum = vp.identify((6000 * np.sin(2 * np.pi * 120 * np.arange(48000) / 16000)).astype(np.int16))
    print("stranger", stranger, "noise", noise, "hum", hum)
    threshold = vp.options.threshold
    for match in (stranger, noise, hum):
        assert match.name is None and not match.known
        assert 0.0 <= match.score < threshold
    assert noise.score < 0.7 and hum.score < 0.7
    # The same stranger becomes known with a threshold below its score.
    assert make(tmp_path, threshold=stranger.score - 0.01).identify(pcm("en-us+klatt_1.wav")).known


def test_enrolments_persist_and_refine(tmp_path: Path, pcm: Pcm) -> None:
    store = tmp_path / "voices"
    first = make(store)
    first.enroll("alice", pcm("en-us_1.wav"))
    # A second instance (another process would do the same) sees it.
    second = make(store)
    assert second.speakers() == ["alice"]
    assert second.identify(pcm("en-us_2.wav")).name == "alice"
    # Enrolling again averages: count 2, mean of both embeddings.
    e1, e2 = second.embed(pcm("en-us_1.wav")), second.embed(pcm("en-us_2.wav"))
    second.enroll("alice", pcm("en-us_2.wav"))
    files = sorted(p.name for p in store.iterdir() if not p.name.startswith("."))
    assert files == ["alice.json"]  # no temp files left behind
    data = json.loads((store / "alice.json").read_text())
    assert data["name"] == "alice" and data["count"] == 2
    np.testing.assert_allclose(data["mean"], (e1 + e2) / 2, atol=1e-6)
    # The first instance picks the update up from disk.
    refined = first.identify(pcm("en-us_2.wav"))
    unit = (e1 + e2) / np.linalg.norm(e1 + e2)
    assert refined.name == "alice"
    assert abs(refined.score - float(unit @ e2)) < 1e-5
    assert first.remove("alice") and not first.remove("alice")
    assert second.speakers() == []


def test_names_are_stored_safely(tmp_path: Path, pcm: Pcm) -> None:
    vp = make(tmp_path)
    x = pcm("en-us_1.wav")
    long_cjk = "欧阳" * 32  # 64 characters, 576 bytes once quoted
    for name in ("小明", "../../etc/passwd", " Anne-Marie O'Neil ", long_cjk):
        vp.enroll(name, x)
    assert vp.speakers() == ["../../etc/passwd", "Anne-Marie O'Neil", "小明", long_cjk]
    assert max(len(p.name.encode()) for p in tmp_path.iterdir()) <= 255
    assert all(p.parent == tmp_path for p in tmp_path.iterdir())
    assert make(tmp_path).identify(pcm("en-us_2.wav")).name in vp.speakers()
    for bad, message in (
        ("", "name is empty"),
        ("a\nb", "control characters"),
        ("x" * 65, "longer than 64"),
    ):
        with pytest.raises(ProviderError, match=message):
            vp.enroll(bad, x)


def test_voices_from_other_weights_are_ignored(
    tmp_path: Path, pcm: Pcm, caplog: pytest.LogCaptureFixture
) -> None:
    vp = make(tmp_path)
    vp.enroll("alice", pcm("en-us_1.wav"))
    data = json.loads((tmp_path / "alice.json").read_text())
    data["model"] = "some-other-encoder"
    (tmp_path / "alice.json").write_text(json.dumps(data))
    assert vp.speakers() == []
    # A damaged file is logged (once) and skipped; enrolling that name says what to do.
    vp.enroll("carol", pcm("en+f3_1.wav"))
    (tmp_path / "bob.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert vp.speakers() == ["carol"]
        assert vp.identify(pcm("en+f3_2.wav")).name == "carol"
    assert [r.getMessage() for r in caplog.records if "bob.json" in r.getMessage()] == [
        f"voiceprint 'resemblyzer': corrupt voiceprint file {tmp_path / 'bob.json'}: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1); "
        "delete it and enrol again"
    ]
    with pytest.raises(ProviderError, match=r"corrupt voiceprint file .*bob\.json.*delete it"):
        vp.enroll("bob", pcm("en-us_1.wav"))


def test_bad_audio_is_refused_precisely(tmp_path: Path, pcm: Pcm) -> None:
    vp = make(tmp_path)
    x = pcm("en-us_2.wav")
    with pytest.raises(
        ProviderError,
        match=r"utterance too short: 0\.\d\d s of speech after "
        r"dropping pauses \(from 0\.60 s of audio\), at least 1\.00 s needed "
        r"\(option min_seconds\)",
    ):
        vp.embed(x[:9600])
    # Long, but mostly silence: what counts is the speech left after trimming.
    mostly_silent = np.concatenate([x[:8000], np.zeros(48000, np.int16)])
    with pytest.raises(ProviderError, match=r"from 3\.50 s of audio"):
        vp.identify(mostly_silent)
    with pytest.raises(ProviderError, match="silent"):
        vp.enroll("alice", np.zeros(32000, np.int16))
    with pytest.raises(ProviderError, match="expected int16"):
        vp.embed(x.astype(np.float32))
    with pytest.raises(ProviderError, match="expected mono"):
        vp.embed(np.stack([x, x], axis=1))
    assert vp.speakers() == []
    # A lower min_seconds accepts the short clip.
    assert make(tmp_path, min_seconds=0.5).embed(x[:9600]).shape == (256,)


def test_options_are_validated_by_the_spec() -> None:
    spec = default_registry().get("voiceprint", "resemblyzer")
    with pytest.raises(
        ConfigError, match=r"^voiceprint\.options\.threshold: must be in 0\.0\.\.1\.0, got 80$"
    ):
        spec.validate({"threshold": 80}, path="voiceprint.options")
    with pytest.raises(ConfigError, match="unknown key 'treshold'"):
        spec.validate({"treshold": 0.8}, path="voiceprint.options")
    assert spec.validate({}).threshold == 0.80


def test_default_store_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_store_dir() == tmp_path / "xiaozhi" / "voiceprints"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_dir() == tmp_path / "home" / ".local/share/xiaozhi/voiceprints"
    vp = ResemblyzerVoiceprint()
    assert vp.store_dir == tmp_path / "home" / ".local/share/xiaozhi/voiceprints"


def test_missing_weights_file_is_a_precise_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"weights file .*nope\.pt does not exist"):
        make(tmp_path, weights_path=str(tmp_path / "nope.pt"))


def test_thread_safe_enrolment_and_identification(tmp_path: Path, pcm: Pcm) -> None:
    vp = make(tmp_path)
    x1, x2 = pcm("en-us_1.wav"), pcm("en-us_2.wav")
    vp.enroll("bob", pcm("en+f3_1.wav"))
    expected = vp.embed(x2)

    def work(k: int) -> np.ndarray | None:
        if k % 2:
            vp.enroll("alice", x1 if k % 4 == 1 else x2)
            return None
        return vp.embed(x2)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(12)))
    for r in results:
        if r is not None:
            np.testing.assert_allclose(r, expected, atol=1e-6)  # no shared mutable state
    data = json.loads((tmp_path / "alice.json").read_text())
    assert data["count"] == 6  # no enrolment lost
    assert vp.identify(x2).name == "alice"


def test_readers_never_see_half_written_files(
    tmp_path: Path, pcm: Pcm, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader = make(tmp_path), make(tmp_path)  # e.g. two processes on one store
    x1, x2 = pcm("en-us_1.wav"), pcm("en-us_2.wav")
    writer.enroll("alice", x1)
    stop = threading.Event()
    names: list[str | None] = []

    def read() -> None:
        while not stop.is_set():
            names.extend(reader.speakers())

    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(1) as pool:
        job = pool.submit(read)
        for _ in range(5):
            writer.enroll("alice", x2)
        stop.set()
        job.result()
    assert names and set(names) == {"alice"}
    assert not caplog.records
    assert reader.identify(x2).name == "alice"


def _write_wav(path: Path, samples: np.ndarray, rate: int, channels: int) -> None:
    frames = np.repeat(samples[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.astype("<i2").tobytes())


def test_enroll_wav_any_rate_and_channels(tmp_path: Path, pcm: Pcm, data_dir: Path) -> None:
    vp = make(tmp_path / "store")
    # A 44.1 kHz stereo version of a committed 16 kHz utterance.
    x = pcm("en-us_1.wav")
    hi = np.clip(np.round(resample(x / 32768, 16000, 44100) * 32768), -32768, 32767)
    _write_wav(tmp_path / "alice44k.wav", hi.astype(np.int16), 44100, 2)
    seconds = enroll_wav(vp, "alice", tmp_path / "alice44k.wav")
    assert abs(seconds - len(x) / 16000) < 0.01
    assert enroll_wav(vp, "bob", data_dir / "en+f3_1.wav") == pytest.approx(
        len(pcm("en+f3_1.wav")) / 16000
    )
    assert vp.identify(pcm("en-us_2.wav")).name == "alice"
    assert vp.identify(pcm("en+f3_2.wav")).name == "bob"
    # Resampling barely changes the voiceprint.
    stored = np.asarray(json.loads((tmp_path / "store" / "alice.json").read_text())["mean"])
    assert float(stored @ vp.embed(x)) > 0.99


async def test_through_the_core_executor_as_cpu(tmp_path: Path, pcm: Pcm) -> None:
    registry = default_registry()
    assert not [f for f in registry.failures if "voiceprint" in str(f)]
    spec = registry.get("voiceprint", "resemblyzer")
    assert spec.role is Role.VOICEPRINT and spec.execution is Execution.CPU
    executor = Executor(ExecutorSettings(cpu_workers=2))
    try:
        options = spec.validate({"store_dir": str(tmp_path), "threshold": 0.8})
        vp = await build(spec, options, executor)  # the policy check runs here
        threads: list[str] = []
        original = vp.instance.embed

        def spy(pcm16: np.ndarray) -> np.ndarray:
            threads.append(threading.current_thread().name)
            return original(pcm16)

        vp.instance.embed = spy
        await asyncio.gather(
            vp.enroll("alice", pcm("en-us_1.wav")), vp.enroll("bob", pcm("en+f3_1.wav"))
        )
        assert await vp.speakers() == ["alice", "bob"]
        a, b = await asyncio.gather(
            vp.identify(pcm("en-us_2.wav")), vp.identify(pcm("en+f3_2.wav"))
        )
        assert (a.name, b.name) == ("alice", "bob")
        assert threads and all(t.startswith("xiaozhi-cpu") for t in threads)
    finally:
        executor.shutdown()


async def test_process_pool_workers_share_the_store(tmp_path: Path, pcm: Pcm) -> None:
    spec = default_registry().get("voiceprint", "resemblyzer")
    executor = Executor(ExecutorSettings(kind="process", cpu_workers=2))
    try:
        vp = await build(spec, spec.validate({"store_dir": str(tmp_path)}), executor)
        await asyncio.gather(*(vp.enroll("alice", pcm("en-us_1.wav")) for _ in range(3)))
        matches = await asyncio.gather(*(vp.identify(pcm("en-us_2.wav")) for _ in range(4)))
        assert {m.name for m in matches} == {"alice"}
        assert json.loads((tmp_path / "alice.json").read_text())["count"] == 3
    finally:
        executor.shutdown()
