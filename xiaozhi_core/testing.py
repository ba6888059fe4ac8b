"""Test doubles and an end-to-end harness for plugin authors and the core's tests.

The fakes live in the ``xiaozhi-testkit`` distribution, which development set-ups
install and production installs do not (so ``xiaozhi plugins`` on a production box lists
no test doubles). This module re-exports its public API: fake providers for every role
with scripted timing and failure injection (``fake`` = cpu, ``fake_io`` = io), and
:func:`fake_config`. This module is also the plugin the test kit's entry point names,
so ``registry.register(xiaozhi_core.testing)`` registers the fakes.

The harness: :func:`e2e_config` builds a deployment that selects *your* provider for
its role and the fakes for the others, :func:`serve_with` runs a real server on it
(loopback, free ports) and :class:`~xiaozhi_core.device.FakeDevice` talks to it as the
firmware does, so a provider is tested inside a real session::

    async with serve_with(tts={"provider": "mytts"}) as server:
        async with FakeDevice(server.ws_url) as dev:
            await dev.listen("detect", text="hello")
            await dev.wait_for("tts", "stop")
            assert len(dev.decode_reply_audio()) > 0

Example:
    >>> llm = FakeLLM(reply="It is noon. Anything else?")
    >>> "".join(x for x in llm.chat([]) if isinstance(x, str))
    'It is noon. Anything else?'
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

import numpy as np

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
        FakeVision,
        FakeVisionOptions,
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
        name="xiaozhi_testkit",
    ) from None

if TYPE_CHECKING:
    from .config import DeploymentConfig
    from .gateway import XiaozhiServer
    from .types import JSONObject, JSONValue

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
    "FakeVision",
    "FakeVisionOptions",
    "FakeVoiceprint",
    "FakeVoiceprintOptions",
    "e2e_config",
    "fake_config",
    "fake_spec",
    "serve_with",
    "speech_packets",
    "tone",
    "xiaozhi_providers",
]


def e2e_config(*, plugins: Iterable[object] = (), **sections: JSONValue) -> DeploymentConfig:
    """A validated deployment for end-to-end tests: the sections given deep-merged over
    loopback, free ports, auth off, short-utterance segmentation and the ``fake``
    providers for every role not given. Providers are looked up among the installed
    ones (entry points), the fakes and ``plugins`` (modules registered directly, for a
    provider that is not installed).

    >>> cfg = e2e_config(llm={"provider": "fake", "options": {"reply": "Hi."}})
    >>> (cfg.llm.provider, cfg.llm.options.reply, cfg.tts.provider, cfg.server.port)
    ('fake', 'Hi.', 'fake', 0)
    """
    import sys

    from .config import _validate, merge
    from .errors import ConfigError
    from .registry import default_registry

    registry = default_registry([sys.modules[__name__], *plugins])
    raw: JSONObject = {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "http_port": 0,
            "auth": {"enabled": False},
            # a loaded test machine must not trip the overload refusal
            "limits": {"max_loop_lag_ms": 0},
        },
        "session": {"silence_ms": 300, "min_speech_ms": 120},
        "vad": {"provider": "fake"},
        "asr": {"provider": "fake"},
        "llm": {"provider": "fake"},
        "tts": {"provider": "fake"},
    }
    for role in ("vad", "asr", "llm", "tts", "voiceprint"):
        if isinstance(sections.get(role), dict) and role in raw:
            del raw[role]  # the caller's choice replaces the fake, options and all
    try:
        return _validate(merge(raw, sections), registry, ["<e2e_config>"])
    except ConfigError as exc:
        raise ConfigError(exc.message, path=exc.path, file="e2e_config") from None


@contextlib.asynccontextmanager
async def serve_with(
    config: DeploymentConfig | None = None, *, plugins: Iterable[object] = (), **sections: JSONValue
) -> AsyncIterator[XiaozhiServer]:
    """Run a real server on ``config`` (default: ``e2e_config(plugins=..., **sections)``)
    on 127.0.0.1 with free ports for the duration of the block; ``server.ws_url`` is
    where a :class:`~xiaozhi_core.device.FakeDevice` connects.

    >>> import asyncio
    >>> from xiaozhi_core.device import FakeDevice
    >>> async def main():
    ...     async with serve_with(llm={"provider": "fake", "options": {"reply": "Hi."}}
    ...                           ) as server:
    ...         async with FakeDevice(server.ws_url) as dev:
    ...             await dev.listen("detect", text="hello")
    ...             await dev.wait_for("tts", "stop")
    ...             said = [m["text"] for m in dev.messages("tts")
    ...                     if m["state"] == "sentence_start"]
    ...             return dev.messages("stt")[0]["text"], said, len(dev.audio_frames()) > 0
    >>> asyncio.run(main())
    ('hello', ['Hi.'], True)
    """
    from .gateway import XiaozhiServer

    if config is None:
        config = e2e_config(plugins=plugins, **sections)
    elif sections:
        raise TypeError("give either a config or sections, not both")
    server = await XiaozhiServer.create(config)
    try:
        await server.start(host="127.0.0.1", port=0, http_port=0)
        yield server
    finally:
        await server.stop()


def speech_packets(
    seconds: float = 0.6,
    *,
    lead: float = 0.3,
    tail: float = 0.6,
    freq: float = 440.0,
    pcm: np.ndarray | None = None,
) -> list[bytes]:
    """Upstream Opus packets as the firmware sends them: silence, ``seconds`` of a tone
    (speech to the fake VAD) or the 16 kHz int16 ``pcm`` given, then silence.

    >>> len(speech_packets(0.6))  # 1.5 s in 60 ms frames
    25
    """
    from .device import encode_utterance

    body = tone(seconds, freq=freq) if pcm is None else np.asarray(pcm, np.int16)
    audio = np.concatenate(
        [np.zeros(int(lead * 16000), np.int16), body, np.zeros(int(tail * 16000), np.int16)]
    )
    return encode_utterance(audio)
