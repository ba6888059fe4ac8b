"""The audio fast path (``AudioFastPath``): Opus packets reach the session's lane straight
from the WebSocket parser while the session waits for its next message — and never
overtake a message received before them."""

from __future__ import annotations

import asyncio
import json

from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.protocol.framing import encode_frame
from xiaozhi_core.session.session import Session
from xiaozhi_core.testing import tone

from .conftest import utterance


def only_session(server: XiaozhiServer) -> Session:
    (session,) = server.sessions.values()
    return session


def listen(dev: FakeDevice, state: str, mode: str | None = None) -> str:
    message = {"type": "listen", "state": state, "session_id": dev.session_id}
    if mode is not None:
        message["mode"] = mode
    return json.dumps(message)


def burst(dev: FakeDevice, items: list[bytes | str]) -> None:
    """Write ``items`` (binary frames and text messages) in *one* socket write, so the
    server parses them all in one go: the order must survive it."""
    ws = dev.ws
    assert ws is not None
    for item in items:
        if isinstance(item, str):
            ws.protocol.send_text(item.encode())
        else:
            ws.protocol.send_binary(encode_frame(item, 1, 0))
    ws.transport.write(b"".join(ws.protocol.data_to_send()))


async def test_streamed_audio_takes_the_fast_path(server):
    packets = utterance()
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        await dev.stream(packets, realtime=True)
        await dev.wait_for("tts", "stop", timeout=15)
        session = only_session(server)
        lane = session.lane
        fast = session.transport.fast_frames  # type: ignore[attr-defined]
    assert lane.frames_in == len(packets) and lane.frames_lost == 0
    # sent one by one in real time, nearly every packet finds the session waiting
    assert fast >= 0.8 * len(packets), (fast, len(packets))


async def test_audio_after_listen_stop_in_the_same_read_stays_behind_it(make_server):
    """Manual mode: 20 packets, ``listen stop``, 30 more, all in one TCP write. The
    first packet goes the fast way; the text then queues, and every packet behind it
    must queue too — else the 30 would reach the lane before the stop and be heard."""
    server = await make_server(asr={"provider": "fake", "options": {"text": "manual"}})
    speech = encode_utterance(tone(1.2))  # 20 packets of 60 ms
    after = encode_utterance(tone(1.8, freq=660.0))  # 30 more
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "manual")
        await asyncio.sleep(0.2)  # the session now waits for its next message
        stop = listen(dev, "stop")
        burst(dev, [*speech, stop, *after])
        await dev.wait_for("tts", "stop", timeout=15)
        session = only_session(server)
        assert session.transport.fast_frames >= 1  # type: ignore[attr-defined]
    heard = server.providers.asr.instance.utterances[-1]
    # exactly the 20 packets' audio (cut into 512-sample windows), none of the 30
    assert 20 * 960 - 512 < len(heard) <= 20 * 960, len(heard)


async def test_audio_arriving_while_a_text_message_is_handled_waits_for_it(make_server):
    """The session is still busy with ``listen stop`` (held here for 0.4 s) when more
    audio arrives in later reads: that audio must not reach the lane before the stop."""
    server = await make_server(asr={"provider": "fake", "options": {"text": "manual"}})
    speech = encode_utterance(tone(1.2))  # 20 packets
    after = encode_utterance(tone(1.2, freq=660.0))
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "manual")
        await asyncio.sleep(0.2)
        session = only_session(server)
        on_text = session._on_text
        holding = asyncio.Event()

        async def slow_on_text(text: str) -> None:
            if '"stop"' in text:
                holding.set()
                await asyncio.sleep(0.4)
            await on_text(text)

        session._on_text = slow_on_text  # type: ignore[method-assign]
        for packet in speech:
            await dev.send_packet(packet)
        await dev.listen("stop")
        await asyncio.wait_for(holding.wait(), 5)  # the session now holds the stop
        for packet in after:
            await dev.send_packet(packet)
        await dev.wait_for("tts", "stop", timeout=15)
    heard = server.providers.asr.instance.utterances[-1]
    assert 20 * 960 - 512 < len(heard) <= 20 * 960, len(heard)


async def test_audio_queued_behind_a_text_message_is_processed_in_order(make_server):
    """A burst that starts with a text message: every packet queues behind it and the
    listening windows take exactly their own packets."""
    server = await make_server(asr={"provider": "fake", "options": {"text": "manual"}})
    speech = encode_utterance(tone(0.6))  # 10 packets
    async with FakeDevice(server.ws_url) as dev:
        start, stop = listen(dev, "start", "manual"), listen(dev, "stop")
        # start + audio + stop + audio + start + audio + stop, in one write
        burst(dev, [start, *speech, stop, *speech, start, *speech, *speech, stop])
        await dev.wait_for("tts", "stop", timeout=15)
        first = next(
            i
            for i, r in enumerate(dev.received)
            if r.message is not None
            and r.message.get("type") == "tts"
            and r.message.get("state") == "stop"
        )
        await dev.wait_for("tts", "stop", timeout=15, after=first + 1)
        session = only_session(server)
        assert session.lane.frames_in == 40 and session.lane.frames_lost == 0
    heard = [len(u) for u in server.providers.asr.instance.utterances]
    # the first window heard its 10 packets, the second its 20 (give or take the part
    # of a 512-sample window carried over from the 10 in between), none of the 10
    assert len(heard) == 2, heard
    assert 10 * 960 - 512 < heard[0] <= 10 * 960, heard
    assert 20 * 960 - 512 < heard[1] < 20 * 960 + 512, heard


async def test_fast_path_off_after_the_session_ends(server):
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        session = only_session(server)
        ws = session.transport.ws  # type: ignore[attr-defined]
        assert ws.audio_handler is not None
    for _ in range(100):
        if ws.audio_handler is None:
            break
        await asyncio.sleep(0.05)
    assert ws.audio_handler is None


async def test_a_failing_fast_path_falls_back_to_the_usual_way(server, caplog):
    """Should the fast path ever raise (say websockets' internals changed), the frame
    takes websockets' queue instead and the connection goes on without the fast path."""
    packets = utterance()
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        session = only_session(server)
        ws = session.transport.ws  # type: ignore[attr-defined]

        def broken(data: bytes) -> bool:
            raise AttributeError("'Assembler' object has no attribute 'frames'")

        ws.audio_handler = broken
        await dev.stream(packets, realtime=False)
        await dev.wait_for("tts", "stop", timeout=15)
        assert ws.audio_handler is None
        assert session.lane.frames_in == len(packets) and session.lane.frames_lost == 0
    assert "audio fast path failed" in caplog.text
