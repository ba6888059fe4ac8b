"""The optional activation step: an unknown device gets a 6-digit code and no credentials,
polls /xiaozhi/ota/activate (202 until confirmed), cannot connect over WebSocket or MQTT;
the operator confirms with `xiaozhi activation confirm CODE` (a separate process sharing the
devices file); then OTA hands out credentials and the device talks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from websockets.exceptions import InvalidStatus

from xiaozhi_core.device import FakeDevice
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.mqtt_device import FakeMqttDevice
from xiaozhi_core.sim.driver import ota_body
from xiaozhi_core.testing import fake_config

MAC = "aa:bb:cc:dd:ee:51"


@pytest.fixture
async def setup(tmp_path: Path):
    config_file = tmp_path / "deploy.yaml"
    config_file.write_text(
        "server: {port: 0, http_port: 0, limits: {max_loop_lag_ms: 0}, auth: {enabled: true},"
        " mqtt: {enabled: true, port: 0, udp_port: 0}}\n"
        "ota: {activation: true}\n"
        "vad: {provider: fake}\nasr: {provider: fake}\nllm: {provider: fake}\n"
        "tts: {provider: fake}\n"
    )
    from xiaozhi_core.config import load_config
    from xiaozhi_core.registry import default_registry

    server = await XiaozhiServer.create(
        load_config([config_file], default_registry(), auto_local=False)
    )
    await server.start()
    yield server, config_file
    await server.stop()


async def post(server: XiaozhiServer, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{server.http_port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=json.dumps(body), headers={"Device-Id": MAC, "Client-Id": "u51"}) as r,
    ):
        return r.status, dict(await r.json())


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xiaozhi_core", "activation", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_unknown_device_activates_with_the_operators_confirmation(setup):
    server, config_file = setup
    status, answer = await post(server, "/xiaozhi/ota/", ota_body(MAC, "u51"))
    assert status == 200
    code = answer["activation"]["code"]
    assert len(code) == 6 and code.isdigit() and answer["activation"]["challenge"]
    assert answer["websocket"]["token"] == "" and "mqtt" not in answer
    # the same code on the next check; the firmware's poll says "still waiting"
    assert (await post(server, "/xiaozhi/ota/", ota_body(MAC, "u51")))[1]["activation"][
        "code"
    ] == code
    assert (await post(server, "/xiaozhi/ota/activate", {}))[0] == 202
    # no way in meanwhile, even with a token issued for it
    token = server.auth.issue("u51", MAC)
    with pytest.raises(InvalidStatus) as refused:
        await FakeDevice(server.ws_url, device_id=MAC, client_id="u51", token=token).connect()
    assert refused.value.response.status_code == 403
    with pytest.raises(aiomqtt.MqttError):
        await FakeMqttDevice(server.mqtt.ota_block(MAC, "u51"), hello=False).connect()

    listed = cli(config_file, "pending")
    assert code in listed.stdout and MAC in listed.stdout, listed.stderr
    bad = cli(config_file, "confirm", "000000" if code != "000000" else "111111")
    assert bad.returncode != 0 and "no device is waiting" in bad.stderr
    done = cli(config_file, "confirm", code)
    assert done.returncode == 0 and f"activated {MAC}" in done.stdout, done.stderr

    assert (await post(server, "/xiaozhi/ota/activate", {}))[0] == 200
    status, answer = await post(server, "/xiaozhi/ota/", ota_body(MAC, "u51"))
    assert "activation" not in answer and answer["websocket"]["token"]
    async with FakeDevice(
        server.ws_url, device_id=MAC, client_id="u51", token=answer["websocket"]["token"]
    ) as dev:
        assert dev.server_hello["session_id"]
    async with FakeMqttDevice(answer["mqtt"]) as mqtt_dev:
        assert mqtt_dev.server_hello["transport"] == "udp"
    assert MAC in cli(config_file, "list").stdout

    assert cli(config_file, "revoke", MAC).returncode == 0
    status, answer = await post(server, "/xiaozhi/ota/", ota_body(MAC, "u51"))
    assert "activation" in answer


async def test_activate_without_pending_code_is_400(setup):
    server, _ = setup
    status, body = await post(server, "/xiaozhi/ota/activate", {})
    assert status == 400 and "check OTA first" in body["error"]


def test_activation_off_by_default():
    assert fake_config().ota.activation is False
