"""xiaozhi-edge-tts: Microsoft Edge read-aloud TTS for xiaozhi-core (provider ``edge``)."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version is written once, in pyproject.toml
    __version__ = version("xiaozhi-edge-tts")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
