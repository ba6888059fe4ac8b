"""The numpy encoder reproduces the original Resemblyzer (torch) embeddings.

``data/reference_embeddings.json`` was written by ``data/make_reference.py`` with the
original package (torch, librosa, webrtcvad) in a separate virtual environment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from xiaozhi_voiceprint import _audio
from xiaozhi_voiceprint._encoder import load_encoder
from xiaozhi_voiceprint.plugin import ResemblyzerOptions
from xiaozhi_voiceprint.voiceprint import ResemblyzerVoiceprint

pytestmark = pytest.mark.slow

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_embeddings.json").read_text())


def _cases(variant: str) -> list[dict[str, Any]]:
    return [c for c in REFERENCE["cases"] if c["variant"] == variant]


def _compare(mine: np.ndarray, case: dict[str, Any]) -> tuple[float, float]:
    ref = np.asarray(case["embedding"], np.float64)
    cosine = float(mine @ ref / (np.linalg.norm(mine) * np.linalg.norm(ref)))
    max_abs = float(np.max(np.abs(mine - ref)))
    print(f"{case['wav']:20s} {case['variant']:16s} cosine={cosine:.7f} max|diff|={max_abs:.2e}")
    return cosine, max_abs


@pytest.mark.parametrize("case", _cases("network"), ids=lambda c: c["wav"])
def test_network_matches_reference(
    case: dict[str, Any],
    pcm: Callable[[str], np.ndarray],
    record_property: Callable[[str, object], None],
) -> None:
    """Same input as the reference (volume-normalised, untrimmed): identical output."""
    wav = _audio.normalize_volume(pcm(case["wav"]) / 32768.0)
    mine = load_encoder().embed_prepared(wav)
    assert mine.shape == (256,) and abs(float(np.linalg.norm(mine)) - 1) < 1e-5
    cosine, max_abs = _compare(mine, case)
    record_property("cosine", cosine)
    record_property("max_abs_diff", max_abs)
    assert cosine >= 0.9999
    assert max_abs < 1e-5


def _padded(x: np.ndarray) -> np.ndarray:
    p = REFERENCE["padding"]
    half = len(x) // 2
    z = np.zeros
    return np.concatenate(
        [z(p["lead"], x.dtype), x[:half], z(p["middle"], x.dtype), x[half:], z(p["tail"], x.dtype)]
    )


@pytest.mark.parametrize(
    "case",
    _cases("pipeline") + _cases("pipeline_padded"),
    ids=lambda c: f"{c['wav']}-{c['variant']}",
)
def test_provider_matches_reference_pipeline(
    case: dict[str, Any],
    pcm: Callable[[str], np.ndarray],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """The provider end to end against Resemblyzer's full preprocessing.

    Resemblyzer trims pauses with webrtcvad, the provider with an energy detector
    (see ``_audio.trim_long_silences``): their cuts differ by a window or two, which can
    change the number of 1.6 s partials by one, hence the looser bound. Without the
    silence padding, a provider that did not trim at all would score about 0.90 here.
    """
    vp = ResemblyzerVoiceprint(ResemblyzerOptions(store_dir=str(tmp_path)))
    x = pcm(case["wav"])
    mine = vp.embed(_padded(x) if case["variant"] == "pipeline_padded" else x)
    cosine, max_abs = _compare(mine, case)
    record_property("cosine", cosine)
    record_property("max_abs_diff", max_abs)
    assert cosine >= 0.98


def test_trimming_is_what_makes_padded_audio_match(
    pcm: Callable[[str], np.ndarray], tmp_path: Path
) -> None:
    case = _cases("pipeline_padded")[0]
    untrimmed = ResemblyzerVoiceprint(
        ResemblyzerOptions(store_dir=str(tmp_path), trim_silence=False)
    )
    cosine, _ = _compare(untrimmed.embed(_padded(pcm(case["wav"]))), case)
    assert cosine < 0.95
