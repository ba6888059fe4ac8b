"""What the server tests share: servers on the fake providers (real Opus, real
WebSockets, loopback) and the utterances the fake VAD hears as speech."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from xiaozhi_core.config import merge
from xiaozhi_core.device import encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.testing import fake_config, tone

__all__ = ["ServerFactory", "fake_servers", "utterance"]

#: Starts a server: keyword arguments are config sections, deep-merged over the base.
ServerFactory = Callable[..., Awaitable[XiaozhiServer]]


@contextlib.asynccontextmanager
async def fake_servers(base: Mapping[str, Any]) -> AsyncIterator[ServerFactory]:
    """A factory of started servers on :func:`fake_config`, each call's sections
    deep-merged over ``base``; every server it started is stopped at the exit."""
    servers: list[XiaozhiServer] = []

    async def factory(**sections: Any) -> XiaozhiServer:
        server = await XiaozhiServer.create(fake_config(**merge(dict(base), sections)))
        await server.start(port=0, http_port=0)
        servers.append(server)
        return server

    try:
        yield factory
    finally:
        for server in servers:
            await server.stop()


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
