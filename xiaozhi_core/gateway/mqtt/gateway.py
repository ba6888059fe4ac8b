"""The MQTT + UDP gateway: embedded broker, one UDP port, a transport per device session.

* MQTT logins are the OTA-issued credentials (:mod:`.credentials`), checked when
  ``verify`` is on; JSON is accepted only on the publish topic OTA handed out.
* ``hello`` on a connection opens a session: a new :class:`.MqttUdpTransport` (fresh
  key and ssrc) handed to ``on_session``, which runs the conversation over it. A later
  hello ends the previous session first; ``goodbye`` or a dropped connection end it.
* JSON for a device without a session is answered with ``goodbye`` (its channel is stale).
* Datagrams on the UDP port are routed by ssrc; unknown ssrcs and malformed datagrams are
  dropped and counted (:attr:`MqttGateway.stats`).

Example — a device logs in, says hello and gets the server's reply pushed to it:

    >>> import asyncio, aiomqtt, json
    >>> from xiaozhi_core.gateway.mqtt.credentials import MqttSigner
    >>> async def echo_session(transport):
    ...     async for item in transport:
    ...         if isinstance(item, str) and json.loads(item)["type"] == "hello":
    ...             await transport.send_json(json.dumps(
    ...                 {"type": "hello", "transport": "udp", "session_id": "s1",
    ...                  **transport.hello_fields()}))
    >>> async def main():
    ...     signer = MqttSigner(b"secret")
    ...     gw = MqttGateway(signer, on_session=echo_session, port=0, udp_port=0)
    ...     await gw.start()
    ...     ota = gw.ota_block("aa:bb:cc:dd:ee:ff", "uuid-1", "127.0.0.1")
    ...     host, port = ota["endpoint"].split(":")
    ...     async with aiomqtt.Client(host, int(port), identifier=ota["client_id"],
    ...             username=ota["username"], password=ota["password"]) as device:
    ...         await device.publish(ota["publish_topic"], b'{"type":"hello","version":3}')
    ...         async for m in device.messages:
    ...             reply = json.loads(m.payload)
    ...             break
    ...     await gw.stop()
    ...     return reply["session_id"], sorted(reply["udp"])
    >>> asyncio.run(main())
    ('s1', ['encryption', 'key', 'nonce', 'port', 'server'])
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ...protocol.udp import UdpError, parse_header
from ...session.transport import Peer
from .broker import EmbeddedBroker
from .credentials import CredentialError, MqttLogin, MqttSigner, parse_client_id
from .transport import MqttUdpTransport

__all__ = ["GatewayStats", "MqttGateway"]

log = logging.getLogger(__name__)

PUBLISH_TOPIC = "device-server"


@dataclass
class GatewayStats:
    """Gateway-wide counters (per-session ones live on each transport)."""

    logins_refused: int = 0
    sessions: int = 0
    datagrams_malformed: int = 0
    datagrams_unknown_ssrc: int = 0
    json_wrong_topic: int = 0
    json_without_session: int = 0


@dataclass
class _Device:
    client_id: str
    login: MqttLogin
    connection: object
    #: The server address this device reached over MQTT (where its UDP should go too).
    local_host: str | None = None
    transport: MqttUdpTransport | None = None
    task: asyncio.Task[None] | None = None


class _UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, gateway: MqttGateway) -> None:
        self.gateway = gateway

    def datagram_received(self, data: bytes, addr: tuple[object, int]) -> None:
        self.gateway._datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class MqttGateway:
    """Serves MQTT on ``host:port`` and audio on ``udp_host:udp_port``."""

    def __init__(
        self,
        signer: MqttSigner,
        on_session: Callable[[MqttUdpTransport], Awaitable[None]],
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        udp_port: int = 8884,
        public_host: str = "",
        verify: bool = True,
        allowed_devices: set[str] | None = None,
        activated: Callable[[str], bool] | None = None,
        keepalive: int = 240,
        max_connections: int = 1024,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.signer = signer
        #: MACs allowed to log in (empty: any device with valid credentials).
        self.allowed = {d.lower() for d in allowed_devices or ()}
        #: ``ota.activation``: is this device activated? (None: no activation step)
        self.activated = activated
        #: Told the reason of every dropped datagram (``udp_malformed``, ``udp_late``...).
        self.on_drop = on_drop or (lambda kind: None)
        self.on_session = on_session
        self.host, self.udp_port, self.public_host = host, udp_port, public_host
        self.verify = verify
        self.keepalive = keepalive
        self.stats = GatewayStats()
        self.broker = EmbeddedBroker(
            self,
            host=host,
            port=port,
            max_connections=max_connections,
            keepalive_grace=max(1, keepalive // 2),
        )
        self.devices: dict[str, _Device] = {}
        self.by_ssrc: dict[int, MqttUdpTransport] = {}
        self._udp: asyncio.DatagramTransport | None = None

    @property
    def port(self) -> int:
        return self.broker.port

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.broker.start()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpEndpoint(self), local_addr=(self.host, self.udp_port)
        )
        self._udp = transport
        self.udp_port = transport.get_extra_info("sockname")[1]
        log.info(
            "MQTT on %s:%d, UDP audio on %s:%d (login check %s)",
            self.host,
            self.port,
            self.host,
            self.udp_port,
            "on" if self.verify else "off",
        )

    async def stop(self) -> None:
        for device in list(self.devices.values()):
            if device.transport is not None:
                await device.transport.close(1001, "server stopping")
        tasks = [d.task for d in self.devices.values() if d.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.broker.stop()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def health(self) -> dict[str, object]:
        """Connections, live sessions and the gateway-wide counters (``GET /health``)."""
        return {
            "connections": self.broker.connections,
            "devices": len(self.devices),
            "sessions": len(self.by_ssrc),
            **dataclasses.asdict(self.stats),
        }

    # ------------------------------------------------------------------ OTA
    def advertised_host(self, request_host: str | None) -> str:
        """The host handed to devices: ``public_host``, the listening host, else the one
        the device used to reach us (OTA's Host header; the MQTT connection's local end)."""
        if self.public_host:
            return self.public_host
        if self.host not in ("0.0.0.0", "::", ""):
            return self.host
        return request_host or "127.0.0.1"

    def ota_block(
        self, device_id: str, client_uuid: str, request_host: str | None = None
    ) -> dict[str, object]:
        """The OTA response's ``mqtt`` object for one device (raises CredentialError)."""
        creds = self.signer.issue(device_id, client_uuid)
        # The firmware uses TLS only on port 8883 (esp-ml307 EspMqtt); ours is plain TCP.
        return {
            "endpoint": f"{self.advertised_host(request_host)}:{self.port}",
            "client_id": creds.client_id,
            "username": creds.username,
            "password": creds.password,
            "publish_topic": PUBLISH_TOPIC,
            # old firmware refuses the block without it; current firmware ignores it
            "subscribe_topic": "null",
            "keepalive": self.keepalive,
        }

    # ------------------------------------------------------------------ broker events
    def authenticate(
        self, client_id: str, username: str, password: str, connection: object
    ) -> bool:
        try:
            login = (
                self.signer.verify(client_id, username, password)
                if self.verify
                else parse_client_id(client_id)
            )
            if self.allowed and login.device_id not in self.allowed:
                raise CredentialError(f"device {login.device_id} is not on the allow-list")
            if self.activated is not None and not self.activated(login.device_id):
                raise CredentialError(f"device {login.device_id} is not activated")
        except CredentialError as exc:
            self.stats.logins_refused += 1
            log.warning("MQTT login refused for %r: %s", client_id[:80], exc)
            return False
        old = self.devices.get(client_id)
        if old is not None and old.transport is not None:
            old.transport.end()  # a reconnect takes over the old connection
        self.devices[client_id] = _Device(
            client_id, login, connection, self.broker.local_host(connection)
        )
        log.info("MQTT device %s logged in", client_id)
        return True

    def disconnected(self, client_id: str, connection: object) -> None:
        device = self.devices.get(client_id)
        if device is None or device.connection is not connection:
            return  # an older connection, taken over by a reconnect
        del self.devices[client_id]
        if device.transport is not None:
            device.transport.end()
        log.info("MQTT device %s disconnected", client_id)

    def message(self, client_id: str, topic: str, payload: bytes) -> None:
        device = self.devices.get(client_id)
        if device is None:
            return
        if topic != PUBLISH_TOPIC:
            self.stats.json_wrong_topic += 1
            log.info(
                "device %s published on %r, not %r; ignored", client_id, topic[:60], PUBLISH_TOPIC
            )
            return
        try:
            text = payload.decode()
            data = json.loads(text)
            kind = data.get("type") if isinstance(data, dict) else None
        except ValueError:
            text, kind = "", None
        if not isinstance(kind, str):
            log.info("device %s sent a message that is not a JSON object with a type", client_id)
            return
        if kind == "hello":
            self._open_session(device, text)
        elif device.transport is None:
            self.stats.json_without_session += 1
            goodbye = {"type": "goodbye", "session_id": data.get("session_id") or ""}
            self.broker.deliver_nowait(
                client_id, self._p2p_topic(device), json.dumps(goodbye).encode()
            )
        elif kind == "goodbye":
            device.transport.device_goodbye()
        else:
            device.transport.feed_json(text)

    # ------------------------------------------------------------------ sessions
    @staticmethod
    def _p2p_topic(device: _Device) -> str:
        return "devices/p2p/" + device.login.device_id.replace(":", "_")

    def _open_session(self, device: _Device, hello: str) -> None:
        if device.transport is not None:
            device.transport.end()
        ssrc = secrets.randbits(32)
        while ssrc in self.by_ssrc or ssrc == 0:
            ssrc = secrets.randbits(32)
        client_id, topic = device.client_id, self._p2p_topic(device)

        async def publish(payload: bytes) -> bool:
            return await self.broker.deliver(client_id, topic, payload)

        transport = MqttUdpTransport(
            peer=Peer(device.login.device_id, device.login.client_id, f"mqtt:{client_id}", 3),
            ssrc=ssrc,
            udp_server=self.advertised_host(device.local_host),
            udp_port=self.udp_port,
            publish=publish,
            sendto=self._sendto,
            on_closed=self._transport_closed,
            on_drop=self.on_drop,
        )
        self.by_ssrc[ssrc] = transport
        device.transport = transport
        transport.feed_json(hello)
        self.stats.sessions += 1
        device.task = asyncio.get_running_loop().create_task(self._run(device, transport))

    async def _run(self, device: _Device, transport: MqttUdpTransport) -> None:
        try:
            await self.on_session(transport)
        except Exception:
            log.exception("MQTT session of %s crashed", device.client_id)
        finally:
            with contextlib.suppress(Exception):
                await transport.close()
            if device.transport is transport:
                device.transport = None

    def _transport_closed(self, transport: MqttUdpTransport) -> None:
        if self.by_ssrc.get(transport.ssrc) is transport:
            del self.by_ssrc[transport.ssrc]
        log.info(
            "MQTT session %s of %s ended; UDP %s",
            transport.session_id or "?",
            transport.peer.device_id,
            transport.counters.as_dict(),
        )

    # ------------------------------------------------------------------ UDP
    def _datagram(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            header = parse_header(data)
        except UdpError:
            self.stats.datagrams_malformed += 1
            self.on_drop("udp_malformed")
            return
        transport = self.by_ssrc.get(header.ssrc)
        if transport is None:
            self.stats.datagrams_unknown_ssrc += 1
            self.on_drop("udp_unknown_ssrc")
            return
        transport.feed_datagram(header, data, address)

    def _sendto(self, datagram: bytes, address: tuple[str, int]) -> None:
        if self._udp is not None:
            self._udp.sendto(datagram, address)
