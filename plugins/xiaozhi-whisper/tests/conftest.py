"""Fixtures: real speech from espeak-ng, a word error rate, and one model of each kind per
session (the ``base`` model joined into a temporary cache, never the user's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest

from xiaozhi_core.audio import read_wav

RATE = 16000

#: Plain sentences without digits (Whisper writes numbers as digits, espeak reads words).
SENTENCES = [
    "Please turn on the lights in the kitchen.",
    "What is the weather like in Paris today?",
    "The quick brown fox jumps over the lazy dog.",
]


def normalise(text: str) -> str:
    """Lower case, no punctuation (apostrophes kept), single spaces.

    >>> normalise("  What's the weather, today?")
    "what's the weather today"
    """
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate of the hypotheses, after :func:`normalise`.

    >>> word_error_rate(["Turn on the lights."], ["turn on the light"])
    0.25
    """
    return float(
        jiwer.wer(
            [normalise(r) for r in references], [normalise(h) or "<empty>" for h in hypotheses]
        )
    )


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
def wer() -> Callable[[list[str], list[str]], float]:
    return word_error_rate


@pytest.fixture(scope="session")
def say(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., np.ndarray]:
    """``say(text, voice="en-us")``: the text spoken by espeak-ng, int16 16 kHz mono."""
    exe = shutil.which("espeak-ng")
    assert exe, "these tests synthesise speech with espeak-ng: apt-get install -y espeak-ng"
    folder = tmp_path_factory.mktemp("espeak")
    made: dict[tuple[str, str], np.ndarray] = {}

    def speak(text: str, voice: str = "en-us") -> np.ndarray:
        if (text, voice) not in made:
            out = folder / f"{len(made)}.wav"
            subprocess.run(
                [exe, "-v", voice, "-s", "140", "-w", str(out), text],
                check=True,
                capture_output=True,
                timeout=60,
            )
            made[(text, voice)] = read_wav(out, RATE)
        return made[(text, voice)]

    return speak


@pytest.fixture(scope="session")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("whisper-cache")


@pytest.fixture(scope="session")
def tiny() -> Iterator[object]:
    from xiaozhi_whisper.asr import WhisperASR
    from xiaozhi_whisper.plugin import WhisperOptions

    asr = WhisperASR(WhisperOptions(model="tiny.en"))
    yield asr
    asr.close()


@pytest.fixture(scope="session")
def base(base_cache: Path) -> Iterator[object]:
    from xiaozhi_whisper.asr import WhisperASR
    from xiaozhi_whisper.plugin import WhisperOptions

    asr = WhisperASR(WhisperOptions(model="base", cache_dir=str(base_cache)))
    yield asr
    asr.close()
