"""Failures of edge-tts, aiohttp and the decoder as precise :class:`ProviderError` s.

Every message starts with ``edge:``, says what failed against which URL (without its
query: it carries a connection id and a token) and what to do about it.

    >>> print(stream_error(EndpointNotUsed("edge-tts connected elsewhere"),
    ...                    url="ws://127.0.0.1:1/edge/v1", voice="en-US-AriaNeural"))
    edge: edge-tts connected elsewhere
"""

from __future__ import annotations

import asyncio
import http
import json
import math

import aiohttp
from edge_tts import exceptions as edge_errors

from xiaozhi_core.errors import ProviderError, ProviderTimeout

from ._endpoint import EndpointNotUsed
from ._mp3 import Mp3DecodeError

__all__ = ["handshake_error", "stream_error"]


def handshake_error(status: int, url: str) -> ProviderError:
    """The service answered the WebSocket upgrade with an HTTP error status.

    >>> print(handshake_error(429, "wss://x/edge/v1"))
    ... # doctest: +NORMALIZE_WHITESPACE
    edge: wss://x/edge/v1 is rate limiting this client (HTTP 429 Too Many Requests):
    too many syntheses from this IP address; lower the request rate or retry later
    """
    try:
        what = f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        what = f"HTTP {status}"
    if status == 403:
        return ProviderError(
            f"edge: {url} refused the connection ({what}), also after edge-tts corrected "
            "its clock from the server's Date: the service rejects edge-tts's "
            "Sec-MS-GEC token. Upgrade edge-tts (pip install -U 'edge-tts<8'), and check "
            "that the system clock is right"
        )
    if status == 401:
        return ProviderError(
            f"edge: {url} requires authorisation ({what}); a relay "
            "endpoint may need its own token in the endpoint URL's query"
        )
    if status == 429:
        return ProviderError(
            f"edge: {url} is rate limiting this client ({what}): too many syntheses from "
            "this IP address; lower the request rate or retry later"
        )
    if status == 404:
        return ProviderError(
            f"edge: {url} does not exist ({what}); check the endpoint "
            "option (unset it to use Microsoft's service)"
        )
    if status >= 500:
        return ProviderError(f"edge: the service at {url} failed ({what}); retry later")
    return ProviderError(f"edge: the WebSocket handshake with {url} failed ({what})")


def stream_error(
    exc: BaseException,
    *,
    url: str,
    voice: str,
    connect_timeout: float = 0.0,
    receive_timeout: float = 0.0,
) -> ProviderError:
    """Map an exception raised while edge-tts connects, streams or we decode."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, EndpointNotUsed):
        return ProviderError(f"edge: {exc}")
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return handshake_error(exc.status, url)
    if isinstance(exc, edge_errors.SkewAdjustmentError):
        # edge-tts retries a 403 once after correcting its clock from the Date header.
        return ProviderError(
            f"edge: {url} refused the connection (HTTP 403) and sent no usable Date "
            f"header to correct the clock with ({exc}); upgrade edge-tts and check the "
            "system clock"
        )
    if isinstance(exc, edge_errors.NoAudioReceived):
        return ProviderError(
            f"edge: {url} ended the turn without sending any audio for voice {voice!r}: "
            "check that the voice exists (`edge-tts --list-voices`) and that rate, "
            "volume and pitch are in range"
        )
    if isinstance(exc, edge_errors.WebSocketError):
        return ProviderError(f"edge: WebSocket error from {url}: {exc}")
    if isinstance(
        exc,
        (
            edge_errors.UnexpectedResponse,
            edge_errors.UnknownResponse,
            json.JSONDecodeError,
            UnicodeDecodeError,
            KeyError,
            ValueError,
            TypeError,
            IndexError,
        ),
    ):
        detail = (
            f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, edge_errors.EdgeTTSException)
            else str(exc)
        )
        return ProviderError(
            f"edge: malformed message from {url} ({detail}); the service's protocol may "
            "have changed: upgrade edge-tts"
        )
    if isinstance(exc, Mp3DecodeError):
        return ProviderError(f"edge: the audio from {url} is not MP3: {exc}")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ProviderError(
            f"edge: cannot connect to the proxy {exc.host}:{exc.port} "
            f"({exc.os_error}); check the proxy option or WSS_PROXY"
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ProviderError(
            f"edge: cannot resolve {exc.host} ({exc.os_error}); check DNS and network access"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            why = "connection refused: nothing listens there"
        else:
            why = str(exc.os_error)
        return ProviderError(f"edge: cannot connect to {url} ({why})")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ProviderTimeout(
            f"edge: could not connect to {url} within {math.ceil(connect_timeout)} s "
            "(connect_timeout, in whole seconds for edge-tts); check network access, the "
            "proxy option or WSS_PROXY"
        )
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return ProviderTimeout(
            f"edge: {url} accepted the connection but did not answer the WebSocket upgrade "
            f"within {math.ceil(receive_timeout)} s (receive_timeout, in whole seconds for "
            "edge-tts)"
        )
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return ProviderError(f"edge: connection to {url} failed ({type(exc).__name__}: {exc})")
    return ProviderError(f"edge: synthesis failed ({type(exc).__name__}: {exc})")
