"""xiaozhi-espeak: the ``espeak`` TTS provider (libespeak-ng via ctypes) for xiaozhi-core."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version is written once, in pyproject.toml
    __version__ = version("xiaozhi-espeak")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
