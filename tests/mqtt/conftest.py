"""Fixtures: the MQTT gateway with a recording echo session (real amqtt broker, real UDP,
loopback), and fake MQTT devices logged in with OTA-issued credentials."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from xiaozhi_core.gateway.mqtt.credentials import MqttSigner
from xiaozhi_core.gateway.mqtt.gateway import MqttGateway
from xiaozhi_core.gateway.mqtt.transport import MqttUdpTransport
from xiaozhi_core.mqtt_device import FakeMqttDevice


class EchoSessions:
    """A stand-in for the conversation: answers hello, echoes each Opus packet back,
    records everything a session received."""

    def __init__(self) -> None:
        self.transports: list[MqttUdpTransport] = []
        self.received: list[list[str | bytes]] = []
        self.ended = asyncio.Event()
        self.count = 0

    async def __call__(self, transport: MqttUdpTransport) -> None:
        self.count += 1
        sid = f"s{self.count}"
        self.transports.append(transport)
        got: list[str | bytes] = []
        self.received.append(got)
        try:
            async for item in transport:
                got.append(item)
                if isinstance(item, bytes):
                    await transport.send_audio(b"echo:" + item, 0)
                    continue
                data = json.loads(item)
                if data["type"] == "hello":
                    await transport.send_json(
                        json.dumps(
                            {
                                "type": "hello",
                                "transport": "udp",
                                "session_id": sid,
                                "audio_params": {
                                    "format": "opus",
                                    "sample_rate": 24000,
                                    "channels": 1,
                                    "frame_duration": 60,
                                },
                                **transport.hello_fields(),
                            }
                        )
                    )
                elif data["type"] == "listen" and data.get("state") == "stop":
                    await transport.close()
        finally:
            self.ended.set()


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[MqttGateway, EchoSessions]]:
    sessions = EchoSessions()
    gw = MqttGateway(MqttSigner(b"test-secret"), sessions, port=0, udp_port=0)
    await gw.start()
    yield gw, sessions
    await gw.stop()


DeviceFactory = Callable[..., Any]


@pytest.fixture
async def make_device(gateway) -> AsyncIterator[DeviceFactory]:
    gw, _ = gateway
    devices: list[FakeMqttDevice] = []

    async def factory(mac: str = "aa:bb:cc:dd:ee:01", **kw: Any) -> FakeMqttDevice:
        dev = FakeMqttDevice(gw.ota_block(mac, f"uuid-{mac[-2:]}", "127.0.0.1"), **kw)
        await dev.connect()
        devices.append(dev)
        return dev

    yield factory
    for dev in devices:
        await dev.close()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        # polls state owned by code that has no event to wait on
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
