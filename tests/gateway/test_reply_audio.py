"""The reply's audio: encoded in as few pool jobs as the TTS allows, byte for byte what
encoding each TTS chunk in turn gives, with encoders reused across turns."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from xiaozhi_core.audio import Resampler
from xiaozhi_core.device import FakeDevice
from xiaozhi_core.protocol.opus import OpusEncoder
from xiaozhi_core.session import turn as turn_module

from .conftest import speak

REPLY = "Hello there. This reply has two sentences, so it is long enough."


def _turn_audio(dev: FakeDevice, after: int) -> tuple[list[str], list[bytes]]:
    """Sentences (from the subtitles) and audio frames received after ``after``."""
    sentences, frames = [], []
    for r in dev.received[after:]:
        if r.audio is not None:
            frames.append(r.audio)
        elif r.message is not None and r.message.get("state") == "sentence_start":
            sentences.append(str(r.message["text"]))
    return sentences, frames


def _reference(tts: Any, sentences: list[str], tts_rate: int, out_rate: int) -> list[bytes]:
    """One fresh encoder for the turn, each sentence's chunks encoded one by one."""
    encoder = OpusEncoder(out_rate, 60)
    packets: list[bytes] = []
    for sentence in sentences:
        resampler = Resampler(tts_rate, out_rate)
        for chunk in tts.synthesize(sentence):
            pcm = resampler.process(np.frombuffer(chunk, np.int16)).tobytes()
            packets += encoder.encode(pcm)
        packets += encoder.encode(resampler.flush().tobytes()) + encoder.flush()
    return packets


async def test_reply_frames_exact_with_fewer_jobs_and_a_reused_encoder(make_server, monkeypatch):
    calls: list[int] = []
    sizes: list[int] = []  # PCM bytes of each job
    real = turn_module._encode_all

    def counting(encoder: OpusEncoder, chunks: Any) -> list[list[bytes]]:
        calls.append(len(chunks))
        sizes.append(sum(len(c or b"") for _, c in chunks))
        return real(encoder, chunks)

    monkeypatch.setattr(turn_module, "_encode_all", counting)
    server = await make_server(
        llm={"provider": "fake", "options": {"reply": REPLY}},
        tts={"provider": "fake", "options": {"chunk_ms": 40}},
    )
    tts = server.providers.tts.instance  # type: ignore[attr-defined]
    out_rate = server.config.session.output_sample_rate
    turns = []
    async with FakeDevice(server.ws_url) as dev:
        for _ in range(2):
            after = len(dev.received)
            calls.clear()
            await speak(dev)
            await dev.wait_for("tts", "stop", after=after, timeout=20)
            sentences, frames = _turn_audio(dev, after)
            turns.append((sentences, frames, list(calls)))
    (s1, f1, c1), (s2, f2, c2) = turns
    assert len(s1) == 2 and s1 == s2
    chunks = sum(1 for s in s1 for _ in tts.synthesize(s)) + len(s1)  # + one flush each
    assert sum(c1) == chunks and sum(c2) == chunks
    # the cpu TTS is faster than real time: chunks queued while a job ran share the next
    assert len(c1) < chunks and len(c2) < chunks
    # ...up to _ENCODE_SECONDS of audio per job (the chunk that reaches it included)
    chunk_bytes = tts.sample_rate * 2 * 40 // 1000
    most = int(tts.sample_rate * 2 * turn_module._ENCODE_SECONDS)
    assert max(sizes) > chunk_bytes and max(sizes) < most + chunk_bytes
    ref = _reference(tts, s1, tts.sample_rate, out_rate)
    assert f1 == ref
    # the second turn took the first turn's encoder back, reset: the same bytes
    assert f2 == ref
    assert server.session_host is not None and len(server.session_host.encoders._free) >= 1


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_send_audio_many_is_one_write_of_ordinary_frames(version: int) -> None:
    """Several packets in one socket write; the device still gets one binary message per
    packet, in order, with its framing."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    from xiaozhi_core.gateway.ws_transport import WebSocketTransport
    from xiaozhi_core.protocol.framing import decode_frame
    from xiaozhi_core.session.host import NullMetrics
    from xiaozhi_core.session.transport import Peer

    packets = [bytes([i]) * (10 + i) for i in range(5)]
    writes: list[int] = []
    sent: list[int] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        t = WebSocketTransport(ws, Peer("aa:bb:cc:dd:ee:ff", "c", "", version), NullMetrics())
        write = ws.transport.write

        def counting(data: bytes) -> None:
            writes.append(len(data))
            write(data)

        ws.transport.write = counting  # type: ignore[method-assign]
        await t.send_audio_many(packets, 1234)
        await t.send_audio_many(packets[:1], 1234)
        sent.append(len(writes))
        await done.wait()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            got = [await client.recv() for _ in range(6)]
            done.set()
    assert sent == [2]  # five frames in one write, then one
    payloads = [decode_frame(m, version)[0] for m in got if isinstance(m, bytes)]
    assert payloads == [*packets, packets[0]]
