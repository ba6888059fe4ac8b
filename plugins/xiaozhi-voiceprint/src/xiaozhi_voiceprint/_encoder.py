"""Resemblyzer's speaker encoder re-implemented in numpy (no torch at run time).

The network (a GE2E-trained d-vector model) is a 3-layer unidirectional LSTM (40 mel
inputs, 256 hidden units) whose last hidden state of the top layer goes through a
256 x 256 linear layer, a ReLU and an L2 normalisation. An utterance is cut into
*partial utterances* of 160 frames (1.6 s), about 1.3 per second, each is embedded,
and the utterance embedding is the L2-normalised mean of the partial embeddings.

The weights are the ones Resemblyzer ships (``resemblyzer/pretrained.pt``), read by
:mod:`xiaozhi_voiceprint._torchload`.

Example:
    >>> encoder = load_encoder()
    >>> wav = 0.1 * np.sin(2 * np.pi * 150 * np.arange(16000) / 16000)
    >>> embedding = encoder.embed_prepared(wav)
    >>> embedding.shape, round(float(np.linalg.norm(embedding)), 4), bool(embedding.min() >= 0)
    ((256,), 1.0, True)
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from os import PathLike
from pathlib import Path

import numpy as np

from . import _audio
from ._torchload import CheckpointError, load_checkpoint

__all__ = [
    "EMBEDDING_SIZE",
    "PARTIAL_FRAMES",
    "ResemblyzerEncoder",
    "WeightsError",
    "default_weights_path",
    "load_encoder",
    "partial_slices",
]

N_LAYERS = 3
HIDDEN_SIZE = 256
EMBEDDING_SIZE = 256
#: Frames per partial utterance (1.6 s).
PARTIAL_FRAMES = 160
#: Partial utterances per second of audio, and how much of a last, incomplete partial
#: must be real audio for it to count (Resemblyzer's defaults).
PARTIALS_RATE = 1.3
MIN_COVERAGE = 0.75


class WeightsError(Exception):
    """The encoder weights are missing or not the expected network."""


def default_weights_path() -> Path:
    """``pretrained.pt`` inside the installed ``resemblyzer`` distribution.

    Found through the distribution's file list, so resemblyzer (which imports torch,
    librosa and webrtcvad) is never imported.
    """
    try:
        dist = metadata.distribution("resemblyzer")
    except metadata.PackageNotFoundError:
        raise WeightsError(
            "the 'resemblyzer' package, which ships the encoder weights, is not installed; "
            "install it without its torch dependency: pip install --no-deps resemblyzer"
        ) from None
    for file in dist.files or []:
        if file.name == "pretrained.pt" and file.parent.name == "resemblyzer":
            return Path(str(dist.locate_file(file)))
    raise WeightsError(
        f"resemblyzer {dist.version} is installed but its file list has no "
        "resemblyzer/pretrained.pt; reinstall it: pip install --no-deps --force-reinstall "
        "resemblyzer"
    )


def partial_slices(n_samples: int) -> list[tuple[int, int]]:
    """Frame ranges ``[start, stop)`` of the partial utterances of an ``n_samples`` wav.

    Windows of 160 frames start every ``round(16000 / 1.3 / 160) = 77`` frames and
    cover the whole utterance; the last one is dropped when less than 75 % of it
    would be real audio, unless it is the only one.

    >>> partial_slices(48000)
    [(0, 160), (77, 237), (154, 314)]
    >>> partial_slices(8000)
    [(0, 160)]
    """
    hop = _audio.HOP_LENGTH
    n_frames = -(-(n_samples + 1) // hop)
    step = round(_audio.SAMPLE_RATE / PARTIALS_RATE / hop)
    starts = range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)
    slices = [(s, s + PARTIAL_FRAMES) for s in starts]
    last_start = slices[-1][0] * hop
    coverage = (n_samples - last_start) / (PARTIAL_FRAMES * hop)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices.pop()
    return slices


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large |x|.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class _LSTMLayer:
    w_ih_t: np.ndarray  # (inputs, 4 * hidden), gates ordered input, forget, cell, output
    bias: np.ndarray  # (4 * hidden,) = bias_ih + bias_hh
    # Recurrent weights, one (hidden, hidden) matrix per gate: four small products per
    # step are faster than one wide one (the matrices stay in cache and BLAS does not
    # spin up threads for them, which matters when pool threads run in parallel).
    w_hh_t: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class ResemblyzerEncoder:
    """The speaker encoder. Immutable after construction, safe to share across threads."""

    def __init__(self, state: Mapping[str, np.ndarray], *, source: str = "") -> None:
        self.source = source
        layers = []
        for k in range(N_LAYERS):
            inputs = _audio.N_MELS if k == 0 else HIDDEN_SIZE
            w_ih = _param(state, f"lstm.weight_ih_l{k}", (4 * HIDDEN_SIZE, inputs))
            w_hh = _param(state, f"lstm.weight_hh_l{k}", (4 * HIDDEN_SIZE, HIDDEN_SIZE))
            b = _param(state, f"lstm.bias_ih_l{k}", (4 * HIDDEN_SIZE,)) + _param(
                state, f"lstm.bias_hh_l{k}", (4 * HIDDEN_SIZE,)
            )
            w_hh_t = w_hh.T
            per_gate = tuple(
                _frozen(w_hh_t[:, g * HIDDEN_SIZE : (g + 1) * HIDDEN_SIZE]) for g in range(4)
            )
            layers.append(_LSTMLayer(_frozen(w_ih.T), _frozen(b), per_gate))  # type: ignore[arg-type]
        self._layers = tuple(layers)
        self._linear_t = _frozen(_param(state, "linear.weight", (EMBEDDING_SIZE, HIDDEN_SIZE)).T)
        self._linear_b = _frozen(_param(state, "linear.bias", (EMBEDDING_SIZE,)))
        digest = hashlib.sha256()
        for name in sorted(state):
            if name.startswith(("lstm.", "linear.")):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(state[name], np.float32).tobytes())
        #: Identifies the weights; stored with enrolments so that embeddings from other
        #: weights are never compared with these.
        self.fingerprint = "resemblyzer-" + digest.hexdigest()[:16]

    # -- network ---------------------------------------------------------------------
    def forward(self, mels: np.ndarray) -> np.ndarray:
        """Embeddings of a batch of partials: ``(batch, frames, 40)`` -> ``(batch, 256)``.

        Each row is non-negative (ReLU) and L2-normalised.
        """
        x = np.asarray(mels, np.float32)
        if x.ndim != 3 or x.shape[2] != _audio.N_MELS:
            raise ValueError(f"expected mels of shape (batch, frames, 40), got {x.shape}")
        batch, steps, _ = x.shape
        x = np.ascontiguousarray(x.transpose(1, 0, 2))  # time-major: (steps, batch, 40)
        h = np.zeros((batch, HIDDEN_SIZE), np.float32)
        for index, layer in enumerate(self._layers):
            top = index == N_LAYERS - 1
            # Input contributions of all steps at once: (steps, batch, 4H).
            gates_in = x @ layer.w_ih_t + layer.bias
            gi, gf, gc, go = (
                gates_in[..., g * HIDDEN_SIZE : (g + 1) * HIDDEN_SIZE] for g in range(4)
            )
            whi, whf, whc, who = layer.w_hh_t
            h = np.zeros((batch, HIDDEN_SIZE), np.float32)
            c = np.zeros((batch, HIDDEN_SIZE), np.float32)
            outputs = None if top else np.empty((steps, batch, HIDDEN_SIZE), np.float32)
            for t in range(steps):
                i = _sigmoid(gi[t] + h @ whi)
                f = _sigmoid(gf[t] + h @ whf)
                cell = np.tanh(gc[t] + h @ whc)
                o = _sigmoid(go[t] + h @ who)
                c = f * c + i * cell
                h = o * np.tanh(c)
                if outputs is not None:
                    outputs[t] = h
            if outputs is not None:
                x = outputs
        raw = np.maximum(h @ self._linear_t + self._linear_b, 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        out: np.ndarray = raw / np.maximum(norms, 1e-12)
        return out

    # -- utterances ------------------------------------------------------------------
    def embed_prepared(self, wav: np.ndarray) -> np.ndarray:
        """Embedding of a wav that is already volume-normalised (and trimmed if wanted).

        This is Resemblyzer's ``VoiceEncoder.embed_utterance`` with its default
        ``rate=1.3, min_coverage=0.75``.
        """
        wav = np.asarray(wav, np.float64)
        slices = partial_slices(len(wav))
        needed = slices[-1][1] * _audio.HOP_LENGTH
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)))
        mel = _audio.mel_spectrogram(wav)
        batch = np.stack([mel[a:b] for a, b in slices])
        partials = self.forward(batch)
        mean = partials.mean(axis=0)
        embedding: np.ndarray = (mean / np.linalg.norm(mean)).astype(np.float32)
        return embedding


def _param(state: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    value = state.get(name)
    if value is None:
        raise WeightsError(f"weights lack {name!r}; is this Resemblyzer's speaker encoder?")
    value = np.asarray(value)
    if value.shape != shape:
        raise WeightsError(f"weights {name!r} have shape {value.shape}, expected {shape}")
    return value.astype(np.float32)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, np.float32)
    a.setflags(write=False)
    return a


_CACHE: dict[Path, ResemblyzerEncoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(path: str | PathLike[str] | None = None) -> ResemblyzerEncoder:
    """Load (once per process and path) the encoder from a Resemblyzer checkpoint.

    ``path`` defaults to :func:`default_weights_path`. The checkpoint may be the full
    training checkpoint (``{"model_state": ...}``, as shipped) or a bare state dict.
    """
    resolved = Path(path).expanduser().resolve() if path else default_weights_path().resolve()
    with _CACHE_LOCK:
        encoder = _CACHE.get(resolved)
        if encoder is not None:
            return encoder
        try:
            checkpoint = load_checkpoint(resolved)
        except FileNotFoundError:
            raise WeightsError(f"encoder weights file {resolved} does not exist") from None
        except (OSError, CheckpointError) as exc:
            raise WeightsError(f"cannot read encoder weights {resolved}: {exc}") from exc
        state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise WeightsError(f"{resolved} holds no state dict (found {type(checkpoint)})")
        encoder = ResemblyzerEncoder(state, source=str(resolved))
        _CACHE[resolved] = encoder
        return encoder
