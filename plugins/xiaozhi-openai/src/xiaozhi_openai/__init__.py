"""OpenAI-compatible LLM, ASR and TTS providers for xiaozhi-core (see ``plugin``)."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version is written once, in pyproject.toml
    __version__ = version("xiaozhi-openai")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
