"""Fixtures: a server on the fake providers (real Opus, real WebSockets, loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.testing import fake_config, tone

ServerFactory = Callable[..., Awaitable[XiaozhiServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[XiaozhiServer] = []

    async def factory(**sections: Any) -> XiaozhiServer:
        # max_loop_lag_ms 0: a loaded test machine must not trip overload refusal (it has
        # its own test below)
        base: dict[str, Any] = {
            "session": {"silence_ms": 300, "min_speech_ms": 120},
            "server": {"limits": {"max_loop_lag_ms": 0}},
        }
        from xiaozhi_core.config import merge

        server = await XiaozhiServer.create(fake_config(**merge(base, sections)))
        await server.start(port=0, http_port=0)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> XiaozhiServer:
    return await make_server()


def utterance(
    seconds: float = 0.6, lead: float = 0.3, tail: float = 0.6, freq: float = 440.0
) -> list[bytes]:
    """Opus packets of silence + a tone (the fake VAD's "speech") + silence."""
    pcm = np.concatenate(
        [
            np.zeros(int(lead * 16000), np.int16),
            tone(seconds, freq=freq),
            np.zeros(int(tail * 16000), np.int16),
        ]
    )
    return encode_utterance(pcm)


async def speak(dev: FakeDevice, mode: str = "auto", realtime: bool = False, **kw: Any) -> None:
    await dev.listen("start", mode)
    await dev.stream(utterance(**kw), realtime=realtime)
