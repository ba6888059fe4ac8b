"""Every way the Edge service (or the network) fails, as a precise ProviderError."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_edge import FakeEdge, Hang, Malformed, NoAudio, Reject, Speak, mp3_frames, sine_mp3

from xiaozhi_core.errors import ProviderError, ProviderTimeout
from xiaozhi_core.providers import ProviderSpec

URL = r"ws://127\.0\.0\.1:\d+/consumer/speech/synthesize/readaloud/edge/v1"


async def collect(stream: Any) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_connection_refused(edge_spec: ProviderSpec) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tts = edge_spec.create({"endpoint": f"ws://127.0.0.1:{port}/edge/v1"})
    with pytest.raises(
        ProviderError,
        match=rf"edge: cannot connect to ws://127\.0\.0\.1:{port}"
        r"/edge/v1 \(connection refused: nothing listens",
    ):
        await collect(tts.synthesize("hello"))


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_proxy_option_is_used(fake_edge: FakeEdge, make_tts: Callable[..., Any]) -> None:
    port = _dead_port()
    with pytest.raises(
        ProviderError,
        match=rf"edge: cannot connect to the proxy 127\.0\.0\.1:"
        rf"{port} \(.*\); check the proxy option or "
        r"WSS_PROXY",
    ):
        await collect(make_tts(proxy=f"http://127.0.0.1:{port}").synthesize("hello"))
    assert fake_edge.connections == []


async def test_proxies_come_from_the_environment_by_url_scheme(
    fake_edge: FakeEdge, make_tts: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake is ws://, so WS_PROXY applies (for Microsoft's wss:// URL: WSS_PROXY);
    # HTTP(S)_PROXY do not.
    port = _dead_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    assert await collect(make_tts().synthesize("hello"))
    monkeypatch.setenv("WS_PROXY", f"http://127.0.0.1:{port}")
    with pytest.raises(ProviderError, match=rf"cannot connect to the proxy 127\.0\.0\.1:{port}"):
        await collect(make_tts().synthesize("hello"))
    assert len(fake_edge.connections) == 1


async def test_a_connect_that_never_completes_times_out(edge_spec: ProviderSpec) -> None:
    # A listener whose accept queue is full: Linux drops further SYNs, so the TCP
    # connect hangs (loopback only).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        try:
            tts = edge_spec.create(
                {
                    "endpoint": f"ws://127.0.0.1:{port}/edge/v1",
                    "connect_timeout": 0.3,
                    "receive_timeout": 0.3,
                }
            )
            t0 = time.monotonic()
            with pytest.raises(
                ProviderTimeout,
                match=r"edge: could not connect to "
                r"ws://127\.0\.0\.1:\d+/edge/v1 within "
                r"0\.6 s \(connect_timeout \+ "
                r"receive_timeout\); check network "
                r"access, the proxy option or WSS_PROXY",
            ):
                await collect(tts.synthesize("hello"))
            assert time.monotonic() - t0 < 1.2
        finally:
            for filler in fillers:
                filler.close()


async def test_403_after_edge_tts_retried_with_a_corrected_clock(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    fake_edge.script(Reject(403), Reject(403))
    with pytest.raises(
        ProviderError,
        match=rf"edge: {URL} refused the connection \(HTTP 403 "
        r"Forbidden\).*Sec-MS-GEC token\. Upgrade edge-tts",
    ):
        await collect(make_tts().synthesize("hello"))
    assert len(fake_edge.connections) == 2  # edge-tts's own clock-skew retry


async def test_one_403_then_success_is_edge_tts_clock_correction(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    fake_edge.script(Reject(403))
    pcm = await collect(make_tts().synthesize("hello"))
    assert len(pcm) // 2 == mp3_frames(sine_mp3()) * 576
    assert len(fake_edge.connections) == 2


async def test_403_without_a_usable_date(fake_edge: FakeEdge, make_tts: Callable[..., Any]) -> None:
    fake_edge.script(Reject(403, date=""))
    with pytest.raises(
        ProviderError,
        match=r"refused the connection \(HTTP 403\) and sent no "
        r"usable Date header",
    ):
        await collect(make_tts().synthesize("hello"))


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (429, r"is rate limiting this client \(HTTP 429 Too Many Requests\): too many syntheses"),
        (404, r"does not exist \(HTTP 404 Not Found\); check the endpoint option"),
        (503, r"the service at .* failed \(HTTP 503 Service Unavailable\); retry later"),
        (400, r"the WebSocket handshake with .* failed \(HTTP 400 Bad Request\)"),
    ],
)
async def test_handshake_rejections(
    fake_edge: FakeEdge, make_tts: Callable[..., Any], status: int, message: str
) -> None:
    fake_edge.script(Reject(status))
    with pytest.raises(ProviderError, match=message) as info:
        await collect(make_tts().synthesize("hello"))
    assert not isinstance(info.value, ProviderTimeout)
    assert len(fake_edge.connections) == 1


async def test_no_audio(fake_edge: FakeEdge, make_tts: Callable[..., Any]) -> None:
    fake_edge.script(NoAudio())
    with pytest.raises(
        ProviderError,
        match=rf"edge: {URL} ended the turn without sending any "
        r"audio for voice 'en-US-AriaNeural': check that "
        r"the voice exists",
    ):
        await collect(make_tts(voice="en-US-AriaNeural").synthesize("hello"))


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        ("short_binary", r"missing the header length"),
        ("header_length", r"header length is greater than the length of the data"),
        ("binary_path", r"the path is not audio"),
        ("header_line", r"ValueError: not enough values to unpack"),
        ("text_path", r"Unknown path received"),
        ("metadata_json", r"JSONDecodeError"),
    ],
)
async def test_malformed_messages(
    fake_edge: FakeEdge, make_tts: Callable[..., Any], kind: Any, detail: str
) -> None:
    fake_edge.script(Malformed(kind))
    with pytest.raises(ProviderError, match=rf"edge: malformed message from {URL} \(.*{detail}"):
        await collect(make_tts().synthesize("hello"))
    # The client hung up on the bad message.
    assert fake_edge.connections[0].ended.is_set()


async def test_audio_that_is_not_mp3(fake_edge: FakeEdge, make_tts: Callable[..., Any]) -> None:
    fake_edge.script(Malformed("not_mp3"))
    with pytest.raises(
        ProviderError,
        match=rf"edge: the audio from {URL} is not MP3: 3000 bytes "
        r"of audio were received but no MP3 frame decoded",
    ):
        await collect(make_tts().synthesize("hello"))


async def test_hang_at_the_handshake_times_out(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    fake_edge.script(Hang("handshake"))
    t0 = time.monotonic()
    with pytest.raises(
        ProviderTimeout,
        match=rf"edge: {URL} accepted the connection but sent "
        r"no audio within 0\.6 s",
    ):
        await collect(make_tts(connect_timeout=0.3, receive_timeout=0.3).synthesize("hi"))
    assert time.monotonic() - t0 < 1.2


async def test_an_unanswered_upgrade_times_out_in_edge_tts(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    # edge-tts's own read timeout (whole seconds) covers the HTTP upgrade.
    fake_edge.script(Hang("handshake"))
    t0 = time.monotonic()
    with pytest.raises(
        ProviderTimeout,
        match=rf"edge: {URL} accepted the connection but did "
        r"not answer the WebSocket upgrade within 1 s "
        r"\(receive_timeout",
    ):
        await collect(make_tts(connect_timeout=5, receive_timeout=1).synthesize("hi"))
    assert 0.9 < time.monotonic() - t0 < 2.0


async def test_hang_after_the_ssml_times_out_and_hangs_up(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    fake_edge.script(Hang("ssml"))
    t0 = time.monotonic()
    with pytest.raises(
        ProviderTimeout,
        match=r"sent no audio within 0\.8 s \(voice "
        r"en-US-EmmaMultilingualNeural",
    ):
        await collect(make_tts(connect_timeout=0.4, receive_timeout=0.4).synthesize("hi"))
    assert time.monotonic() - t0 < 1.4
    [c] = fake_edge.connections
    assert c.got_ssml.is_set()
    await asyncio.wait_for(c.ended.wait(), 0.5)  # the socket was dropped


async def test_a_stream_that_stalls_mid_way_times_out(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    fake_edge.script(Speak(chunk_bytes=500, stop_after=2, end="hang"))
    got: list[bytes] = []
    t0 = time.monotonic()
    with pytest.raises(
        ProviderTimeout,
        match=rf"edge: the audio stream from {URL} stalled: "
        r"nothing received for 0\.3 s after 0\.\d\d s of "
        r"audio \(receive_timeout\)",
    ):
        async for chunk in make_tts(receive_timeout=0.3).synthesize("hi"):
            got.append(chunk)
    assert got  # the audio before the stall was delivered
    assert time.monotonic() - t0 < 1.0


async def test_connection_closed_before_turn_end(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    # edge-tts itself ends quietly when the socket closes; the provider notices.
    fake_edge.script(Speak(chunk_bytes=500, stop_after=3, end="close"))
    with pytest.raises(
        ProviderError,
        match=rf"edge: {URL} closed the connection before the end "
        r"of the turn \(no turn\.end\): the audio is cut "
        r"after 0\.\d\d s; retry",
    ):
        await collect(make_tts().synthesize("hi"))


async def test_connection_dropped_mid_stream(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    fake_edge.script(Speak(chunk_bytes=500, stop_after=3, end="drop"))
    # aiohttp reports the dropped socket as a closed WebSocket, like a close frame.
    with pytest.raises(ProviderError, match=r"closed the connection before the end of the turn"):
        await collect(make_tts().synthesize("hi"))


async def test_an_invalid_voice_per_call_fails_before_connecting(
    fake_edge: FakeEdge, make_tts: Callable[..., Any]
) -> None:
    with pytest.raises(ProviderError, match=r"edge: voice 'xiaoxiao' is not an Edge voice name"):
        await collect(make_tts().synthesize("hi", voice="xiaoxiao"))
    assert fake_edge.connections == []


async def test_an_endpoint_edge_tts_ignores_is_caught(
    fake_edge: FakeEdge, make_tts: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate a future edge-tts that builds its URL another way: the override is in
    # place but no longer applies, and edge-tts goes elsewhere. The connector refuses.
    import edge_tts.communicate
    from xiaozhi_edge_tts._endpoint import _RoutedURL

    class Ignored(_RoutedURL):
        def __format__(self, format_spec: str) -> str:
            return f"ws://127.0.0.2:{fake_edge.port}/elsewhere?TrustedClientToken=x"

    monkeypatch.setattr(edge_tts.communicate, "WSS_URL", Ignored("unused"))
    t0 = time.monotonic()
    with pytest.raises(
        ProviderError,
        match=r"edge: edge-tts 7\.\S+ connected to "
        r"ws://127\.0\.0\.2:\d+/elsewhere instead of the "
        r"configured endpoint ws://127\.0\.0\.1:\d+/",
    ):
        await collect(make_tts().synthesize("hi"))
    assert time.monotonic() - t0 < 1.0
    assert fake_edge.connections == []


async def test_a_replaced_wss_url_is_refused(
    fake_edge: FakeEdge, make_tts: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_tts.communicate

    monkeypatch.setattr(edge_tts.communicate, "WSS_URL", "wss://example.invalid/v1?a=1")
    with pytest.raises(
        ProviderError,
        match=r"edge: edge_tts\.communicate\.WSS_URL is not "
        r"edge-tts's read-aloud URL .*something else "
        r"replaced it",
    ):
        await collect(make_tts().synthesize("hi"))
    assert fake_edge.connections == []
