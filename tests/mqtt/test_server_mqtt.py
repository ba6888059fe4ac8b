"""MQTT + UDP through the real server: OTA hands out the mqtt block, a fake device that
never subscribes holds spoken conversations over the embedded broker and encrypted UDP
(the same Session and Turn code as WebSocket, fake providers, real Opus), alongside
WebSocket devices on the same server."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.harness import ServerFactory, fake_servers, utterance
from xiaozhi_core.device import FakeDevice
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.mqtt_device import FakeMqttDevice
from xiaozhi_core.sim.driver import ota_body
from xiaozhi_core.testing import fake_config

from .conftest import until

REPLY = "Hello from the server. This is a short spoken answer."


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    base = {
        "session": {"silence_ms": 300, "min_speech_ms": 120},
        "server": {
            "limits": {"max_loop_lag_ms": 0},
            "auth": {"enabled": True},
            "mqtt": {"enabled": True, "port": 0, "udp_port": 0},
        },
        "llm": {"provider": "fake", "options": {"reply": REPLY}},
        "asr": {"provider": "fake", "options": {"text": "what is new"}},
    }
    async with fake_servers(base) as factory:
        yield factory


async def ota(server: XiaozhiServer, mac: str, uuid: str = "uuid-1") -> dict[str, Any]:
    headers = {
        "Device-Id": mac,
        "Client-Id": uuid,
        "User-Agent": "bread-compact-wifi/1.6.0",
        "Content-Type": "application/json",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.ota_url, data=json.dumps(ota_body(mac, uuid)), headers=headers) as resp,
    ):
        assert resp.status == 200
        return dict(await resp.json())


async def test_ota_returns_the_mqtt_block_next_to_websocket(make_server):
    server = await make_server()
    answer = await ota(server, "AA:BB:CC:00:00:01")
    block = answer["mqtt"]
    assert block["endpoint"] == f"127.0.0.1:{server.mqtt.port}"
    assert block["client_id"] == "GID_xiaozhi@@@aa_bb_cc_00_00_01@@@uuid-1"
    assert {"username", "password", "publish_topic", "keepalive"} <= set(block)
    assert answer["websocket"]["url"] == server.ws_url


async def test_ota_has_no_mqtt_block_when_disabled(make_server):
    server = await make_server(server={"mqtt": {"enabled": False}})
    assert "mqtt" not in await ota(server, "aa:bb:cc:00:00:01")


async def test_spoken_conversation_over_mqtt_and_udp(make_server):
    server = await make_server()
    block = (await ota(server, "aa:bb:cc:00:00:01"))["mqtt"]
    async with FakeMqttDevice(block) as dev:
        assert dev.server_hello["transport"] == "udp"
        assert dev.session_id in server.sessions
        for _turn in range(2):
            start = len(dev.received)
            await dev.listen("start", "auto")
            await dev.stream(utterance(), realtime=False)
            await dev.wait_for("tts", "stop", timeout=20, after=start)
        events = dev.events()
        assert events[:4] == ["hello", "stt", "llm", "tts:start"] and events[-1] == "tts:stop"
        assert events.count("tts:stop") == 2 and "audio" in events
        assert dev.messages("stt")[0]["text"] == "what is new"
        pcm = dev.decode_reply_audio()
        assert len(pcm) > 24000 * 0.5 and np.abs(pcm).max() > 1000  # real audio
        assert dev.gaps == 0 and sum(dev.dropped.values()) == 0
    await until(lambda: not server.sessions)  # goodbye ended the session


async def test_loss_reorder_and_duplication_on_the_uplink_keep_the_turn(make_server):
    server = await make_server()
    block = (await ota(server, "aa:bb:cc:00:00:02"))["mqtt"]
    async with FakeMqttDevice(block) as dev:
        await dev.listen("start", "auto")
        datagrams = [dev.seal(p) for p in utterance(0.8)]
        rng = random.Random(3)
        sent = [d for d in datagrams if rng.random() > 0.05]  # 5 % lost
        sent += [sent[i] for i in rng.sample(range(len(sent)), 5)]  # duplicates
        for _ in range(6):  # reordering
            i = rng.randrange(len(sent) - 2)
            sent[i], sent[i + 1] = sent[i + 1], sent[i]
        for d in sent:
            dev.send_datagram(d)
            await asyncio.sleep(0.003)
        await dev.wait_for("tts", "stop", timeout=20)
        (session,) = server.sessions.values()
        counters = session.transport.counters.as_dict()
        assert counters["duplicate"] + counters["late"] >= 5 and counters["gaps"] > 0
        assert counters["accepted"] + counters["late"] + counters["duplicate"] == len(sent)
        # what was accepted reached the lane in order, every frame decoded
        assert session.lane.frames_in == counters["accepted"]
        assert session.lane.frames_reordered == 0 and session.lane.opus_errors == 0
        # 3 ms apart, most datagrams find the session waiting: taken on the fast path
        assert session.transport.fast_frames > counters["accepted"] // 2
        # and the drops are in the Prometheus metrics by reason
        metrics = server.render_metrics().decode()
        for kind, n in (("udp_late", counters["late"]), ("udp_duplicate", counters["duplicate"])):
            if n:
                assert f'xiaozhi_frame_errors_total{{kind="{kind}"}} {float(n)}' in metrics


async def test_mqtt_and_websocket_devices_talk_at_the_same_time(make_server):
    server = await make_server()
    blocks = [(await ota(server, f"aa:bb:cc:00:01:0{i}", f"u{i}"))["mqtt"] for i in range(3)]
    ws_token = (await ota(server, "aa:bb:cc:00:02:01", "w1"))["websocket"]["token"]
    async with (
        FakeMqttDevice(blocks[0]) as m0,
        FakeMqttDevice(blocks[1]) as m1,
        FakeMqttDevice(blocks[2]) as m2,
        FakeDevice(
            server.ws_url,
            device_id="aa:bb:cc:00:02:01",
            client_id="w1",
            token=ws_token,
            protocol_version=3,
        ) as ws,
    ):
        devices: list[Any] = [m0, m1, m2, ws]
        assert len(server.sessions) == 4
        for dev in devices:
            await dev.listen("start", "auto")
        await asyncio.gather(*(dev.stream(utterance(), realtime=True) for dev in devices))
        for dev in devices:
            await dev.wait_for("tts", "stop", timeout=30)
            assert dev.messages("stt")[0]["text"] == "what is new"
            assert len(dev.audio_frames()) > 5
    await until(lambda: not server.sessions)


async def test_idle_session_gets_goodbye_and_a_new_hello_starts_again(make_server):
    server = await make_server(server={"timeouts": {"idle": 0.5}}, session={"goodbye": ""})
    block = (await ota(server, "aa:bb:cc:00:00:03"))["mqtt"]
    async with FakeMqttDevice(block) as dev:
        first = dev.session_id
        goodbye = await dev.wait_for("goodbye", timeout=10)
        assert goodbye["session_id"] == first and dev.udp is None
        await until(lambda: not server.sessions)
        await dev.open_audio_channel()  # same MQTT connection
        assert dev.session_id != first and dev.session_id in server.sessions


async def test_forged_login_is_refused(make_server):
    server = await make_server()
    block = (await ota(server, "aa:bb:cc:00:00:04"))["mqtt"]
    block["client_id"] = block["client_id"].replace("00_04", "00_05")
    import aiomqtt

    with pytest.raises(aiomqtt.MqttError):
        await FakeMqttDevice(block).connect()
    assert not server.sessions


def test_mqtt_yaml_is_the_default_plus_mqtt():
    import pathlib

    import yaml

    root = pathlib.Path(__file__).resolve().parents[2] / "configs"
    default = yaml.safe_load((root / "default.yaml").read_text())
    mqtt = yaml.safe_load((root / "mqtt.yaml").read_text())
    block = mqtt["server"].pop("mqtt")
    assert mqtt == default
    assert block["enabled"] is True and block["port"] != 8883


class LossyProxy(asyncio.DatagramProtocol):
    """A UDP relay between one device and the server that loses, duplicates and swaps the
    server's datagrams on their way to the device (the uplink passes untouched)."""

    def __init__(self, server: tuple[str, int], seed: int = 5) -> None:
        self.server, self.device = server, None
        self.rng = random.Random(seed)
        self.held: bytes | None = None
        self.sent = self.lost = self.duplicated = self.swapped = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr != self.server:
            self.device = addr
            self.transport.sendto(data, self.server)
            return
        r = self.rng.random()
        if r < 0.05:
            self.lost += 1
            return
        out = [data]
        if r < 0.10:
            self.duplicated += 1
            out = [data, data]
        elif r < 0.16 and self.held is None:
            self.held = data  # sent after the next one: reordered
            self.swapped += 1
            return
        if self.held is not None:
            out.append(self.held)
            self.held = None
        for d in out:
            self.sent += 1
            self.transport.sendto(d, self.device)


async def test_downlink_loss_reorder_and_duplication_are_handled_like_the_firmware(make_server):
    server = await make_server(llm={"provider": "fake", "options": {"reply": REPLY * 3}})
    block = (await ota(server, "aa:bb:cc:00:00:06"))["mqtt"]
    loop = asyncio.get_running_loop()
    proxy = LossyProxy(("127.0.0.1", server.mqtt.udp_port))
    relay, _ = await loop.create_datagram_endpoint(lambda: proxy, local_addr=("127.0.0.1", 0))
    try:
        async with FakeMqttDevice(block, udp_via=relay.get_extra_info("sockname")) as dev:
            await dev.listen("start", "auto")
            await dev.stream(utterance(), realtime=False)
            await dev.wait_for("tts", "stop", timeout=30)
            await asyncio.sleep(0.2)
    finally:
        relay.close()
    assert proxy.lost and proxy.duplicated and proxy.swapped
    seqs = dev.accepted_sequences
    assert seqs == sorted(set(seqs))  # strictly increasing, as played
    assert dev.dropped["old"] >= proxy.duplicated  # duplicates and late ones dropped
    assert dev.gaps >= proxy.lost
    assert len(seqs) + dev.dropped["old"] == proxy.sent
    pcm = dev.decode_reply_audio()  # what arrived still decodes
    assert len(pcm) > 24000 and np.abs(pcm).max() > 1000


async def test_health_reports_the_mqtt_gateway(make_server):
    server = await make_server()
    block = (await ota(server, "aa:bb:cc:00:00:07"))["mqtt"]
    async with FakeMqttDevice(block):
        url = f"http://127.0.0.1:{server.http_port}/health"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            health = await resp.json()
    assert health["sessions"] == 1
    assert {"connections": 1, "devices": 1, "sessions": 1}.items() <= health["mqtt"].items()
    assert health["mqtt"]["logins_refused"] == 0


def test_mqtt_runs_in_one_process():
    from xiaozhi_core.errors import ConfigError

    assert fake_config(server={"mqtt": {"enabled": True}}).server.worker_count == 1
    with pytest.raises(ConfigError, match="server.workers: must be 1 .or auto. with server.mqtt"):
        fake_config(server={"mqtt": {"enabled": True}, "workers": 2})
