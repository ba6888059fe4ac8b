"""Where edge-tts connects, and the one connection of a synthesis.

**The endpoint override.** edge-tts (7.x) has no parameter for the service URL.
``Communicate`` builds it inside its private stream coroutine, on every connection, as
``f"{WSS_URL}&ConnectionId=…&Sec-MS-GEC=…&Sec-MS-GEC-Version=…"``, where ``WSS_URL`` is
a global of the ``edge_tts.communicate`` module (imported from ``edge_tts.constants``).
Its public ``proxy`` and ``connector`` parameters cannot help: both still make it speak
TLS to speech.platform.bing.com, verified against certifi's roots. So the smallest
override is that one global, and :func:`route` is the only code that touches it:

* it replaces ``edge_tts.communicate.WSS_URL``, once and only when some provider has an
  ``endpoint``, by :class:`_RoutedURL`: a ``str`` *equal to the original* whose
  ``format()`` (what the f-string calls) returns the endpoint of the current
  :mod:`contextvars` context, or the original URL when there is none;
* each synthesis runs edge-tts in its own task and sets its endpoint there, so
  providers with different endpoints (or none) can run at the same time;
* it is checked, not trusted: :class:`SynthesisConnector` sees the URL edge-tts really
  connects to and raises :class:`EndpointNotUsed` when it is not the endpoint (say, a
  future edge-tts builds the URL differently) instead of silently reaching Microsoft.

Example:

    >>> import contextvars, edge_tts.communicate as ec
    >>> def url_edge_tts_would_use():
    ...     return f"{ec.WSS_URL}&ConnectionId=1"
    >>> contextvars.copy_context().run(
    ...     lambda: route("ws://127.0.0.1:9/edge/v1") or url_edge_tts_would_use())
    ... # doctest: +ELLIPSIS
    'ws://127.0.0.1:9/edge/v1?TrustedClientToken=...&ConnectionId=1'
    >>> url_edge_tts_would_use() == f"{WSS_URL}&ConnectionId=1"  # elsewhere: unchanged
    True

**The connection.** Every synthesis gets its own :class:`SynthesisConnector` (edge-tts
opens a new WebSocket per text anyway), which also records whether the socket
connected (for precise timeout messages) and lets the provider abort the socket at
once on cancellation or timeout. edge-tts opens one ``ClientSession`` per connection
(one per 4 KB of text, and again to retry a 403) and each session closes the
connector it was given when it ends, which would break the next one ("Session is
closed"); so the connector ignores those closes and only :meth:`~SynthesisConnector.shutdown`,
called by the provider when the synthesis ends, closes it. The WebSockets themselves
are still closed by edge-tts as usual.
"""

from __future__ import annotations

import contextvars
from typing import Any

import aiohttp
import edge_tts.communicate
from edge_tts.constants import TRUSTED_CLIENT_TOKEN, WSS_URL
from yarl import URL

__all__ = ["EndpointNotUsed", "SynthesisConnector", "public_url", "route", "with_token"]

_ENDPOINT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "xiaozhi_edge_tts_endpoint", default=None
)


class _RoutedURL(str):
    """``WSS_URL`` as edge-tts formats it, redirected per context."""

    __slots__ = ()

    def __format__(self, format_spec: str) -> str:
        return format(_ENDPOINT.get() or str(self), format_spec)


def with_token(endpoint: str) -> str:
    """The endpoint as edge-tts expects ``WSS_URL``: with a query, to which it appends
    ``&ConnectionId=…``. Without one, edge-tts's ``TrustedClientToken`` is added.

    >>> with_token("ws://relay:8080/edge/v1")  # doctest: +ELLIPSIS
    'ws://relay:8080/edge/v1?TrustedClientToken=6A5AA1D4...'
    >>> with_token("wss://relay/tts?key=1")
    'wss://relay/tts?key=1'
    """
    if "?" in endpoint:
        return endpoint
    return f"{endpoint}?TrustedClientToken={TRUSTED_CLIENT_TOKEN}"


def route(endpoint: str | None) -> None:
    """Make edge-tts connect to ``endpoint`` (None: its own URL) in the current context.

    Call it inside the task that iterates ``Communicate.stream()``.
    """
    module_globals = vars(edge_tts.communicate)
    current = module_globals.get("WSS_URL")
    if endpoint is not None and not isinstance(current, _RoutedURL):
        if current != WSS_URL:
            raise EndpointNotUsed(
                "edge_tts.communicate.WSS_URL is not edge-tts's read-aloud URL "
                f"({current!r}); something else replaced it"
            )
        module_globals["WSS_URL"] = _RoutedURL(WSS_URL)
    _ENDPOINT.set(with_token(endpoint) if endpoint is not None else None)


def public_url(url: str | URL) -> str:
    """``url`` without its query (tokens, connection ids) for messages.

    >>> public_url(WSS_URL)
    'wss://speech.platform.bing.com/consumer/speech/synthesize/readaloud/edge/v1'
    """
    return str(URL(str(url)).with_query(None).with_fragment(None))


class EndpointNotUsed(RuntimeError):
    """edge-tts connected somewhere else than the configured endpoint."""


class SynthesisConnector(aiohttp.TCPConnector):
    """The connector handed to one ``Communicate``: checks the URL, notes the connection."""

    def __init__(self, endpoint: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected = URL(endpoint) if endpoint is not None else None
        #: The URL edge-tts asked for last, and whether a socket to it was opened.
        self.url: URL | None = None
        self.connected = False
        self.attempts = 0

    async def connect(self, req: Any, *args: Any, **kwargs: Any) -> Any:
        url: URL = req.url
        self.url = url
        self.attempts += 1
        want = self.expected
        if want is not None and (url.scheme, url.host, url.port, url.path) != (
            want.scheme,
            want.host,
            want.port,
            want.path,
        ):
            raise EndpointNotUsed(
                f"edge-tts {edge_tts.__version__} connected to {public_url(url)} instead of "
                f"the configured endpoint {public_url(want)}; this edge-tts version builds "
                "its URL differently: use the edge-tts series in xiaozhi-edge-tts's "
                "requirements, or unset the endpoint option"
            )
        connection = await super().connect(req, *args, **kwargs)
        self.connected = True
        return connection

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Ignored: called by each ``ClientSession`` edge-tts ends (see above)."""

    async def shutdown(self) -> None:
        """Close the connector and drop its sockets now (no TLS close handshake).

        The sockets are closed synchronously, before the first suspension.
        """
        await super().close(abort_ssl=True)
