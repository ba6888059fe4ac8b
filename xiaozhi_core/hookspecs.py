"""Hook specifications: how a plugin distribution tells the core what it provides.

A plugin is a module registered with the core's plugin manager, normally through the
entry-point group ``xiaozhi_core.providers`` (see :mod:`xiaozhi_core.registry`). The
module implements hooks marked with :data:`hookimpl`.

Each hook below has a runnable example in its docstring, and the test suite fails when a
hook is added without one or without a test that calls it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from .providers import ProviderSpec

__all__ = ["PROJECT", "hookimpl", "hookspec", "xiaozhi_providers"]

PROJECT = "xiaozhi_core"

#: Decorator for the hook specifications below (core use only).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorator a plugin puts on its hook implementations.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def xiaozhi_providers() -> Iterable[ProviderSpec]:  # type: ignore[empty-body]
    """Describe the providers this plugin offers.

    Return (or yield) :class:`~xiaozhi_core.providers.ProviderSpec` records. Keep the
    module cheap to import: name the factory as a ``"module:attr"`` string so that SDKs
    and model weights load only when a deployment selects the provider.

    Example — a complete plugin module with one ``io`` TTS provider:

        >>> from dataclasses import dataclass
        >>> from xiaozhi_core import ProviderSpec, hookimpl
        >>> @dataclass
        ... class BeepOptions:
        ...     sample_rate: int = 16000
        >>> class BeepTTS:
        ...     def __init__(self, options: BeepOptions) -> None:
        ...         self.sample_rate = options.sample_rate
        ...     async def synthesize(self, text, *, voice=None):
        ...         yield b"\\x10\\x00" * 160
        >>> class BeepPlugin:
        ...     @hookimpl
        ...     def xiaozhi_providers(self):
        ...         yield ProviderSpec(role="tts", name="beep", execution="io",
        ...                            factory=BeepTTS, options=BeepOptions,
        ...                            description="a short beep for every sentence")
        >>> from xiaozhi_core.registry import Registry
        >>> registry = Registry()
        >>> registry.register(BeepPlugin(), name="beep-plugin")
        >>> registry.get("tts", "beep").execution
        <Execution.IO: 'io'>

    In a distribution, point an entry point at the module holding the hook::

        [project.entry-points."xiaozhi_core.providers"]
        beep = "xiaozhi_beep.plugin"
    """
