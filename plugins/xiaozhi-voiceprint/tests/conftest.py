"""Fixtures shared by the xiaozhi-voiceprint tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def read_pcm16(name: str) -> np.ndarray:
    """A committed test WAV (16 kHz mono 16-bit) as an int16 array."""
    import wave

    with wave.open(str(DATA / name), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def pcm() -> Callable[[str], np.ndarray]:
    return read_pcm16
