"""The embedded MQTT broker: amqtt's broker, delivering to a device's own connection.

Devices never SUBSCRIBE (the firmware receives whatever the broker pushes to its
connection, the Alibaba-Cloud "P2P" model), so the server does not go through topic
routing at all:

* **in**: an amqtt plugin hears every PUBLISH (``on_broker_message_received``) and hands
  it to the :class:`DeviceLink` in arrival order (each event's callback runs to its first
  ``await`` in the order the broker fired it, and ours never awaits);
* **out**: :meth:`EmbeddedBroker.deliver` writes a QoS-0 PUBLISH straight onto the
  device's connection through the broker's session API (``Broker.sessions[client_id]``
  → its protocol handler's ``mqtt_publish``), awaited in order;
* **logins** are checked by an auth plugin calling :meth:`DeviceLink.authenticate`
  (the OTA-issued HMAC credentials); a topic plugin refuses every SUBSCRIBE and every
  subscriber delivery, so one device can never read another's traffic.

The listening socket is our own (amqtt's ``external`` listener type): the port is known
when ``port=0``, and connections are counted against a limit before MQTT is parsed.

Example — a never-subscribing client gets a message pushed to it:

    >>> import asyncio, aiomqtt
    >>> class Link:
    ...     def authenticate(self, client_id, username, password, connection):
    ...         return password == "pw"
    ...     def disconnected(self, client_id, connection): pass
    ...     def message(self, client_id, topic, payload):
    ...         broker.deliver_nowait(client_id, "devices/p2p/x", b"pong:" + payload)
    >>> async def main():
    ...     global broker
    ...     broker = EmbeddedBroker(Link(), host="127.0.0.1", port=0)
    ...     await broker.start()
    ...     async with aiomqtt.Client("127.0.0.1", broker.port, identifier="dev-1",
    ...                               username="u", password="pw") as device:
    ...         await device.publish("device-server", b"ping")
    ...         async for m in device.messages:
    ...             got = m.payload
    ...             break
    ...     await broker.stop()
    ...     return got
    >>> asyncio.run(main())
    b'pong:ping'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session as AmqttSession

__all__ = ["DeviceLink", "EmbeddedBroker"]

log = logging.getLogger(__name__)

_LISTENER = "xiaozhi"


class DeviceLink(Protocol):
    """What the broker reports to (the MQTT gateway). All calls are synchronous and quick."""

    def authenticate(
        self, client_id: str, username: str, password: str, connection: object
    ) -> bool:
        """True when the login may connect (logs its own reason when not).
        ``connection`` identifies this connection in :meth:`disconnected` (a reconnect
        with the same client id takes over, and the old one's disconnect comes later)."""
        ...

    def disconnected(self, client_id: str, connection: object) -> None: ...

    def message(self, client_id: str, topic: str, payload: bytes) -> None: ...


class _GuardedReader(StreamReaderAdapter):
    """The connection's reader, with what amqtt 0.12's broker does not enforce: a silent
    connection is closed after its keep-alive plus grace (amqtt only times the read out and
    keeps waiting), CONNECT must come within ``connect_timeout``, and no single read may
    exceed ``max_packet`` bytes. Closing = EOF, which amqtt handles as a disconnect."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connect_timeout: float,
        max_packet: int,
    ) -> None:
        super().__init__(reader)
        self.writer = writer
        self.max_packet = max_packet
        #: Seconds of silence allowed (None: no limit, a keep-alive of 0).
        self.idle: float | None = connect_timeout
        self.last = time.monotonic()
        self.timed_out = False

    def _drop(self, why: str) -> bytes:
        log.info("MQTT connection from %s closed: %s", self.writer.get_extra_info("peername"), why)
        self.writer.close()
        return b""

    async def read(self, n: int = -1) -> bytes:
        if n > self.max_packet:
            return self._drop(f"a packet of more than {self.max_packet} bytes")
        data: bytes
        if self.idle is None:
            data = await super().read(n)
        else:
            remaining = self.last + self.idle - time.monotonic()
            if remaining <= 0:
                self.timed_out = True
                return self._drop(f"silent for {self.idle:g} s (keep-alive)")
            try:
                async with asyncio.timeout(remaining):
                    data = await super().read(n)
            except TimeoutError:
                self.timed_out = True
                return self._drop(f"silent for {self.idle:g} s (keep-alive)")
        self.last = time.monotonic()
        return data


class _LinkPlugin(BaseAuthPlugin):
    """Logins and events → the DeviceLink (passed in through the plugin's Config)."""

    @dataclass
    class Config:
        link: Any = None
        #: (peer address, port) → the connection's guarded reader.
        readers: Any = None

    async def authenticate(self, *, session: AmqttSession) -> bool | None:
        link: DeviceLink = self.config.link
        ok = link.authenticate(
            session.client_id or "", session.username or "", session.password or "", session
        )
        guard = self.config.readers.get((session.remote_address, session.remote_port))
        if ok and guard is not None:
            # amqtt has added the broker's grace to the client's keep-alive already
            guard.idle = float(session.keep_alive) if session.keep_alive > 0 else None
        return ok

    async def on_broker_client_disconnected(
        self, *, client_id: str, client_session: AmqttSession
    ) -> None:
        self.config.link.disconnected(client_id, client_session)

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        if message is not None and message.topic is not None:
            self.config.link.message(client_id, message.topic, bytes(message.data or b""))


class _NoSubscriptions(BaseTopicPlugin):
    """Nobody subscribes: the server delivers to connections directly."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(
        self,
        *,
        session: AmqttSession | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        return bool(action == Action.PUBLISH)


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port`` (``port=0``: a free one)."""

    def __init__(
        self,
        link: DeviceLink,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        max_connections: int = 1024,
        keepalive_grace: int = 120,
        connect_timeout: float = 10.0,
        max_packet: int = 256 * 1024,
    ) -> None:
        self.link = link
        #: Seconds past a client's keep-alive before its silent connection is dropped
        #: (MQTT 3.1.1 §3.1.2.10 asks for 1.5 × keep-alive; the gateway passes half of it).
        self.keepalive_grace = keepalive_grace
        self.connect_timeout = connect_timeout
        self.max_packet = max_packet
        self._readers: dict[tuple[str, int], _GuardedReader] = {}
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._broker: Broker | None = None

    async def start(self) -> None:
        amqtt_log = logging.getLogger("amqtt")
        if amqtt_log.level == logging.NOTSET:
            # amqtt logs every connection and packet at INFO; keep warnings and worse.
            amqtt_log.setLevel(logging.WARNING)
        self._broker = Broker(
            {
                "timeout_disconnect_delay": self.keepalive_grace,
                "listeners": {
                    "default": {"type": "external", "bind": "external"},
                    _LISTENER: {"type": "external", "bind": "external"},
                },
                "plugins": {
                    f"{__name__}._LinkPlugin": {"link": self.link, "readers": self._readers},
                    f"{__name__}._NoSubscriptions": {},
                },
            }
        )
        await self._broker.start()
        self._server = await asyncio.start_server(self._connected, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections or self._broker is None:
            log.warning(
                "MQTT connection from %s refused: %d connections open",
                writer.get_extra_info("peername"),
                self.connections,
            )
            writer.close()
            return
        self.connections += 1
        peer = writer.get_extra_info("peername")
        key = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        guard = _GuardedReader(reader, writer, self.connect_timeout, self.max_packet)
        self._readers[key] = guard
        try:
            await self._broker.external_connected(guard, StreamWriterAdapter(writer), _LISTENER)
        except Exception as exc:  # a broken client must not take the listener down
            log.info("MQTT connection from %s ended: %s", peer, exc)
        finally:
            self.connections -= 1
            if self._readers.get(key) is guard:
                del self._readers[key]
            writer.close()

    def local_host(self, connection: object) -> str | None:
        """The server address a client reached (its TCP connection's local end), given
        the amqtt session :meth:`DeviceLink.authenticate` received."""
        key = (
            getattr(connection, "remote_address", None),
            getattr(connection, "remote_port", None),
        )
        guard = self._readers.get(key)  # type: ignore[arg-type]
        sockname = guard.writer.get_extra_info("sockname") if guard is not None else None
        return str(sockname[0]) if sockname else None

    async def deliver(self, client_id: str, topic: str, payload: bytes) -> bool:
        """PUBLISH ``payload`` (QoS 0) on the connection of ``client_id``; False if gone."""
        broker = self._broker
        if broker is None:
            return False
        session, handler = broker.sessions.get(client_id, (None, None))
        if session is None or handler is None or session.transitions.state != "connected":
            return False
        try:
            await handler.mqtt_publish(topic, payload, 0, False)
        except Exception as exc:
            log.info("MQTT delivery to %s failed: %s", client_id, exc)
            return False
        return True

    def deliver_nowait(self, client_id: str, topic: str, payload: bytes) -> None:
        """:meth:`deliver` from synchronous code (fire and forget)."""
        task = asyncio.get_running_loop().create_task(self.deliver(client_id, topic, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def disconnect(self, client_id: str) -> None:
        """Drop the connection of ``client_id`` (if any)."""
        if self._broker is None:
            return
        _session, handler = self._broker.sessions.get(client_id, (None, None))
        if handler is not None:
            with contextlib.suppress(Exception):
                await handler.handle_connection_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._broker is not None:
            broker, self._broker = self._broker, None
            with contextlib.suppress(Exception):
                await broker.shutdown()
        for task in list(self._tasks):
            task.cancel()
