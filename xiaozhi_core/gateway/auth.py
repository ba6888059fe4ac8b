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

__all__ = [
    "AuthError",
    "Authenticator",
    "BadRequest",
    "Identity",
    "check_id",
    "identity_from_request",
]

#: Identity headers a request may carry once only.
IDENTITY_HEADERS = ("Device-Id", "Client-Id", "Protocol-Version", "Authorization")
#: Longest Device-Id / Client-Id accepted (a MAC is 17 characters, a UUID 36).
MAX_ID_CHARS = 128
#: Longest ``issued_at`` in a token: seconds since 1970 fit in 12 digits for 30,000 years.
_MAX_ISSUED_DIGITS = 12


class AuthError(Exception):
    """Why a device was refused (sent back as the HTTP reason)."""


class BadRequest(AuthError):
    """The request itself is malformed (answered 400, not 401)."""


def check_id(name: str, value: str) -> str:
    """``value`` if it is a usable Device-Id / Client-Id, else :class:`BadRequest`.

    >>> check_id("Device-Id", "aa:bb")
    'aa:bb'
    >>> check_id("Device-Id", chr(0xdcff))
    Traceback (most recent call last):
    ...
    xiaozhi_core.gateway.auth.BadRequest: Device-Id must be printable text of at most 128 characters
    """
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise BadRequest(f"{name} must be printable text of at most {MAX_ID_CHARS} characters")
    return value


@dataclass
class Identity:
    device_id: str
    client_id: str
    token: str
    protocol_version: int


def _bearer(value: str) -> str:
    value = value.strip()
    return value[7:].strip() if value.lower().startswith("bearer ") else value


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """One header's value; :class:`BadRequest` when it is sent more than once."""
    get_all = getattr(headers, "get_all", None)
    if get_all is None:
        return headers.get(name)
    values = get_all(name)
    if len(values) > 1:
        raise BadRequest(f"header {name} sent {len(values)} times")
    return values[0] if values else None


def identity_from_request(path: str, headers: Mapping[str, str]) -> Identity:
    """Read identity from headers, falling back to query parameters (browser clients
    cannot set headers: ``?device-id=..&client-id=..&authorization=Bearer%20..``).
    A malformed request (unparsable path, a repeated identity header, an unprintable id)
    raises :class:`BadRequest`.

    >>> identity_from_request("/xiaozhi/v1/?device-id=AA&protocol-version=2", {}).device_id
    'aa'
    >>> identity_from_request("//[/xiaozhi/v1/", {})
    Traceback (most recent call last):
    ...
    xiaozhi_core.gateway.auth.BadRequest: malformed request path: Invalid IPv6 URL
    """
    try:
        query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(path).query).items() if v}
    except ValueError as exc:
        raise BadRequest(f"malformed request path: {exc}") from None
    found = {name: _header(headers, name) for name in IDENTITY_HEADERS}

    def get(name: str) -> str:
        return (found[name] or query.get(name.lower()) or "").strip()

    raw_version = get("Protocol-Version") or "0"
    if not (raw_version.isascii() and raw_version.isdigit() and len(raw_version) <= 3):
        raise BadRequest(f"Protocol-Version {raw_version[:20]!r} is not a number")
    version = int(raw_version)
    if version not in (0, 1, 2, 3):
        raise BadRequest(f"Protocol-Version {version} is not supported (1, 2 or 3)")
    device_id = check_id("Device-Id", get("Device-Id")).lower()
    client_id = check_id("Client-Id", get("Client-Id"))
    return Identity(device_id, client_id, _bearer(get("Authorization")), version)


class Authenticator:
    def __init__(
        self,
        *,
        secret: str = "",
        ttl: int = 30 * 24 * 3600,
        enabled: bool = True,
        tokens: list[str] | None = None,
        allowed_devices: list[str] | None = None,
    ) -> None:
        self.secret = (secret or secrets.token_hex(32)).encode()
        self.ttl = ttl
        self.enabled = enabled
        self.tokens = set(tokens or [])
        self.allowed = {d.lower() for d in allowed_devices or []}

    def _sign(self, client_id: str, device_id: str, issued: int) -> str:
        # surrogatepass: header bytes that are not UTF-8 arrive as lone surrogates
        message = f"{client_id}|{device_id}|{issued}".encode("utf-8", "surrogatepass")
        mac = hmac.new(self.secret, message, hashlib.sha256)
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
            raise AuthError(
                "missing token (Authorization: Bearer <token>, or the "
                "authorization query parameter); get one from the OTA endpoint"
            )
        if ident.token in self.tokens:
            return
        issued_s, _, sig = ident.token.partition(".")
        # isascii: str.isdigit() is true for '²' and other digits int() refuses;
        # the length bound keeps int() far from its digit limit
        if not (
            issued_s.isascii()
            and issued_s.isdigit()
            and len(issued_s) <= _MAX_ISSUED_DIGITS
            and sig
            and sig.isascii()
        ):
            raise AuthError("malformed token")
        issued = int(issued_s)
        expected = self._sign(ident.client_id, ident.device_id, issued)
        if not hmac.compare_digest(sig.encode(), expected.encode()):
            raise AuthError("token does not match this device/client")
        now = time.time() if now is None else now
        if now - issued > self.ttl:
            raise AuthError("token expired; fetch a new one from the OTA endpoint")
