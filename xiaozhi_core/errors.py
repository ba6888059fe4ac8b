"""Exceptions the core raises. Each message names the thing that is wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "ExecutionPolicyError",
    "PluginError",
    "ProviderError",
    "ProviderTimeout",
    "StartupError",
    "XiaozhiError",
    "did_you_mean",
]


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``word``, or ``""``.

    >>> did_you_mean("wisper", ["whisper", "openai"])
    " (did you mean 'whisper'?)"
    >>> did_you_mean("zzz", ["whisper"])
    ''
    """
    names = {str(c): c for c in choices}
    close = difflib.get_close_matches(str(word)[:100], list(names), n=1, cutoff=0.6)
    return f" (did you mean {names[close[0]]!r}?)" if close else ""


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


class StartupError(XiaozhiError):
    """The server cannot start for a reason the operator can fix (a port in use, an
    address that is not this machine's): one line naming what and how."""


class ProviderTimeout(ProviderError):
    """A provider did not answer within its configured timeout."""
