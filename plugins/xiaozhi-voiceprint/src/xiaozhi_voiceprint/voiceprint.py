"""The ``resemblyzer`` voiceprint provider: embed, enrol, identify.

Utterances (16 kHz mono int16) are scaled to [-1, 1), raised to -30 dBFS if quieter,
stripped of long pauses, and embedded by :class:`~xiaozhi_voiceprint._encoder.ResemblyzerEncoder`.
Enrolled voices live in ``store_dir``, one JSON file per speaker holding the running
mean of that speaker's utterance embeddings; ``identify`` compares an utterance with
each of them by cosine similarity.

Example:
    >>> import tempfile
    >>> from xiaozhi_voiceprint.plugin import ResemblyzerOptions
    >>> vp = ResemblyzerVoiceprint(ResemblyzerOptions(store_dir=tempfile.mkdtemp()))
    >>> vp.speakers()
    []
    >>> vp.embed(np.zeros(4000, np.int16))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ProviderError: voiceprint 'resemblyzer': the utterance is silent ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from xiaozhi_core.audio import read_wav
from xiaozhi_core.errors import ProviderError
from xiaozhi_core.types import SpeakerMatch

from . import _audio
from ._encoder import EMBEDDING_SIZE, WeightsError, load_encoder
from .plugin import ResemblyzerOptions

try:  # POSIX: serialise read-modify-write of a speaker file across processes too.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ResemblyzerVoiceprint", "default_store_dir", "enroll_wav"]

log = logging.getLogger(__name__)

_LABEL = "voiceprint 'resemblyzer'"
_MAX_NAME = 64
_MAX_STEM = 200  # file names are limited to 255 bytes
_FILE_VERSION = 1


def default_store_dir() -> Path:
    """``$XDG_DATA_HOME/xiaozhi/voiceprints``, else ``~/.local/share/xiaozhi/voiceprints``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "xiaozhi" / "voiceprints"


@dataclass
class _Voice:
    name: str
    mean: np.ndarray  # running mean of unit-length utterance embeddings
    count: int
    unit: np.ndarray  # mean / |mean|, what identify compares with
    stamp: tuple[int, int]  # (inode, mtime_ns): each atomic write makes a new inode


class ResemblyzerVoiceprint:
    """``cpu`` voiceprint provider (all methods block; safe to call from many threads)."""

    def __init__(self, options: ResemblyzerOptions | None = None) -> None:
        self.options = options or ResemblyzerOptions()
        try:
            self.encoder = load_encoder(self.options.weights_path)
        except WeightsError as exc:
            raise ProviderError(f"{_LABEL}: {exc}") from exc
        store = (
            Path(self.options.store_dir).expanduser()
            if self.options.store_dir
            else (default_store_dir())
        )
        self.store_dir = store
        self._lock = threading.RLock()
        self._voices: dict[str, _Voice] = {}  # keyed by file name
        self._bad: dict[str, tuple[int, int]] = {}  # corrupt files already reported

    @property
    def embedding_model(self) -> str:
        """What the embeddings are comparable under: these weights (the core keys voices
        it keeps in the device store with it)."""
        return f"resemblyzer:{self.encoder.fingerprint}"

    # ----------------------------------------------------------------- embeddings
    def _prepare(self, pcm: np.ndarray) -> np.ndarray:
        pcm = np.asarray(pcm)
        if pcm.ndim != 1:
            raise ProviderError(
                f"{_LABEL}: expected mono audio (a 1-D int16 array), got shape {pcm.shape}"
            )
        if pcm.dtype != np.int16:
            raise ProviderError(
                f"{_LABEL}: expected int16 samples at 16 kHz, got dtype {pcm.dtype}; "
                "convert with (x * 32767).astype(np.int16)"
            )
        seconds = len(pcm) / _audio.SAMPLE_RATE
        if len(pcm) == 0 or not np.any(pcm):
            raise ProviderError(
                f"{_LABEL}: the utterance is silent ({seconds:.2f} s of digital silence); "
                "nothing to embed"
            )
        wav = _audio.normalize_volume(pcm.astype(np.float64) / 32768.0)
        if self.options.trim_silence:
            wav = _audio.trim_long_silences(wav)
        kept = len(wav) / _audio.SAMPLE_RATE
        if kept < self.options.min_seconds:
            trimmed = (
                f" after dropping pauses (from {seconds:.2f} s of audio)"
                if self.options.trim_silence
                else ""
            )
            raise ProviderError(
                f"{_LABEL}: utterance too short: {kept:.2f} s of speech{trimmed}, at least "
                f"{self.options.min_seconds:.2f} s needed (option min_seconds); use a longer "
                "recording"
            )
        return wav

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        """The L2-normalised 256-d embedding (float32) of a 16 kHz int16 utterance."""
        return self.encoder.embed_prepared(self._prepare(pcm))

    # ----------------------------------------------------------------- the store
    def _path(self, name: str) -> Path:
        stem = quote(name, safe="")
        if len(stem) > _MAX_STEM:  # e.g. long CJK names: 9 bytes per character once quoted
            stem = stem[: _MAX_STEM - 17] + "-" + hashlib.sha256(name.encode()).hexdigest()[:16]
        return self.store_dir / (stem + ".json")

    def _read_voice(self, path: Path) -> _Voice | None:
        """Parse one speaker file; None if it is not a valid enrolment for these weights."""
        try:
            stat = path.stat()
            data = json.loads(path.read_text("utf-8"))
            mean = np.asarray(data["mean"], np.float64)
            count = int(data["count"])
            name = str(data["name"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                f"{_LABEL}: corrupt voiceprint file {path}: {exc}; delete it and enrol again"
            ) from exc
        if data.get("model") != self.encoder.fingerprint:
            # Enrolled with other weights: not comparable. Keep the file, ignore it.
            return None
        if mean.shape != (EMBEDDING_SIZE,) or count < 1 or not np.all(np.isfinite(mean)):
            raise ProviderError(
                f"{_LABEL}: corrupt voiceprint file {path}: bad embedding or count; "
                "delete it and enrol again"
            )
        norm = float(np.linalg.norm(mean))
        return _Voice(
            name,
            mean,
            count,
            (mean / max(norm, 1e-12)).astype(np.float32),
            (stat.st_ino, stat.st_mtime_ns),
        )

    def _refresh(self) -> dict[str, _Voice]:
        """Bring the in-memory voices up to date with the directory (other processes or
        instances may enrol too); unchanged files are not re-read, corrupt ones are
        logged once and skipped."""
        with self._lock:
            seen: set[str] = set()
            try:
                entries = list(os.scandir(self.store_dir))
            except FileNotFoundError:
                entries = []
            for entry in entries:
                if not entry.name.endswith(".json") or not entry.is_file():
                    continue
                seen.add(entry.name)
                cached = self._voices.get(entry.name)
                stat = entry.stat()
                stamp = (stat.st_ino, stat.st_mtime_ns)
                if cached is not None and cached.stamp == stamp:
                    continue
                if self._bad.get(entry.name) == stamp:
                    continue
                try:
                    voice = self._read_voice(Path(entry.path))
                except ProviderError as exc:
                    # One damaged file must not stop identification of everybody else.
                    log.warning("%s", exc)
                    self._bad[entry.name] = stamp
                    voice = None
                if voice is None:
                    self._voices.pop(entry.name, None)
                else:
                    self._voices[entry.name] = voice
            for gone in set(self._voices) - seen:
                del self._voices[gone]
            return dict(self._voices)

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        with self._lock:
            try:
                self.store_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ProviderError(
                    f"{_LABEL}: cannot create the voiceprint store {self.store_dir}: {exc}; "
                    "set option store_dir to a writable directory"
                ) from exc
            if fcntl is None:
                yield
                return
            with open(self.store_dir / ".lock", "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _write_atomic(self, path: Path, payload: dict[str, Any]) -> None:
        # The temporary name does not end in .json: readers never see a half-written file.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=self.store_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ----------------------------------------------------------------- the API
    def enroll(self, name: str, pcm: np.ndarray) -> None:
        """Add an utterance of ``name`` to their voiceprint (created on first use).

        Enrolling a name again refines it: the stored voice is the mean of all the
        utterance embeddings enrolled under that name.
        """
        name = _check_name(name)
        embedding = self.embed(pcm).astype(np.float64)
        path = self._path(name)
        with self._store_lock():
            old = self._read_voice(path)
            if old is None:
                mean, count = embedding, 1
            else:
                count = old.count + 1
                mean = old.mean + (embedding - old.mean) / count
            try:
                self._write_atomic(
                    path,
                    {
                        "version": _FILE_VERSION,
                        "name": name,
                        "model": self.encoder.fingerprint,
                        "count": count,
                        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "mean": [round(float(v), 8) for v in mean],
                    },
                )
            except OSError as exc:
                raise ProviderError(
                    f"{_LABEL}: cannot save the voiceprint of {name!r} to {path}: {exc}"
                ) from exc
            self._voices.pop(path.name, None)

    def identify(self, pcm: np.ndarray) -> SpeakerMatch:
        """The enrolled speaker most similar to the utterance, if similar enough.

        Returns ``SpeakerMatch(name, score)`` when the best cosine similarity reaches
        ``threshold``, else ``SpeakerMatch(None, best_score)`` (score 0.0 when nobody
        is enrolled).
        """
        embedding = self.embed(pcm)
        voices = self._refresh()
        if not voices:
            return SpeakerMatch(None, 0.0)
        names = [v.name for v in voices.values()]
        scores = np.stack([v.unit for v in voices.values()]) @ embedding
        best = int(np.argmax(scores))
        score = float(np.clip(scores[best], -1.0, 1.0))
        return SpeakerMatch(names[best] if score >= self.options.threshold else None, score)

    def speakers(self) -> list[str]:
        """Names of the enrolled speakers (enrolled with these weights), sorted."""
        return sorted(v.name for v in self._refresh().values())

    def remove(self, name: str) -> bool:
        """Forget a speaker; False if ``name`` was not enrolled."""
        path = self._path(_check_name(name))
        with self._store_lock():
            self._voices.pop(path.name, None)
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise ProviderError(f"{_LABEL}: cannot delete {path}: {exc}") from exc
            return True

    def close(self) -> None:
        """Nothing to release (the encoder is shared by the process)."""


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise ProviderError(f"{_LABEL}: speaker name must be a string, got {type(name).__name__}")
    cleaned = unicodedata.normalize("NFC", name.strip())
    if not cleaned:
        raise ProviderError(f"{_LABEL}: speaker name is empty")
    if len(cleaned) > _MAX_NAME:
        raise ProviderError(
            f"{_LABEL}: speaker name {cleaned[:20]!r}... is longer than {_MAX_NAME} characters"
        )
    if any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise ProviderError(f"{_LABEL}: speaker name {cleaned!r} contains control characters")
    return cleaned


# --------------------------------------------------------------------- WAV files
def enroll_wav(provider: ResemblyzerVoiceprint, name: str, wav_path: str | PathLike[str]) -> float:
    """Enrol ``name`` from a WAV file; returns the file's duration in seconds.

    The file may have any sample rate and channel count (16-bit PCM is the common
    case); the core's :func:`xiaozhi_core.audio.read_wav` mixes it to mono and resamples
    it to 16 kHz first (and raises its one-line :class:`~xiaozhi_core.audio.WavError`).
    """
    pcm = read_wav(wav_path, _audio.SAMPLE_RATE)
    provider.enroll(name, pcm)
    return len(pcm) / _audio.SAMPLE_RATE
