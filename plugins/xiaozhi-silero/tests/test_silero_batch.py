"""Batching windows of many streams into one call gives each stream's solo results."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest
from xiaozhi_silero.plugin import SileroOptions
from xiaozhi_silero.vad import SileroState, SileroVAD, packaged_model_path

from xiaozhi_core.errors import ConfigError, ProviderError

W = 512
SR = 16000


def windows_of(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // W
    return audio[: n * W].reshape(n, W).astype(np.float32)


def solo(vad: SileroVAD, windows: np.ndarray) -> tuple[np.ndarray, SileroState]:
    state = vad.initial_state()
    probs = []
    for w in windows:
        p, (state,) = vad.speech_probs(w[None, :], [state])
        probs.append(p[0])
    return np.array(probs, np.float32), state


def five_streams(speech: Callable[..., np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(4 * SR) / SR
    talk = speech("Turn on the kitchen light and set the volume to fifty percent.")
    other = speech("What is the weather like tomorrow in Shanghai?", voice="en-us", speed=170)
    streams = [
        np.concatenate([np.zeros(SR // 2), talk, np.zeros(SR // 3)]),
        np.concatenate([rng.standard_normal(SR) * 0.01, other, rng.standard_normal(SR) * 0.01]),
        0.2 * np.sin(2 * np.pi * (200 + 300 * t) * t),  # chirp
        rng.standard_normal(3 * SR) * 0.05,  # white noise
        np.concatenate([other[: 2 * SR] * 0.5, np.zeros(SR), talk[: 2 * SR]]),
    ]
    return [windows_of(s) for s in streams]


@pytest.mark.slow
def test_batched_equals_solo_with_streams_joining_and_leaving(
    vad: SileroVAD, speech: Callable[..., np.ndarray]
) -> None:
    streams = five_streams(speech)
    reference = [solo(vad, w) for w in streams]
    joins = [0, 7, 20, 33, 50]  # tick at which each stream joins; it leaves when it ends
    ticks = max(j + len(w) for j, w in zip(joins, streams, strict=True))
    states = [vad.initial_state() for _ in streams]
    got: list[list[float]] = [[] for _ in streams]
    rng = np.random.default_rng(11)
    batch_sizes = set()
    for tick in range(ticks):
        active = [
            k for k, (j, w) in enumerate(zip(joins, streams, strict=True)) if j <= tick < j + len(w)
        ]
        rng.shuffle(active)  # the order inside a batch must not matter
        batch = np.stack([streams[k][tick - joins[k]] for k in active])
        probs, new_states = vad.speech_probs(batch, [states[k] for k in active])
        batch_sizes.add(len(active))
        for k, p, s in zip(active, probs, new_states, strict=True):
            got[k].append(float(p))
            states[k] = s
    assert batch_sizes == {1, 2, 3, 4, 5}
    for k, (ref_probs, ref_state) in enumerate(reference):
        assert len(got[k]) == len(ref_probs) > 90  # each stream is several seconds long
        # Observed bit-identical on x86-64 (ORT's CPU kernels compute each batch row the
        # same way); the tolerance only leaves room for other CPUs' kernels.
        np.testing.assert_allclose(np.array(got[k], np.float32), ref_probs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(states[k].rnn, ref_state.rnn, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(states[k].context, ref_state.context)
    # The streams are different: the check above is not comparing identical inputs.
    assert max(reference[0][0]) > 0.9 and max(reference[3][0]) < 0.5


@pytest.mark.slow
def test_state_is_returned_not_mutated_and_picklable(vad: SileroVAD) -> None:
    rng = np.random.default_rng(5)
    windows = (rng.standard_normal((3, W)) * 0.1).astype(np.float32)
    start = vad.initial_state()
    p1, (s1,) = vad.speech_probs(windows[:1], [start])
    assert not start.rnn.any() and not start.context.any()
    assert start.rnn.shape == (2, 128) and start.context.shape == (64,)
    np.testing.assert_array_equal(s1.context, windows[0, -64:])
    # Replaying from a pickled copy continues identically (process pools pickle states).
    copy = pickle.loads(pickle.dumps(s1))
    a, _ = vad.speech_probs(windows[1:2], [s1])
    b, _ = vad.speech_probs(windows[1:2], [copy])
    np.testing.assert_array_equal(a, b)
    # And the state matters: the same window from a fresh state gives another answer.
    c, _ = vad.speech_probs(windows[1:2], [vad.initial_state()])
    assert a[0] != c[0]


@pytest.mark.slow
def test_input_checks(vad: SileroVAD) -> None:
    probs, states = vad.speech_probs(np.zeros((0, W), np.float32), [])
    assert probs.shape == (0,) and states == []
    with pytest.raises(ValueError, match=r"shape \(n, 512\)"):
        vad.speech_probs(np.zeros((1, 256), np.float32), [vad.initial_state()])
    with pytest.raises(ValueError, match="float audio"):
        vad.speech_probs(np.zeros((1, W), np.int16), [vad.initial_state()])
    with pytest.raises(ValueError, match="2 windows but 1 states"):
        vad.speech_probs(np.zeros((2, W), np.float32), [vad.initial_state()])


def test_model_is_found_without_importing_silero_vad() -> None:
    import sys

    path = packaged_model_path()
    assert path.name == "silero_vad.onnx" and path.parent.name == "data"
    assert "silero_vad" not in sys.modules  # its __init__ would import torch


def test_bad_model_path_is_a_precise_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ProviderError, match="model_path .*nope.onnx.* is not a file"):
        SileroVAD(SileroOptions(model_path=str(missing)))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ProviderError, match="ONNX Runtime cannot load"):
        SileroVAD(SileroOptions(model_path=str(garbage)))


@pytest.mark.slow
def test_model_path_override(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "my_vad.onnx"
    shutil.copy(packaged_model_path(), copy)
    vad = SileroVAD(SileroOptions(model_path=str(copy)))
    assert vad.model_path == copy
    probs, _ = vad.speech_probs(np.zeros((1, W), np.float32), [vad.initial_state()])
    assert probs[0] < 0.1


def test_option_validation_through_the_spec() -> None:
    from xiaozhi_silero.plugin import xiaozhi_providers

    (spec,) = xiaozhi_providers()
    with pytest.raises(ConfigError, match="vad.options.trheshold: unknown key"):
        spec.validate({"trheshold": 0.5}, path="vad.options")
    with pytest.raises(ConfigError, match="must be >= 0"):
        spec.validate({"pre_roll_ms": -5})
    with pytest.raises(ConfigError, match="expected an integer"):
        spec.validate({"min_speech_ms": "long"})
    assert spec.validate({"threshold": 1, "release_threshold": 0.2}).threshold == 1.0
