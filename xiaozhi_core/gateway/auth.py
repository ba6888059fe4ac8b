"""Device authentication: identity from headers *or* query parameters, HMAC tokens
issued by the OTA endpoint, static tokens and a device allow-list.

A token is ``<issued_at>.<signature>``, where the signature is HMAC-SHA256 over
``client_id|device_id|issued_at`` with the server secret, base64url without padding.

Example:
    >>> auth = Authenticator(secret="s3cret", ttl=3600, enabled=True)
    >>> token = auth.issue("c1", "aa:bb:cc:dd:ee:ff", now=1000)
    >>> auth.check(Identity("aa:bb:cc:dd:ee:ff", "c1", token, 1), now=2000)
    >>> auth.check(Identity("aa:bb:cc:dd:ee:ff", "c2", token, 1), now=2000)
    Traceback (most recent call last):
    ...
    xiaozhi_core.gateway.auth.AuthError: token does not match this device/client
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = ["AuthError", "Authenticator", "Identity", "identity_from_request"]


class AuthError(Exception):
    """Why a device was refused (sent back as the HTTP reason)."""


@dataclass
class Identity:
    device_id: str
    client_id: str
    token: str
    protocol_version: int


def _bearer(value: str) -> str:
    value = value.strip()
    return value[7:].strip() if value.lower().startswith("bearer ") else value


def identity_from_request(path: str, headers: Mapping[str, str]) -> Identity:
    """Read identity from headers, falling back to query parameters (browser clients
    cannot set headers: ``?device-id=..&client-id=..&authorization=Bearer%20..``)."""
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(path).query).items() if v}

    def get(name: str) -> str:
        return (headers.get(name) or query.get(name.lower()) or "").strip()

    raw_version = get("Protocol-Version") or "0"
    try:
        version = int(raw_version)
    except ValueError:
        raise AuthError(f"Protocol-Version {raw_version!r} is not a number") from None
    if version not in (0, 1, 2, 3):
        raise AuthError(f"Protocol-Version {version} is not supported (1, 2 or 3)")
    return Identity(get("Device-Id").lower(), get("Client-Id"), _bearer(get("Authorization")),
                    version)


class Authenticator:
    def __init__(self, *, secret: str = "", ttl: int = 30 * 24 * 3600, enabled: bool = True,
                 tokens: list[str] | None = None, allowed_devices: list[str] | None = None) -> None:
        self.secret = (secret or secrets.token_hex(32)).encode()
        self.ttl = ttl
        self.enabled = enabled
        self.tokens = set(tokens or [])
        self.allowed = {d.lower() for d in allowed_devices or []}

    def _sign(self, client_id: str, device_id: str, issued: int) -> str:
        mac = hmac.new(self.secret, f"{client_id}|{device_id}|{issued}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def issue(self, client_id: str, device_id: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._sign(client_id, device_id.lower(), issued)}"

    def check(self, ident: Identity, now: float | None = None) -> None:
        """Raise :class:`AuthError` unless ``ident`` may connect."""
        if not self.enabled:
            return
        if not ident.device_id:
            raise AuthError("missing Device-Id (header or device-id query parameter)")
        if self.allowed and ident.device_id not in self.allowed:
            raise AuthError(f"device {ident.device_id} is not on the allow-list")
        if not ident.token:
            raise AuthError("missing token (Authorization: Bearer <token>, or the "
                            "authorization query parameter); get one from the OTA endpoint")
        if ident.token in self.tokens:
            return
        issued_s, _, sig = ident.token.partition(".")
        if not issued_s.isdigit() or not sig:
            raise AuthError("malformed token")
        issued = int(issued_s)
        if not hmac.compare_digest(sig, self._sign(ident.client_id, ident.device_id, issued)):
            raise AuthError("token does not match this device/client")
        now = time.time() if now is None else now
        if now - issued > self.ttl:
            raise AuthError("token expired; fetch a new one from the OTA endpoint")
