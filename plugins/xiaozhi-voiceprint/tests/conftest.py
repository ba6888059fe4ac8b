"""Fixtures shared by the xiaozhi-voiceprint tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from xiaozhi_core.audio import read_wav, wav_rate

DATA = Path(__file__).parent / "data"


def read_pcm16(name: str) -> np.ndarray:
    """A committed test WAV (16 kHz mono 16-bit) as an int16 array."""
    assert wav_rate(DATA / name) == 16000
    return read_wav(DATA / name, None)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def pcm() -> Callable[[str], np.ndarray]:
    return read_pcm16
