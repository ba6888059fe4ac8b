"""Exceptions the core raises. Each message names the thing that is wrong and how to fix it."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExecutionPolicyError",
    "PluginError",
    "ProviderError",
    "ProviderTimeout",
    "XiaozhiError",
]


class XiaozhiError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(XiaozhiError):
    """A deployment config is invalid.

    ``file`` is the YAML file (if known), ``path`` the dotted key path, ``message`` what is
    wrong and what is allowed.

    >>> str(ConfigError("is not installed", path="asr.provider", file="a.yaml"))
    'a.yaml: asr.provider: is not installed'
    """

    def __init__(self, message: str, *, path: str = "", file: str | None = None) -> None:
        self.message = message
        self.path = path
        self.file = file
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.file, self.path) if p]
        return ": ".join([*parts, self.message])

    def with_file(self, file: str) -> ConfigError:
        return ConfigError(self.message, path=self.path, file=self.file or file)


class PluginError(XiaozhiError):
    """A plugin failed to load or declared an invalid provider spec."""


class ExecutionPolicyError(XiaozhiError):
    """A provider breaks the executor policy (e.g. a sync method on an ``io`` provider),
    or blocking bridge code was called from the event-loop thread."""


class ProviderError(XiaozhiError):
    """A provider failed while doing its work (network error, bad response, crash)."""


class ProviderTimeout(ProviderError):
    """A provider did not answer within its configured timeout."""
