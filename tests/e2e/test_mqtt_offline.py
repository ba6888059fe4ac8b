"""configs/mqtt.yaml as shipped (the offline default + MQTT/UDP): a spoken question over
MQTT + UDP and another over WebSocket, at the same time, on one server — real silero,
whisper, SmolLM2 and espeak-ng."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from xiaozhi_core.config import load_config
from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.mqtt_device import FakeMqttDevice
from xiaozhi_core.registry import default_registry
from xiaozhi_core.sim.driver import ota_body

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def spoken_question() -> np.ndarray:
    from xiaozhi_espeak.plugin import EspeakOptions
    from xiaozhi_espeak.tts import EspeakTTS

    tts = EspeakTTS(EspeakOptions(voice="en-us", rate=150, sample_rate=16000))
    pcm = np.frombuffer(b"".join(tts.synthesize(QUESTION)), np.int16)
    return np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(24000, np.int16)])


async def test_offline_mqtt_config_serves_both_transports(spoken_question, tmp_path):
    override = tmp_path / "ports.yaml"
    override.write_text(
        "server: {port: 0, http_port: 0, limits: {max_loop_lag_ms: 0},\n"
        "         mqtt: {port: 0, udp_port: 0}}\n"
    )
    config = load_config(
        [ROOT / "configs" / "mqtt.yaml", override], default_registry(), auto_local=False
    )
    server = await XiaozhiServer.create(config)
    await server.start()
    try:
        mac = "aa:bb:cc:dd:ee:31"
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                server.ota_url,
                data=json.dumps(ota_body(mac, "u31")),
                headers={"Device-Id": mac, "Client-Id": "u31"},
            ) as resp,
        ):
            answer = await resp.json()
        packets = encode_utterance(spoken_question)
        async with (
            FakeMqttDevice(answer["mqtt"]) as mqtt_dev,
            FakeDevice(answer["websocket"]["url"], protocol_version=3) as ws_dev,
        ):
            for dev in (mqtt_dev, ws_dev):
                await dev.listen("start", "auto")
            await asyncio.gather(mqtt_dev.stream(packets), ws_dev.stream(packets))
            for dev in (mqtt_dev, ws_dev):
                await dev.wait_for("tts", "stop", timeout=90)
    finally:
        await server.stop()
    for dev in (mqtt_dev, ws_dev):
        stt = dev.messages("stt")[0]["text"]
        assert {"capital", "france"} <= set(re.findall(r"[a-z']+", stt.lower())), stt
        reply = dev.decode_reply_audio()
        assert len(reply) > 24000 * 0.5
        assert np.sqrt(np.mean(reply.astype(np.float64) ** 2)) > 300
    assert mqtt_dev.server_hello["transport"] == "udp"
    assert mqtt_dev.gaps == 0 and sum(mqtt_dev.dropped.values()) == 0
