"""The MQTT+UDP gateway against fake devices that never subscribe: logins, hello, the UDP
channel both ways, loss/reorder/duplication, forged and foreign datagrams, goodbye,
reconnects. The conversation is a recording echo session (tests/mqtt/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import socket

import aiomqtt
import pytest

from xiaozhi_core.mqtt_device import FakeMqttDevice
from xiaozhi_core.protocol.udp import UdpCipher, new_nonce

from .conftest import until


async def test_ota_block_has_what_the_firmware_reads(gateway):
    gw, _ = gateway
    block = gw.ota_block("AA:BB:CC:DD:EE:01", "uuid-1", "127.0.0.1")
    assert block["endpoint"] == f"127.0.0.1:{gw.port}"
    assert block["client_id"] == "GID_xiaozhi@@@aa_bb_cc_dd_ee_01@@@uuid-1"
    assert block["publish_topic"] == "device-server" and block["keepalive"] == 240
    assert all(
        isinstance(block[k], str) and block[k] for k in ("username", "password", "subscribe_topic")
    )


@pytest.mark.parametrize(
    "change",
    [
        {"password": "forged"},
        {"username": "1"},
        {"client_id": "GID_xiaozhi@@@aa_bb_cc_dd_ee_02@@@uuid-01"},
    ],
)
async def test_wrong_credentials_are_refused_at_connect(gateway, change):
    gw, _ = gateway
    block = {**gw.ota_block("aa:bb:cc:dd:ee:01", "uuid-01"), **change}
    with pytest.raises(aiomqtt.MqttError, match="Not authorized|code:135|code:5"):
        await FakeMqttDevice(block, hello=False).connect()
    assert gw.stats.logins_refused == 1


async def test_hello_gives_udp_key_nonce_and_audio_flows_both_ways_encrypted(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    udp = dev.server_hello["udp"]
    assert dev.server_hello["transport"] == "udp" and dev.session_id == "s1"
    assert len(bytes.fromhex(udp["key"])) == 16 and len(bytes.fromhex(udp["nonce"])) == 16
    assert (udp["server"], udp["port"]) == ("127.0.0.1", gw.udp_port)
    for i in range(5):
        await dev.send_packet(bytes([i]) * 40)
    await dev.wait_frames(5)
    assert dev.audio_frames() == [b"echo:" + bytes([i]) * 40 for i in range(5)]
    assert sessions.received[0][1:] == [bytes([i]) * 40 for i in range(5)]
    assert dev.gaps == 0 and dev.dropped == {"short": 0, "type": 0, "length": 0, "old": 0}


async def test_keys_and_ssrc_are_fresh_per_session(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    first = dev.server_hello["udp"]
    await dev.send_json({"type": "goodbye"})
    dev.close_audio_channel()
    await until(lambda: sessions.transports[0].closed)
    second = (await dev.open_audio_channel())["udp"]
    assert second["key"] != first["key"] and second["nonce"][8:16] != first["nonce"][8:16]
    assert dev.session_id == "s2"


async def test_loss_reorder_duplication_on_the_uplink(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    datagrams = [dev.seal(bytes([i]) * 20) for i in range(1, 21)]  # sequences 1..20
    order = [1, 2, 4, 3, 5, 5, 6, 9, 10, 7, 11, 12, 12, 12, 14, 15, 16, 17, 18, 20]
    for seq in order:  # 8, 13 and 19 lost; 3 and 7 late; 5, 12 doubled
        dev.send_datagram(datagrams[seq - 1])
        await asyncio.sleep(0.002)
    await until(lambda: len(sessions.received[0]) >= 1 + 14)
    accepted = [p[0] for p in sessions.received[0][1:]]
    assert accepted == [1, 2, 4, 5, 6, 9, 10, 11, 12, 14, 15, 16, 17, 18, 20]
    counters = sessions.transports[0].counters.as_dict()
    assert counters["late"] == 2 and counters["duplicate"] == 3
    assert counters["gaps"] == 5 and counters["lost"] == 3
    assert counters["received"] == len(order)


async def test_forged_and_foreign_datagrams_do_not_disturb_the_session(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device("aa:bb:cc:dd:ee:01")
    # a datagram of the device's previous session (its old ssrc and key), kept for later
    stale = dev.seal(b"stale")
    await dev.send_json({"type": "goodbye"})
    dev.close_audio_channel()
    await until(lambda: sessions.transports[0].closed)
    await dev.open_audio_channel()
    other = await make_device("aa:bb:cc:dd:ee:02")
    await dev.send_packet(b"first")  # pins dev's address
    await other.send_packet(b"mine")  # pins other's address
    await until(lambda: len(sessions.received[1]) == 2 and len(sessions.received[2]) == 2)
    nonce = bytes.fromhex(dev.server_hello["udp"]["nonce"])
    other_key = bytes.fromhex(other.server_hello["udp"]["key"])
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp = ("127.0.0.1", gw.udp_port)
    try:
        # dev's ssrc, another session's key, a far-ahead sequence, from another address
        attacker.sendto(UdpCipher(other_key, nonce).seal(b"garbage", 10**6), udp)
        attacker.sendto(stale, udp)  # the previous session's
        attacker.sendto(UdpCipher(b"k" * 16, new_nonce(12345)).seal(b"x", 1), udp)
        attacker.sendto(b"\x01\x00\x00\x05", udp)  # malformed
        # and the stale datagram from dev's own socket too
        dev.send_datagram(stale)
        await asyncio.sleep(0.1)
    finally:
        attacker.close()
    await dev.send_packet(b"second")  # the session goes on
    await dev.wait_frames(2)
    assert sessions.received[1][1:] == [b"first", b"second"]
    assert dev.audio_frames() == [b"echo:first", b"echo:second"]
    c = sessions.transports[1].counters
    assert c.wrong_address == 1 and c.sequence.last == 2 and c.accepted == 2
    assert gw.stats.datagrams_unknown_ssrc == 3 and gw.stats.datagrams_malformed == 1
    await other.send_packet(b"mine again")  # the other session is untouched
    await other.wait_frames(2)
    assert other.audio_frames() == [b"echo:mine", b"echo:mine again"]


async def test_downlink_waits_for_the_devices_first_datagram(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    transport = sessions.transports[0]
    await transport.send_audio(b"early-1", 0)
    await transport.send_audio(b"early-2", 60)
    await asyncio.sleep(0.05)
    assert dev.audio_frames() == []
    await dev.send_packet(b"hi")
    await dev.wait_frames(3)
    assert dev.audio_frames() == [b"early-1", b"early-2", b"echo:hi"]
    assert [r.timestamp for r in dev.received if r.audio is not None][:2] == [0, 60]


async def test_device_goodbye_ends_the_session_without_a_reply(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    await dev.send_json({"type": "goodbye"})
    await until(lambda: sessions.ended.is_set())
    await asyncio.sleep(0.05)
    assert dev.messages("goodbye") == []
    assert not gw.by_ssrc


async def test_server_close_sends_goodbye_with_the_session_id(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    await dev.listen("stop")  # the echo session closes on listen stop
    goodbye = await dev.wait_for("goodbye", timeout=5)
    assert goodbye["session_id"] == dev.session_id == "s1"
    assert dev.udp is None  # the device closed its channel, as firmware


async def test_json_without_a_session_is_answered_with_goodbye(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device(hello=False)
    await dev.send_json({"type": "listen", "state": "start", "session_id": "stale"})
    goodbye = await dev.wait_for("goodbye", timeout=5)
    assert goodbye["session_id"] == "stale" and gw.stats.json_without_session == 1


async def test_a_new_hello_replaces_the_running_session(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    await dev.open_audio_channel()
    await until(lambda: sessions.transports[0].closed)
    assert dev.session_id == "s2" and list(gw.by_ssrc.values()) == [sessions.transports[1]]


async def test_dropped_connection_ends_the_session_and_reconnect_works(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    await dev.close(goodbye=False)  # MQTT gone without goodbye
    await until(lambda: sessions.transports[0].closed)
    again = await make_device()  # same client id reconnects
    await again.send_packet(b"back")
    await again.wait_frames(1)
    assert again.session_id == "s2" and again.audio_frames() == [b"echo:back"]


async def test_publishing_on_another_topic_is_ignored(gateway, make_device):
    gw, sessions = gateway
    dev = await make_device()
    assert dev.client is not None
    await dev.client.publish(
        "devices/p2p/aa_bb_cc_dd_ee_02", json.dumps({"type": "listen", "state": "stop"}).encode()
    )
    await until(lambda: gw.stats.json_wrong_topic == 1)
    assert not sessions.transports[0].closed


async def test_subscribing_gets_nothing_from_other_devices(gateway, make_device):
    gw, sessions = gateway
    spy = await make_device("aa:bb:cc:dd:ee:03", hello=False)
    assert spy.client is not None
    await spy.client.subscribe("#")
    dev = await make_device("aa:bb:cc:dd:ee:01")
    await dev.listen("start")
    await asyncio.sleep(0.2)
    assert spy.messages() == []


def connect_packet(client_id: str, username: str, password: str, keepalive: int) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, username + password), built by hand so the
    test controls the keep-alive it announces and then stays silent."""

    def s(text: str) -> bytes:
        return len(text.encode()).to_bytes(2, "big") + text.encode()

    body = (
        s("MQTT")
        + bytes([4, 0xC2])
        + keepalive.to_bytes(2, "big")
        + s(client_id)
        + s(username)
        + s(password)
    )
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


async def silent_client(port: int, packet: bytes | None) -> tuple[float, bytes]:
    """Connect, send ``packet`` (if any), read until the server closes; (seconds, bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = asyncio.get_running_loop().time()
    if packet is not None:
        writer.write(packet)
        await writer.drain()
    received = b""
    async with asyncio.timeout(15):
        while chunk := await reader.read(100):
            received += chunk
    writer.close()
    return asyncio.get_running_loop().time() - start, received


async def test_a_silent_connection_is_dropped_after_one_and_a_half_keepalives():
    from xiaozhi_core.gateway.mqtt.credentials import MqttSigner
    from xiaozhi_core.gateway.mqtt.gateway import MqttGateway

    from .conftest import EchoSessions

    gw = MqttGateway(MqttSigner(b"k"), EchoSessions(), port=0, udp_port=0, keepalive=2)
    await gw.start()
    try:
        creds = gw.ota_block("aa:bb:cc:dd:ee:09", "u9")
        seconds, received = await silent_client(
            gw.port,
            connect_packet(creds["client_id"], creds["username"], creds["password"], keepalive=2),
        )
        assert received[:4] == bytes([0x20, 2, 0, 0])  # CONNACK, accepted
        assert 2.5 <= seconds <= 6.0, seconds  # 1.5 x 2 s, not 1 x
        await until(lambda: not gw.devices)
    finally:
        await gw.stop()


async def test_connect_must_come_quickly_and_packets_are_bounded(gateway, make_device):
    gw, _ = gateway
    gw.broker.connect_timeout = 0.5
    seconds, received = await silent_client(gw.port, None)
    assert received == b"" and seconds < 3
    dev = await make_device()
    assert dev.client is not None
    await dev.client.publish("device-server", b"x" * (gw.broker.max_packet + 10))
    await until(lambda: dev.disconnected)


async def test_a_json_flood_is_bounded():
    from xiaozhi_core.gateway.mqtt.transport import MAX_QUEUED_JSON, MqttUdpTransport
    from xiaozhi_core.session.transport import Peer

    async def publish(payload: bytes) -> bool:
        return True

    t = MqttUdpTransport(
        peer=Peer("aa:bb:cc:dd:ee:0a", "u"),
        ssrc=1,
        udp_server="127.0.0.1",
        udp_port=1,
        publish=publish,
        sendto=lambda d, a: None,
        on_closed=lambda t: None,
    )
    for i in range(MAX_QUEUED_JSON + 44):
        t.feed_json(f'{{"type":"listen","n":{i}}}')
    assert t.counters.json_dropped == 44
    t.end()
    items = [item async for item in t]
    assert len(items) == MAX_QUEUED_JSON and items[0] == '{"type":"listen","n":0}'


async def sessions_stub(transport) -> None:
    pass


async def test_udp_server_in_hello_is_where_the_device_reached_us(gateway, make_device):
    from xiaozhi_core.gateway.mqtt.credentials import MqttSigner
    from xiaozhi_core.gateway.mqtt.gateway import MqttGateway

    gw, _ = gateway
    await make_device()
    (device,) = gw.devices.values()
    assert device.local_host == "127.0.0.1"  # the MQTT connection's local end
    # a server on every interface (not started here: tests bind to loopback only) hands
    # each device the address it used, unless public_host says otherwise
    wildcard = MqttGateway(MqttSigner(b"k"), sessions_stub, host="0.0.0.0")
    assert wildcard.advertised_host("192.168.1.20") == "192.168.1.20"
    assert wildcard.advertised_host(None) == "127.0.0.1"
    wildcard.public_host = "xiaozhi.lan"
    assert wildcard.advertised_host("192.168.1.20") == "xiaozhi.lan"
