"""xiaozhi-core LLM provider ``llamacpp``: a local GGUF chat model via llama-cpp-python."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version is written once, in pyproject.toml
    __version__ = version("xiaozhi-llamacpp")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
