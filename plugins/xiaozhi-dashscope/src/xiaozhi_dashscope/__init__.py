"""DashScope (Alibaba Cloud Model Studio) providers for xiaozhi-core."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version is written once, in pyproject.toml
    __version__ = version("xiaozhi-dashscope")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
