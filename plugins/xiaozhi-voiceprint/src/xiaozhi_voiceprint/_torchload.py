"""Read PyTorch checkpoints (``torch.save`` files) into numpy arrays, without torch.

Two on-disk formats exist:

* the **legacy** stream (torch < 1.6, and what ``resemblyzer/pretrained.pt`` uses): five
  pickles back to back (a magic number, the protocol version, a dict of system info, the
  payload, the list of storage keys) followed by the raw storages, each one an 8-byte
  little-endian element count and then the elements;
* the **zip** archive (torch >= 1.6): ``<root>/data.pkl`` holds the payload and each
  storage is the raw file ``<root>/data/<key>``.

In both, the payload pickle refers to storages through *persistent ids* and rebuilds
tensors by calling ``torch._utils._rebuild_tensor_v2``. Unpickling is restricted: only
that handful of globals is resolved, each to a local stand-in, and any other global
(an arbitrary callable in a hostile file) is refused, so loading never runs code from
the file and never imports torch.

Example: a pickle that names any other callable is refused before anything runs.

    >>> import io, os, pickle
    >>> class Hostile:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo pwned",))
    >>> _RestrictedUnpickler(io.BytesIO(pickle.dumps(Hostile()))).load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_voiceprint._torchload.CheckpointError: refusing to load global posix.system: ...
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

__all__ = ["CheckpointError", "load_checkpoint"]

#: First pickle of a legacy-format file.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

#: ``torch.<Name>Storage`` classes and the element type they hold.
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}


class CheckpointError(Exception):
    """The file is not a checkpoint this reader understands, or it is corrupt/hostile."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype[Any]


@dataclass
class _Storage:
    key: str
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray | None = None
    # (root storage, element offset) when this storage is a view of another one.
    view_of: tuple[_Storage, int] | None = None

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.array()[offset : offset + self.numel]
        if self.data is None:
            raise CheckpointError(f"storage {self.key!r} is referenced but was never stored")
        return self.data


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def materialise(self) -> np.ndarray:
        flat = self.storage.array()
        if len(self.size) != len(self.stride):
            raise CheckpointError(f"tensor size {self.size} and stride {self.stride} disagree")
        if any(n < 0 for n in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise CheckpointError("negative tensor size, stride or offset")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= flat.size:
            # as_strided would read outside the buffer: refuse instead.
            raise CheckpointError(
                f"tensor (offset {self.offset}, size {self.size}, stride {self.stride}) "
                f"overruns its storage of {flat.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * flat.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, order="C")


def _rebuild_tensor(
    storage: _Storage, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError("tensor rebuilt from something that is not a storage")
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _LazyTensor, *_: Any) -> _LazyTensor:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], persistent: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file)
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refusing to load global {module}.{name}: only tensors, storages and "
                "OrderedDict are allowed in a weights file"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise CheckpointError("unexpected persistent id in a plain pickle")
        return self._persistent(pid)


def _storage_from_pid(pid: Any, storages: dict[str, _Storage]) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        raise CheckpointError(f"unsupported persistent id {pid!r:.80}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"persistent id names no storage type: {storage_type!r:.80}")
    key = str(key)
    root = storages.get(key)
    if root is None:
        root = storages[key] = _Storage(key, storage_type.dtype, int(numel))
    view_meta = pid[5] if len(pid) == 6 else None
    if view_meta is None:
        return root
    view_key, offset, view_size = view_meta
    view = storages.get(str(view_key))
    if view is None:
        view = _Storage(str(view_key), root.dtype, int(view_size), view_of=(root, int(offset)))
        storages[str(view_key)] = view
    return view


def _resolve(obj: Any) -> Any:
    """Replace every lazy tensor in a nested structure by its numpy array."""
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v)
        return out
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    return obj


def _load_legacy(f: IO[bytes]) -> Any:
    def plain() -> Any:
        return _RestrictedUnpickler(f).load()

    if plain() != _LEGACY_MAGIC:
        raise CheckpointError("not a torch checkpoint (bad magic number)")
    if (version := plain()) != _LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy checkpoint protocol {version!r}")
    sys_info = plain()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: dict[str, _Storage] = {}
    payload = _RestrictedUnpickler(f, lambda pid: _storage_from_pid(pid, storages)).load()
    keys = plain()
    if not isinstance(keys, list):
        raise CheckpointError("corrupt legacy checkpoint: storage key list missing")
    order: Literal["<", ">"] = "<" if little else ">"
    for key in keys:
        storage = storages.get(str(key))
        if storage is None or storage.view_of is not None:
            raise CheckpointError(f"corrupt legacy checkpoint: unknown storage {key!r}")
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError("truncated checkpoint: storage header missing")
        count = int.from_bytes(header, "little" if little else "big", signed=True)
        if count != storage.numel:
            raise CheckpointError(
                f"corrupt checkpoint: storage {key!r} holds {count} elements, "
                f"{storage.numel} expected"
            )
        nbytes = count * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"truncated checkpoint: storage {key!r} is incomplete")
        storage.data = np.frombuffer(raw, storage.dtype.newbyteorder(order)).astype(
            storage.dtype, copy=False
        )
    return _resolve(payload)


def _load_zip(zf: zipfile.ZipFile) -> Any:
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError("zip checkpoint must contain exactly one data.pkl")
    root = pickles[0][: -len("data.pkl")]
    order: Literal["<", ">"] = "<"
    if f"{root}byteorder" in zf.namelist():
        order = "<" if zf.read(f"{root}byteorder").strip() == b"little" else ">"
    storages: dict[str, _Storage] = {}
    payload = _RestrictedUnpickler(
        io.BytesIO(zf.read(pickles[0])), lambda pid: _storage_from_pid(pid, storages)
    ).load()
    for key, storage in storages.items():
        if storage.view_of is not None:
            continue
        try:
            raw = zf.read(f"{root}data/{key}")
        except KeyError:
            raise CheckpointError(f"zip checkpoint lacks storage data/{key}") from None
        nbytes = storage.numel * storage.dtype.itemsize
        if len(raw) < nbytes:
            raise CheckpointError(f"zip checkpoint storage data/{key} is truncated")
        storage.data = np.frombuffer(raw[:nbytes], storage.dtype.newbyteorder(order)).astype(
            storage.dtype, copy=False
        )
    return _resolve(payload)


def load_checkpoint(path: str | PathLike[str]) -> Any:
    """Load a ``torch.save`` file; tensors come back as (owned, C-order) numpy arrays.

    Raises :class:`CheckpointError` for anything it does not understand, and
    :class:`OSError` if the file cannot be read.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return _load_zip(zf)
    with path.open("rb") as f:
        try:
            return _load_legacy(f)
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"corrupt checkpoint {path}: {exc}") from exc
