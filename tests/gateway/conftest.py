"""Fixtures: a server on the fake providers (real Opus, real WebSockets, loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.harness import ServerFactory, fake_servers, utterance
from xiaozhi_core.device import FakeDevice
from xiaozhi_core.gateway import XiaozhiServer


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    # max_loop_lag_ms 0: a loaded test machine must not trip overload refusal (it has
    # its own test)
    base = {
        "session": {"silence_ms": 300, "min_speech_ms": 120},
        "server": {"limits": {"max_loop_lag_ms": 0}},
    }
    async with fake_servers(base) as factory:
        yield factory


@pytest.fixture
async def server(make_server: ServerFactory) -> XiaozhiServer:
    return await make_server()


async def speak(dev: FakeDevice, mode: str = "auto", realtime: bool = False, **kw: Any) -> None:
    await dev.listen("start", mode)
    await dev.stream(utterance(**kw), realtime=realtime)
