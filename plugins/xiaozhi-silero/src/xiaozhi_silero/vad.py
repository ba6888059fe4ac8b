"""The ``silero`` VAD provider: Silero VAD (ONNX) on ONNX Runtime, batched across streams.

The 16 kHz model is recurrent. Each call takes, per stream, 64 samples of context (the
end of that stream's previous window) followed by the new 512-sample window, plus the
recurrent state ``(2, batch, 128)``, and returns one speech probability per stream and
the new state. The provider keeps no per-stream data: a stream's :class:`SileroState`
(recurrent state + context) is passed in and returned, so windows of any set of streams
can be batched into one ``session.run`` and the provider can be shared by all sessions
and pool threads (``InferenceSession.run`` is thread-safe).

Example:
    >>> import numpy as np
    >>> vad = SileroVAD(SileroOptions())
    >>> states = [vad.initial_state(), vad.initial_state()]
    >>> probs, states = vad.speech_probs(np.zeros((2, 512), np.float32), states)
    >>> probs.shape, probs.dtype, bool(probs.max() < 0.1)
    ((2,), dtype('float32'), True)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import onnxruntime as ort

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.types import SegmentationDefaults

from .plugin import SileroOptions

__all__ = ["SileroOptions", "SileroState", "SileroVAD", "packaged_model_path"]

SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
STATE_SHAPE = (2, 128)
_INSTALL_HINT = "install it with: pip install --no-deps silero-vad (torch is not needed)"


@dataclass(frozen=True, eq=False)
class SileroState:
    """One stream's recurrent state: ``rnn`` (2, 128) and the last ``CONTEXT`` samples
    of its previous window. Picklable (works with a process pool). Treat as immutable."""

    rnn: np.ndarray
    context: np.ndarray


def packaged_model_path() -> Path:
    """``silero_vad/data/silero_vad.onnx`` of the installed ``silero-vad`` package.

    Found with ``importlib.util.find_spec`` without importing the package (its
    ``__init__`` imports torch).
    """
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(
            "vad provider 'silero': the PyPI package 'silero-vad', which ships the model "
            f"file, is not installed; {_INSTALL_HINT}, or set vad.options.model_path to a "
            "silero_vad.onnx file"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "silero_vad.onnx"
        if candidate.is_file():
            return candidate
    raise ProviderError(
        "vad provider 'silero': the installed 'silero-vad' package has no "
        f"data/silero_vad.onnx (looked in {list(spec.submodule_search_locations)}); "
        f"reinstall it ({_INSTALL_HINT}) or set vad.options.model_path"
    )


class SileroVAD:
    """``cpu`` VAD provider (capability ``batch``). Built once per process."""

    sample_rate = SAMPLE_RATE
    window = WINDOW

    def __init__(self, options: SileroOptions | None = None) -> None:
        self.options = options or SileroOptions()
        if self.options.model_path is not None:
            path = Path(self.options.model_path).expanduser()
            if not path.is_file():
                raise ProviderError(
                    f"vad provider 'silero': model_path {str(path)!r} is not a file; point "
                    "vad.options.model_path at a silero_vad.onnx file, or remove it to use "
                    "the model of the 'silero-vad' package"
                )
        else:
            path = packaged_model_path()
        self.model_path = path
        so = ort.SessionOptions()
        # The core's worker pool provides the parallelism: one thread per call.
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # the packaged model makes ORT warn about unused initializers
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph...)
            raise ProviderError(
                f"vad provider 'silero': ONNX Runtime cannot load {str(path)!r}: {exc}"
            ) from exc
        inputs = {i.name for i in self._session.get_inputs()}
        if not {"input", "state"} <= inputs:
            raise ProviderError(
                f"vad provider 'silero': {str(path)!r} has inputs {sorted(inputs)}; expected "
                "'input', 'state' and 'sr' (a Silero VAD v5 or later ONNX model)"
            )
        self._output_names = [o.name for o in self._session.get_outputs()][:2]
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64) if "sr" in inputs else None

    def initial_state(self) -> SileroState:
        """A fresh state for a new stream (or after a reset)."""
        return SileroState(np.zeros(STATE_SHAPE, np.float32), np.zeros(CONTEXT, np.float32))

    @property
    def segmentation(self) -> SegmentationDefaults:
        """How the core should cut this VAD's probabilities into utterances: the
        segmentation options of this provider (``session.*`` settings still win)."""
        o = self.options
        return SegmentationDefaults(
            threshold=o.threshold,
            release_threshold=o.release_threshold,
            silence_ms=o.min_silence_ms,
            min_speech_ms=o.min_speech_ms,
            pre_roll_ms=o.pre_roll_ms,
        )

    def speech_probs(
        self, windows: np.ndarray, states: Sequence[SileroState]
    ) -> tuple[np.ndarray, list[SileroState]]:
        """Speech probabilities of ``windows`` (n, 512) float32 in [-1, 1], window ``i``
        belonging to the stream whose state is ``states[i]``; one inference call."""
        windows = np.asarray(windows)
        if windows.ndim != 2 or windows.shape[1] != WINDOW:
            raise ValueError(
                f"silero VAD: windows must have shape (n, {WINDOW}), got {windows.shape}"
            )
        if not np.issubdtype(windows.dtype, np.floating):
            raise ValueError(
                f"silero VAD: windows must be float audio in [-1, 1], got {windows.dtype} "
                "(convert int16 with pcm / 32768)"
            )
        n = windows.shape[0]
        if len(states) != n:
            raise ValueError(f"silero VAD: {n} windows but {len(states)} states")
        if n == 0:
            return np.zeros(0, np.float32), []
        x = np.empty((n, CONTEXT + WINDOW), np.float32)
        x[:, CONTEXT:] = windows
        x[:, :CONTEXT] = [s.context for s in states]
        feeds: dict[str, Any] = {
            "input": x,
            "state": np.stack([s.rnn for s in states], axis=1).astype(np.float32, copy=False),
        }
        if self._sr is not None:
            feeds["sr"] = self._sr
        try:
            out, state = self._session.run(self._output_names, feeds)
        except Exception as exc:
            raise ProviderError(
                f"vad provider 'silero': inference failed on a batch of {n} windows: {exc}"
            ) from exc
        probs = np.asarray(out, np.float32).reshape(n)
        rnn = np.ascontiguousarray(np.asarray(state, np.float32).transpose(1, 0, 2))
        context = x[:, -CONTEXT:].copy()
        return probs, [SileroState(rnn[i], context[i]) for i in range(n)]
