"""The torch-free checkpoint reader, on files written by real torch."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from xiaozhi_voiceprint._encoder import default_weights_path
from xiaozhi_voiceprint._torchload import CheckpointError, _LazyTensor, _Storage, load_checkpoint


@pytest.mark.parametrize("name", ["tiny_zip_format.pt", "tiny_legacy_format.pt"])
def test_both_torch_formats(data_dir: Path, name: str) -> None:
    state = load_checkpoint(data_dir / name)
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert state["matrix"].dtype == np.float32
    assert state["matrix"].tolist() == [[0, 1, 2], [3, 4, 5]]
    np.testing.assert_array_equal(state["base"], base)
    # A transposed view of the same storage (non-contiguous strides)...
    np.testing.assert_array_equal(state["transposed"], base.T)
    assert state["transposed"].flags.c_contiguous
    # ...and a view with a storage offset.
    np.testing.assert_array_equal(state["rows"], base[1:])
    assert state["ints"].dtype == np.int64 and state["ints"].tolist() == [1, -2, 3]
    assert state["half"].dtype == np.float16 and state["half"].tolist() == [0.5, -1.25]
    ones, extra = state["nested"]
    assert ones.dtype == np.float64 and ones.tolist() == [1.0, 1.0]
    assert extra == {"step": 3}
    # Arrays are owned copies, never views into the file buffer.
    assert all(state[k].flags.owndata for k in ("matrix", "transposed", "rows"))


def test_resemblyzer_checkpoint() -> None:
    checkpoint = load_checkpoint(default_weights_path())
    state = checkpoint["model_state"]
    assert isinstance(state, OrderedDict)
    assert state["lstm.weight_ih_l0"].shape == (1024, 40)
    assert state["lstm.weight_hh_l2"].shape == (1024, 256)
    assert state["linear.weight"].shape == (256, 256)
    # The LSTM tensors are views into one flat (cuDNN) storage at different offsets:
    # they must not alias each other.
    assert not np.array_equal(state["lstm.weight_hh_l1"], state["lstm.weight_ih_l1"])
    assert all(np.isfinite(v).all() for v in state.values())


def _zip_with_pickle(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    return path


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch /tmp/xiaozhi-voiceprint-pwned",))


def test_hostile_pickle_is_refused(tmp_path: Path) -> None:
    path = _zip_with_pickle(tmp_path, pickle.dumps({"w": _RunsCode()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to load global (posix|os)\.system"):
        load_checkpoint(path)
    # Protocol 4+ uses STACK_GLOBAL: same gate.
    path = _zip_with_pickle(tmp_path, pickle.dumps(_RunsCode(), protocol=5))
    with pytest.raises(CheckpointError, match="refusing to load global"):
        load_checkpoint(path)
    assert not Path("/tmp/xiaozhi-voiceprint-pwned").exists()


def test_tensor_overrunning_its_storage_is_refused() -> None:
    storage = _Storage("0", np.dtype(np.float32), 4, data=np.arange(4, dtype=np.float32))
    assert _LazyTensor(storage, 1, (3,), (1,)).materialise().tolist() == [1, 2, 3]
    with pytest.raises(CheckpointError, match="overruns its storage of 4 elements"):
        _LazyTensor(storage, 1, (2, 2), (2, 1)).materialise()


def test_truncated_and_foreign_files(tmp_path: Path, data_dir: Path) -> None:
    raw = (data_dir / "tiny_legacy_format.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match="truncated checkpoint"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps({"not": "a checkpoint"}))
    with pytest.raises(CheckpointError, match="bad magic number"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_checkpoint(garbage)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/version", "3")
    nopkl = tmp_path / "nopkl.pt"
    nopkl.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="exactly one data.pkl"):
        load_checkpoint(nopkl)
