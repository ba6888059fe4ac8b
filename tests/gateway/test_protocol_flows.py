"""Every MUST of PROTOCOL.md, each listening mode, framing, abort — against a real server
(WebSockets on loopback, real Opus) with the fake providers."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.protocol.framing import encode_frame
from xiaozhi_core.protocol.messages import EMOTIONS
from xiaozhi_core.session.turn import SEND_BURST

from .conftest import speak, utterance

REPLY = "Hello there. This is a longer reply, so that it takes a while to speak out loud."


# --------------------------------------------------------------------------- hello
async def test_server_hello_has_transport_session_id_and_downstream_params(server):
    async with FakeDevice(server.ws_url) as dev:
        hello = dev.server_hello
    assert hello["type"] == "hello"
    assert hello["transport"] == "websocket"  # MUST: firmware dereferences it
    assert isinstance(hello["session_id"], str) and hello["session_id"]
    assert hello["audio_params"] == {
        "format": "opus",
        "sample_rate": 24000,
        "channels": 1,
        "frame_duration": 60,
    }


async def test_hello_without_optional_fields_is_accepted(server):
    dev = FakeDevice(server.ws_url, send_hello=False)
    await dev.connect()
    try:
        await dev.send_json({"type": "hello"})  # no version, features, audio_params
        hello = await dev.wait_for("hello", timeout=5)
        assert hello["transport"] == "websocket"
    finally:
        await dev.close()


async def test_downstream_rate_comes_from_config(make_server):
    server = await make_server(session={"output_sample_rate": 16000})
    async with FakeDevice(server.ws_url) as dev:
        assert dev.server_hello["audio_params"]["sample_rate"] == 16000
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=15)
        pcm = dev.decode_reply_audio(16000)
    assert len(pcm) > 16000 * 0.5


async def test_hello_timeout_closes_the_connection(make_server):
    server = await make_server(server={"timeouts": {"hello": 0.5}})
    dev = FakeDevice(server.ws_url, send_hello=False)
    await dev.connect()
    code, reason = await dev.wait_closed(timeout=5)
    assert code == 4001 and "hello" in reason
    await asyncio.sleep(0.1)
    assert not server.sessions


# --------------------------------------------------------------------------- a turn
@pytest.mark.parametrize("version", [1, 2, 3])
async def test_full_auto_turn_in_each_framing_version(make_server, version):
    server = await make_server(
        llm={"provider": "fake", "options": {"reply": REPLY}},
        asr={"provider": "fake", "options": {"text": "hi there"}},
    )
    async with FakeDevice(server.ws_url, protocol_version=version) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=20)
        events = dev.events()
        # order: stt, llm, tts start, (sentence_start, audio, sentence_end)+, tts stop
        assert events[:4] == ["hello", "stt", "llm", "tts:start"]
        assert events[-1] == "tts:stop"
        assert "audio" in events and events.index("audio") < events.index("tts:stop")
        assert dev.messages("stt")[0]["text"] == "hi there"
        assert dev.messages("llm")[0]["emotion"] in EMOTIONS
        subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
        assert subtitles[0] == "Hello there."
        # downstream frames decode (wrong framing would break decode_frame in the device)
        pcm = dev.decode_reply_audio()
        assert len(pcm) / 24000 > 1.0 and np.abs(pcm).max() > 1000
        if version == 2:
            stamps = [r.timestamp for r in dev.received if r.audio is not None]
            assert all(isinstance(t, int) for t in stamps)
    session_audio = server.providers.asr.instance.utterances[-1]
    assert len(session_audio) >= 16000 * 0.6  # the whole tone reached ASR


async def test_downstream_frames_are_paced_and_never_longer_than_frame_duration(make_server):
    server = await make_server(llm={"provider": "fake", "options": {"reply": REPLY}})
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=20)
    frames = [r for r in dev.received if r.audio is not None]
    assert len(frames) > 20
    from xiaozhi_core.protocol.opus import OpusDecoder

    dec = OpusDecoder(24000)
    for f in frames:
        assert len(dec.decode(f.audio)) // 2 <= 24000 * 60 // 1000
    # never more than ~2 s ahead of real time: audio sent by time t <= (t - t0) + 2 s
    t0 = frames[0].at
    for i, f in enumerate(frames):
        assert i * 0.060 <= (f.at - t0) + 2.0
    duration = len(frames) * 0.060
    assert frames[-1].at - t0 >= duration - 0.5  # paced, not burst
    stop_at = next(r.at for r in dev.received if r.message and r.message.get("state") == "stop")
    assert stop_at >= frames[-1].at


async def test_dtx_and_empty_frames_are_tolerated(server):
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        await dev.send_raw(b"")  # 0-byte "stopped" marker
        for _ in range(10):
            await dev.send_packet(b"\xf8")  # 1-byte DTX packets
        await dev.send_packet(b"\xf8\xff\xfe")  # 3-byte DTX
        await dev.stream(utterance(), realtime=False)
        await dev.wait_for("tts", "stop", timeout=15)
        assert dev.messages("stt")


async def test_malformed_frames_are_dropped_and_the_session_goes_on(make_server):
    server = await make_server()
    async with FakeDevice(server.ws_url, protocol_version=3) as dev:
        await dev.listen("start", "auto")
        await dev.send_raw(b"\x00\x00\x00\x09abc")  # v3 payload_size mismatch
        await dev.send_raw(b"\x07")  # shorter than the header
        await dev.send_raw("not json")
        await dev.send_raw(json.dumps([1, 2, 3]))
        await dev.send_raw(json.dumps({"type": "listen", "state": "bogus"}))
        await dev.stream(utterance(), realtime=False)
        await dev.wait_for("tts", "stop", timeout=15)
        session = next(iter(server.sessions.values()))
        assert session.frame_errors == 2
    text = server.render_metrics().decode()
    assert 'xiaozhi_frame_errors_total{kind="framing"} 2.0' in text
    assert 'xiaozhi_frame_errors_total{kind="json"} 2.0' in text


async def test_legacy_iot_and_unknown_types_are_ignored(server):
    async with FakeDevice(server.ws_url) as dev:
        await dev.send_json({"type": "iot", "descriptors": [{"name": "Speaker"}]})
        await dev.send_json({"type": "something_new", "x": 1})
        await dev.listen("detect", text="what is the weather")
        await dev.wait_for("tts", "stop", timeout=15)
        assert dev.messages("stt")[0]["text"] == "what is the weather"


async def test_reply_audio_is_paced_never_underruns_and_never_runs_far_ahead(make_server):
    """The device gets its pre-buffer at once, then frames in step with playback: frame k
    never arrives after the device would start playing it (no underrun) and the device
    never holds more than the pre-buffer plus one send burst."""
    server = await make_server(llm={"provider": "fake", "options": {"reply": REPLY}})
    frame = 0.060
    prebuffer = server.config.session.prebuffer_frames
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=20)
        arrivals = [r.at for r in dev.received if r.audio is not None]
    assert len(arrivals) > 40  # several seconds of reply
    t0 = arrivals[0]
    # a sentence boundary may leave the device with less, never with nothing for long
    late = [k for k, at in enumerate(arrivals) if at > t0 + k * frame + 0.05]
    assert not late, late[:5]
    ahead = max(t0 + k * frame - at for k, at in enumerate(arrivals))
    assert ahead <= (prebuffer + SEND_BURST) * frame + 0.03, ahead
    # after the pre-buffer, frames come in bursts: one gap per burst, not per frame
    gaps = np.diff(arrivals[prebuffer:])
    assert (gaps > frame / 2).sum() <= len(gaps) / SEND_BURST * 1.2


# --------------------------------------------------------------------------- modes
async def test_manual_mode_turn_ends_on_listen_stop_not_on_silence(make_server):
    server = await make_server(asr={"provider": "fake", "options": {"text": "manual"}})
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "manual")
        await dev.stream(utterance(tail=1.5), realtime=False)  # long silence: no auto end
        await asyncio.sleep(0.5)
        assert not dev.messages("stt")
        await dev.listen("stop")
        await dev.wait_for("tts", "stop", timeout=15)
        assert dev.messages("stt")[0]["text"] == "manual"
    # the whole push-to-talk audio, silence included, went to ASR
    heard = server.providers.asr.instance.utterances[-1]
    assert len(heard) >= 16000 * 2.3


async def test_manual_mode_with_nothing_said_answers_tts_stop(server):
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "manual")
        await dev.listen("stop")
        await dev.wait_for("tts", "stop", timeout=5)
        assert not dev.messages("stt")


async def test_auto_mode_two_turns_on_one_connection(make_server):
    server = await make_server()
    async with FakeDevice(server.ws_url) as dev:
        for n in (1, 2):
            mark = len(dev.received)
            await speak(dev)
            await dev.wait_for("tts", "stop", timeout=15, after=mark)
            assert len(dev.messages("stt")) == n
    assert server.providers.asr.instance.utterances


async def test_realtime_barge_in_stops_the_reply_and_starts_a_new_turn(make_server):
    server = await make_server(llm={"provider": "fake", "options": {"reply": REPLY * 3}})
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "realtime")
        await dev.stream(utterance(), realtime=False)
        await dev.wait_for("tts", "start", timeout=15)
        await dev.wait_frames(1)
        # the user talks over the reply (mic stays on in realtime mode)
        await dev.stream(utterance(lead=0.1), realtime=True)
        await dev.wait_for("tts", "stop", timeout=10)
        stop_index = next(
            i for i, r in enumerate(dev.received) if r.message and r.message.get("state") == "stop"
        )
        await dev.wait_for("stt", timeout=15, after=stop_index)  # second turn began
    assert len(server.providers.asr.instance.utterances) == 2


async def test_wake_word_detect_gets_a_greeting_and_text_detect_a_reply(make_server):
    server = await make_server(
        session={"greeting": "Hi, I am listening."},
        asr={"provider": "fake", "options": {"text": "unused"}},
    )
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("detect", text="你好小智")
        await dev.wait_for("tts", "stop", timeout=10)
        subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
        assert subtitles == ["Hi, I am listening."]
        assert not dev.messages("stt")  # a greeting is not a user query
        mark = len(dev.received)
        await dev.listen("detect", text="tell me a joke")
        await dev.wait_for("tts", "stop", timeout=10, after=mark)
        assert dev.messages("stt")[-1]["text"] == "tell me a joke"
    llm = server.providers.llm.instance
    assert llm.requests[-1][0][-1].content == "tell me a joke"


# --------------------------------------------------------------------------- abort
@pytest.mark.parametrize("reason", [None, "wake_word_detected"])
async def test_abort_while_speaking_sends_tts_stop_and_no_stale_frame(make_server, reason):
    server = await make_server(llm={"provider": "fake", "options": {"reply": REPLY * 4}})
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("tts", "start", timeout=15)
        await dev.wait_frames(5)
        await dev.abort(reason)
        await dev.wait_for("tts", "stop", timeout=2)
        stop_i = next(
            i for i, r in enumerate(dev.received) if r.message and r.message.get("state") == "stop"
        )
        await asyncio.sleep(1.0)  # anything stale would arrive now
        after = dev.received[stop_i + 1 :]
        assert not [r for r in after if r.audio is not None], "audio after tts stop"
        assert len(dev.audio_frames()) < 40  # the long reply was cut short
        session = next(iter(server.sessions.values()))
        assert session.turn_task is None
        # the session keeps working after an abort
        mark = len(dev.received)
        await speak(dev)
        await dev.wait_for("tts", "start", timeout=15, after=mark)
        await dev.abort()
        await dev.wait_for("tts", "stop", timeout=2, after=mark)
        assert dev.messages("stt")[-1]["text"] == "hello"


async def test_abort_when_idle_is_still_answered(server):
    async with FakeDevice(server.ws_url) as dev:
        await dev.abort()
        await dev.wait_for("tts", "stop", timeout=5)


async def test_abort_during_thinking_cancels_the_llm(make_server):
    server = await make_server(
        llm={"provider": "fake_io", "options": {"reply": "late words", "first_token_delay": 5.0}}
    )
    async with FakeDevice(server.ws_url) as dev:
        await speak(dev)
        await dev.wait_for("stt", timeout=10)
        await dev.abort()
        await dev.wait_for("tts", "stop", timeout=2)
        await asyncio.sleep(0.3)
        assert not dev.audio_frames()
        assert not [m for m in dev.messages("tts") if m["state"] == "start"]


# --------------------------------------------------------------------------- v2/v3 upstream
@pytest.mark.parametrize("version", [2, 3])
async def test_upstream_headers_are_parsed(make_server, version):
    server = await make_server()
    packets = utterance()
    async with FakeDevice(server.ws_url, protocol_version=version) as dev:
        await dev.listen("start", "auto")
        for i, p in enumerate(packets):
            await dev.send_raw(encode_frame(p, version, timestamp=i * 60))
        await dev.wait_for("tts", "stop", timeout=15)
    assert server.providers.asr.instance.utterances


async def test_protocol_version_from_query_and_hello(make_server):
    server = await make_server()
    async with FakeDevice(server.ws_url, protocol_version=3, use_query=True) as dev:
        await speak(dev)
        await dev.wait_for("tts", "stop", timeout=15)
        assert dev.audio_frames()


async def test_unknown_path_is_refused(server):
    bad = server.ws_url.replace("/xiaozhi/v1/", "/other/")
    with pytest.raises(InvalidStatus) as info:
        async with connect(bad):
            pass
    assert info.value.response.status_code == 404


async def test_utterance_audio_is_kept_from_the_first_syllable(make_server):
    """Pre-roll: the audio handed to ASR starts before the VAD's first voiced window."""
    server = await make_server(session={"pre_roll_ms": 300})
    pcm = np.concatenate(
        [
            np.zeros(16000, np.int16),
            (np.sin(np.arange(9600) * 0.2) * 9000).astype(np.int16),
            np.zeros(16000, np.int16),
        ]
    )
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        await dev.stream(encode_utterance(pcm), realtime=False)
        await dev.wait_for("tts", "stop", timeout=15)
    heard = server.providers.asr.instance.utterances[-1]
    lead = np.argmax(np.abs(heard) > 2000)
    assert lead >= 16000 * 0.25 - 512  # ~300 ms of pre-roll before the onset
