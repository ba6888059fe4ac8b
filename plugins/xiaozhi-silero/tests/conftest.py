"""Shared fixtures: one model per test session, and real speech from espeak-ng."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from xiaozhi_core.audio import int16_to_float, read_wav

SR = 16000


def espeak(text: str, tmp_dir: Path, *, voice: str = "en", speed: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float32 at 16 kHz (trimmed of edge silence)."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required by these tests: apt-get install -y espeak-ng"
    out = tmp_dir / f"speech-{abs(hash((text, voice, speed)))}.wav"
    subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "-w", str(out), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    audio = int16_to_float(read_wav(out, SR))
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="session")
def vad():  # type: ignore[no-untyped-def]
    from xiaozhi_silero.vad import SileroVAD

    return SileroVAD()


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., np.ndarray]:
    tmp = tmp_path_factory.mktemp("espeak")
    cache: dict[tuple[str, str, int], np.ndarray] = {}

    def make(text: str, voice: str = "en", speed: int = 150) -> np.ndarray:
        key = (text, voice, speed)
        if key not in cache:
            cache[key] = espeak(text, tmp, voice=voice, speed=speed)
        return cache[key]

    return make
