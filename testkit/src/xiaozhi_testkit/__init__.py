"""xiaozhi-testkit: test doubles for xiaozhi-core and for provider authors.

A separate distribution so that production installs never list test doubles among their
providers: fake providers for every role (``fake`` = cpu, ``fake_io`` = io) with
scripted timing and failure injection, and :func:`fake_config`. Import them as
:mod:`xiaozhi_core.testing` (the stable name, which re-exports this package).

>>> from xiaozhi_testkit import FakeLLM
>>> "".join(x for x in FakeLLM(reply="Hi.").chat([]) if isinstance(x, str))
'Hi.'
"""

from .fakes import (
    EnergyVAD,
    FakeASR,
    FakeAsyncASR,
    FakeAsyncLLM,
    FakeAsyncTTS,
    FakeLLM,
    FakeTTS,
    FakeVision,
    FakeVoiceprint,
    fake_config,
    fake_spec,
    tone,
)

__all__ = [
    "EnergyVAD",
    "FakeASR",
    "FakeAsyncASR",
    "FakeAsyncLLM",
    "FakeAsyncTTS",
    "FakeLLM",
    "FakeTTS",
    "FakeVision",
    "FakeVoiceprint",
    "fake_config",
    "fake_spec",
    "tone",
]
