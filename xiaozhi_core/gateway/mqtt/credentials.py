"""Per-device MQTT credentials issued by OTA, and their verification (pure, I/O-free).

The OTA ``mqtt`` block hands each device its own login:

* ``client_id`` = ``GID_xiaozhi@@@<mac with _>@@@<client uuid>`` (the three ``@@@`` parts
  the official service and its gateway use; the MAC identifies the device);
* ``username`` = the issue time in Unix seconds;
* ``password`` = base64url(HMAC-SHA256(secret, ``mqtt|<client_id>|<username>``)), so the
  broker checks a login without storing anything, and a device cannot log in as another.

Credentials expire after ``ttl`` seconds; a device fetches fresh ones at every boot.

Example:
    >>> signer = MqttSigner(b"s3cret", ttl=3600)
    >>> c = signer.issue("AA:BB:CC:DD:EE:FF", "5f1c-uuid", now=1000)
    >>> c.client_id, c.username
    ('GID_xiaozhi@@@aa_bb_cc_dd_ee_ff@@@5f1c-uuid', '1000')
    >>> signer.verify(c.client_id, c.username, c.password, now=2000)
    MqttLogin(device_id='aa:bb:cc:dd:ee:ff', client_id='5f1c-uuid')
    >>> signer.verify(c.client_id.replace("ee_ff", "ee_00"), c.username, c.password, now=2000)
    Traceback (most recent call last):
    ...
    xiaozhi_core.gateway.mqtt.credentials.CredentialError: password does not match this client id
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

__all__ = ["CredentialError", "MqttCredentials", "MqttLogin", "MqttSigner", "parse_client_id"]

GROUP = "GID_xiaozhi"
_MAC = re.compile(r"^[0-9a-f]{2}(_[0-9a-f]{2}){5}$")
_UUID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class CredentialError(Exception):
    """Why an MQTT login was refused (one line, logged; the device gets CONNACK 'not
    authorized')."""


@dataclass(frozen=True)
class MqttCredentials:
    """What OTA hands one device."""

    client_id: str
    username: str
    password: str


@dataclass(frozen=True)
class MqttLogin:
    """Who a verified login is: the device's MAC and its client uuid."""

    device_id: str
    client_id: str


def parse_client_id(client_id: str) -> MqttLogin:
    """Split ``GID_…@@@<mac_>@@@<uuid>`` into the device identity.

    >>> parse_client_id("GID_xiaozhi@@@aa_bb_cc_dd_ee_ff@@@u1")
    MqttLogin(device_id='aa:bb:cc:dd:ee:ff', client_id='u1')
    >>> try:
    ...     parse_client_id("sensor-7")
    ... except CredentialError as exc:
    ...     print(exc)
    client id 'sensor-7' is not GID_…@@@<mac>@@@<uuid>
    """
    parts = client_id.split("@@@")
    if (
        len(parts) != 3
        or not parts[0].startswith("GID_")
        or not _MAC.match(parts[1].lower())
        or not _UUID.match(parts[2])
    ):
        raise CredentialError(f"client id {client_id[:80]!r} is not GID_…@@@<mac>@@@<uuid>")
    return MqttLogin(parts[1].lower().replace("_", ":"), parts[2])


class MqttSigner:
    """Issues and verifies the HMAC-signed logins of one server secret."""

    def __init__(self, secret: bytes, ttl: int = 30 * 24 * 3600) -> None:
        if not secret:
            raise ValueError("MqttSigner needs a non-empty secret")
        self._secret = bytes(secret)
        self.ttl = ttl

    def _sign(self, client_id: str, username: str) -> str:
        mac = hmac.new(self._secret, f"mqtt|{client_id}|{username}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def issue(self, device_id: str, client_uuid: str, now: float | None = None) -> MqttCredentials:
        """Credentials for the device with MAC ``device_id`` and board uuid ``client_uuid``.

        >>> try:
        ...     MqttSigner(b"k").issue("aa-bb", "u")
        ... except CredentialError as exc:
        ...     print(exc)
        device id 'aa-bb' is not a MAC address aa:bb:cc:dd:ee:ff
        """
        mac = device_id.strip().lower().replace(":", "_").replace("-", "_")
        if not _MAC.match(mac):
            raise CredentialError(
                f"device id {device_id[:40]!r} is not a MAC address aa:bb:cc:dd:ee:ff"
            )
        uuid = client_uuid.strip() or "0"
        if not _UUID.match(uuid):
            raise CredentialError(
                f"client id {client_uuid[:80]!r} has characters outside A-Z a-z 0-9 . _ : -"
            )
        client_id = f"{GROUP}@@@{mac}@@@{uuid}"
        username = str(int(time.time() if now is None else now))
        return MqttCredentials(client_id, username, self._sign(client_id, username))

    def verify(
        self,
        client_id: str | None,
        username: str | None,
        password: str | bytes | None,
        now: float | None = None,
    ) -> MqttLogin:
        """The login's identity, or :class:`CredentialError` saying why not."""
        login = parse_client_id(client_id or "")
        if not username or not username.isdigit():
            raise CredentialError("username is not the issue time OTA handed out")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if not password:
            raise CredentialError("missing password; get credentials from the OTA endpoint")
        if not hmac.compare_digest(
            password.encode(), self._sign(client_id or "", username).encode()
        ):
            raise CredentialError("password does not match this client id")
        age = (time.time() if now is None else now) - int(username)
        if age > self.ttl:
            raise CredentialError("credentials expired; the device fetches new ones via OTA")
        return login
