"""Test doubles for plugin authors and the core's tests (the stable import name).

The fakes live in the ``xiaozhi-testkit`` distribution, which development set-ups
install and production installs do not (so ``xiaozhi plugins`` on a production box lists
no test doubles). This module re-exports its public API: fake providers for every role
with scripted timing and failure injection (``fake`` = cpu, ``fake_io`` = io), and
:func:`fake_config`. This module is also the plugin the test kit's entry point names,
so ``registry.register(xiaozhi_core.testing)`` registers the fakes.

Example:
    >>> llm = FakeLLM(reply="It is noon. Anything else?")
    >>> "".join(x for x in llm.chat([]) if isinstance(x, str))
    'It is noon. Anything else?'
"""

from __future__ import annotations

try:
    from xiaozhi_testkit.fakes import (
        EnergyVAD,
        EnergyVADOptions,
        FakeASR,
        FakeASROptions,
        FakeAsyncASR,
        FakeAsyncLLM,
        FakeAsyncTTS,
        FakeLLM,
        FakeLLMOptions,
        FakeTTS,
        FakeTTSOptions,
        FakeVoiceprint,
        FakeVoiceprintOptions,
        fake_config,
        fake_spec,
        tone,
        xiaozhi_providers,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    if exc.name != "xiaozhi_testkit":
        raise
    raise ModuleNotFoundError(
        "xiaozhi_core.testing needs the test kit: pip install xiaozhi-testkit "
        "(the repository's testkit/ folder; scripts/setup.sh --dev installs it)",
        name="xiaozhi_testkit") from None

__all__ = [
    "EnergyVAD",
    "EnergyVADOptions",
    "FakeASR",
    "FakeASROptions",
    "FakeAsyncASR",
    "FakeAsyncLLM",
    "FakeAsyncTTS",
    "FakeLLM",
    "FakeLLMOptions",
    "FakeTTS",
    "FakeTTSOptions",
    "FakeVoiceprint",
    "FakeVoiceprintOptions",
    "fake_config",
    "fake_spec",
    "tone",
    "xiaozhi_providers",
]
