"""A server on the fake providers running in a background thread (its own event loop), so
that synchronous tests can drive it through the real command line (``main([...])`` runs
``asyncio.run`` itself)."""

from __future__ import annotations

import asyncio
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.testing import fake_config, tone


class ThreadedServer:
    def __init__(self, **sections: Any) -> None:
        self.sections = sections
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="test-server", daemon=True
        )
        self.server: XiaozhiServer | None = None

    def __enter__(self) -> XiaozhiServer:
        self.thread.start()

        async def start() -> XiaozhiServer:
            server = await XiaozhiServer.create(fake_config(**self.sections))
            await server.start(port=0, http_port=0)
            return server

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(60)
        return self.server

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's loop and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


SECTIONS: dict[str, Any] = {
    "server": {"limits": {"max_loop_lag_ms": 0}},
    "session": {"silence_ms": 300, "min_speech_ms": 120, "greeting": "Hi, I am listening."},
    "asr": {"provider": "fake", "options": {"text": "what time is it"}},
    "llm": {"provider": "fake", "options": {"reply": "It is noon. Anything else?"}},
}


@pytest.fixture
def threaded_server() -> Iterator[ThreadedServer]:
    ts = ThreadedServer(**SECTIONS)
    with ts:
        yield ts


def write_test_wav(path: Path, rate: int = 44100, channels: int = 2) -> Path:
    """0.3 s silence, 0.8 s of a tone (the energy VAD's "speech"), 0.2 s silence."""
    pcm16 = np.concatenate(
        [
            np.zeros(int(0.3 * 16000), np.int16),
            tone(0.8, freq=300),
            np.zeros(int(0.2 * 16000), np.int16),
        ]
    )
    t = np.arange(int(len(pcm16) * rate / 16000)) / rate
    sig = np.interp(t, np.arange(len(pcm16)) / 16000, pcm16.astype(np.float64))
    frames = np.repeat(sig.astype(np.int16)[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())
    return path
