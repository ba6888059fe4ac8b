"""xiaozhi-core: an open server for xiaozhi ESP32 voice assistants.

Public API for provider authors: :class:`ProviderSpec`, :data:`hookimpl`, the data
types in :mod:`xiaozhi_core.types` and the interfaces in :mod:`xiaozhi_core.providers`.
Test doubles live in :mod:`xiaozhi_core.testing`.
"""

import os as _os
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

# onnxruntime >= 1.29 sends telemetry (DNS look-ups) unless this is set before it
# initialises; the server must make no traffic beyond loopback by itself.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .errors import (
    ConfigError,
    ExecutionPolicyError,
    PluginError,
    ProviderError,
    ProviderTimeout,
    XiaozhiError,
)
from .hookspecs import hookimpl
from .providers import NoOptions, ProviderSpec
from .types import ASRResult, Execution, Message, Role, SpeakerMatch, ToolCall, ToolSpec

try:  # the version is written once, in pyproject.toml
    __version__ = _version("xiaozhi-core")
except _PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ASRResult",
    "ConfigError",
    "Execution",
    "ExecutionPolicyError",
    "Message",
    "NoOptions",
    "PluginError",
    "ProviderError",
    "ProviderSpec",
    "ProviderTimeout",
    "Role",
    "SpeakerMatch",
    "ToolCall",
    "ToolSpec",
    "XiaozhiError",
    "__version__",
    "hookimpl",
]
