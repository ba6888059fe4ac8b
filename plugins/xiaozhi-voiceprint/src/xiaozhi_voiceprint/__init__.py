"""xiaozhi-voiceprint: the ``resemblyzer`` speaker-identification provider for xiaozhi-core."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version is written once, in pyproject.toml
    __version__ = version("xiaozhi-voiceprint")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
