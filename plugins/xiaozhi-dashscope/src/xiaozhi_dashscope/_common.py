"""Plumbing shared by the DashScope providers.

* the API key (option, else ``DASHSCOPE_API_KEY``) and endpoint defaults;
* error messages: every failure becomes a :class:`ProviderError` (or
  :class:`ProviderTimeout`) naming the provider, what failed and what to do;
* :class:`SessionThread`: the bridge between one blocking WebSocket session of the
  SDK and the event loop.

Why a thread per WebSocket session: the SDK's real-time audio sessions (Paraformer
recognition, CosyVoice synthesis) are synchronous only — blocking ``recv`` on a
websocket-client socket — and it offers no asyncio flavour of them. Each live session
therefore gets one dedicated thread that runs the SDK's blocking calls and hands
results to the loop with ``loop.call_soon_threadsafe``. The socket is opened through
the SDK's ``connector`` hook so the loop can *abort* it (``shutdown(SHUT_RDWR)``, which
never blocks) on cancellation or timeout; the blocked ``recv`` then returns at once and
the thread ends. Threads are never pooled and never outlive their session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from xiaozhi_core.errors import ProviderError, ProviderTimeout

log = logging.getLogger("xiaozhi_dashscope")

ENV_API_KEY = "DASHSCOPE_API_KEY"
#: How long closing a session waits for its thread (a normal end may include
#: websocket-client's close handshake, which it bounds at 3 s).
THREAD_EXIT_SECONDS = 5.0
_counter = itertools.count(1)


def resolve_api_key(option: str | None, provider: str) -> str:
    """The key from the ``api_key`` option, else from ``DASHSCOPE_API_KEY``.

    >>> resolve_api_key("sk-1", "qwen")
    'sk-1'
    >>> import os; os.environ.pop("DASHSCOPE_API_KEY", None) and None
    >>> resolve_api_key("  ", "qwen")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ProviderError: dashscope qwen: no API key. Set the DASHSCOPE_API_KEY ...
    """
    key = (option or "").strip() or os.environ.get(ENV_API_KEY, "").strip()
    if not key:
        raise ProviderError(
            f"dashscope {provider}: no API key. Set the {ENV_API_KEY} environment variable "
            "(or the provider's api_key option) to a DashScope / Model Studio API key."
        )
    return key


def api_error(
    provider: str,
    what: str,
    *,
    status: int | None = None,
    code: Any = None,
    message: Any = None,
    request_id: str | None = None,
) -> ProviderError:
    """A precise error for a failed DashScope request or task.

    >>> print(api_error("qwen", "chat request", status=401, code="InvalidApiKey",
    ...                 message="Invalid API-key provided.", request_id="r1"))
    ... # doctest: +NORMALIZE_WHITESPACE
    dashscope qwen: chat request rejected: the API key is invalid
    (HTTP 401 InvalidApiKey: Invalid API-key provided.) [request_id r1].
    Check DASHSCOPE_API_KEY or the api_key option.
    >>> print(api_error("paraformer", "recognition task", code="Throttling.RateQuota",
    ...                 message="Requests rate limit exceeded"))
    ... # doctest: +NORMALIZE_WHITESPACE
    dashscope paraformer: recognition task throttled
    (Throttling.RateQuota: Requests rate limit exceeded).
    Lower the request rate or raise the account quota in the DashScope console.
    """
    detail = " ".join(str(x) for x in (status and f"HTTP {status}", code) if x)
    if message:
        detail = f"{detail}: {message}" if detail else str(message)
    rid = f" [request_id {request_id}]" if request_id else ""
    scode = str(code or "")
    if status in (401, 403) or scode in ("InvalidApiKey", "AccessDenied", "Unauthorized"):
        return ProviderError(
            f"dashscope {provider}: {what} rejected: the API key is invalid ({detail}){rid}. "
            f"Check {ENV_API_KEY} or the api_key option."
        )
    if status == 429 or scode.startswith("Throttling"):
        return ProviderError(
            f"dashscope {provider}: {what} throttled ({detail}){rid}. Lower the request rate "
            "or raise the account quota in the DashScope console."
        )
    if status is not None and status >= 500:
        return ProviderError(
            f"dashscope {provider}: {what} failed with a DashScope server error ({detail}){rid}; "
            "the service is unavailable or overloaded, retry later."
        )
    return ProviderError(f"dashscope {provider}: {what} failed ({detail}){rid}.")


def _ws_handshake_error(provider: str, what: str, exc: Any) -> ProviderError:
    """Map websocket-client's ``WebSocketBadStatusException`` (HTTP error at upgrade)."""
    code = message = request_id = None
    body = getattr(exc, "resp_body", None)
    if body:
        try:
            data = json.loads(body)
            code, request_id = data.get("code"), data.get("request_id")
            message = data.get("message")
        except (ValueError, AttributeError):
            message = body.decode("utf-8", "replace")[:200] if isinstance(body, bytes) else body
    return api_error(
        provider,
        what,
        status=getattr(exc, "status_code", None),
        code=code,
        message=message,
        request_id=request_id,
    )


def ws_error(
    provider: str, what: str, exc: BaseException, *, url: str, timeout: float
) -> ProviderError:
    """Map an exception raised by a WebSocket session of the SDK."""
    import websocket
    from dashscope.v2.errors import APIConnectionError, DashScopeError
    from dashscope.v2.transport.ws import WsEventError

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return _ws_handshake_error(provider, what, exc)
    if isinstance(exc, (websocket.WebSocketTimeoutException, TimeoutError, socket.timeout)):
        return ProviderTimeout(
            f"dashscope {provider}: {what}: no answer from {url} within {timeout:g} s"
        )
    if isinstance(exc, (json.JSONDecodeError, WsEventError)):
        return ProviderError(
            f"dashscope {provider}: {what}: malformed message from the server ({exc})"
        )
    if isinstance(exc, APIConnectionError):
        return ProviderError(
            f"dashscope {provider}: {what}: the server closed the connection before the task "
            f"finished ({exc.message})"
        )
    if isinstance(exc, DashScopeError):  # a task-failed event: error_code, error_message
        return api_error(
            provider,
            what,
            code=exc.code or "task-failed",
            message=exc.message,
            request_id=exc.request_id,
        )
    if isinstance(exc, (websocket.WebSocketConnectionClosedException,)):
        return ProviderError(f"dashscope {provider}: {what}: connection to {url} was closed")
    if isinstance(exc, OSError):
        return ProviderError(f"dashscope {provider}: {what}: cannot reach {url}: {exc}")
    return ProviderError(f"dashscope {provider}: {what}: {type(exc).__name__}: {exc}")


class Aborted(Exception):
    """Raised in a session thread whose session was aborted by the loop."""


class SessionThread:
    """Runs one blocking SDK WebSocket session in a dedicated thread.

    Create on the loop thread, pass :meth:`connector` to the SDK, then
    :meth:`start` ``(body)``: ``body(self)`` runs in the thread; it reports to the loop
    with :meth:`post` (a callback, never blocks) or :meth:`put` (into :attr:`queue`,
    bounded: the thread waits for room, which is the back-pressure towards the socket).
    :meth:`abort`, from the loop, shuts the socket down so any blocking call returns at
    once. An exception that ends ``body`` goes to ``on_error`` on the loop (unless the
    session was aborted).
    """

    def __init__(
        self,
        kind: str,
        *,
        on_error: Callable[[BaseException], None],
        connect_timeout: float,
        buffer: int = 0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.on_error = on_error
        self.name = f"dashscope-{kind}-{next(_counter)}"
        self.connect_timeout = connect_timeout
        self.aborted = threading.Event()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._slots = threading.Semaphore(buffer) if buffer else None
        self._ws: Any = None
        self._body: Callable[[SessionThread], None] = lambda thread: None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    # -- thread side ----------------------------------------------------------------
    def connector(self, url: str, headers: dict[str, str]) -> Any:
        """The SDK's connector hook: open the socket ourselves, so we can abort it."""
        import websocket

        ws = websocket.WebSocket(enable_multithread=True)
        self._ws = ws
        if self.aborted.is_set():
            raise Aborted()
        ws.connect(url, header=headers, timeout=self.connect_timeout)
        if self.aborted.is_set():  # aborted during the handshake
            self._shutdown(ws)
            raise Aborted()
        return ws

    def post(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` on the loop soon. False if the loop is gone."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
            return True
        except RuntimeError:  # loop closed
            self.aborted.set()
            return False

    def put(self, item: Any) -> bool:
        """Hand ``item`` to :attr:`queue`, waiting while it holds ``buffer`` items."""
        if self._slots is not None:
            while not self._slots.acquire(timeout=0.05):
                if self.aborted.is_set():
                    return False
        if self.aborted.is_set():
            return False
        return self.post(self.queue.put_nowait, item)

    def _main(self) -> None:
        try:
            self._body(self)
        except BaseException as exc:  # reported to the loop, never lost in the thread
            if not self.aborted.is_set():
                self.post(self.on_error, exc)
        finally:
            with contextlib.suppress(Exception):
                if self._ws is not None:
                    self._shutdown(self._ws)
                    self._ws.shutdown()
            self.post(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    # -- loop side --------------------------------------------------------------------
    def start(self, body: Callable[[SessionThread], None]) -> None:
        """Run ``body(self)`` in the thread."""
        self._body = body
        self._thread.start()

    def taken(self) -> None:
        """The consumer took one item of :attr:`queue` (frees a slot for the thread)."""
        if self._slots is not None:
            self._slots.release()

    def abort(self) -> None:
        """Stop the session now: never blocks; the thread ends promptly."""
        self.aborted.set()
        if self._ws is not None:
            self._shutdown(self._ws)

    @staticmethod
    def _shutdown(ws: Any) -> None:
        sock = getattr(ws, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def wait_done(self) -> bool:
        """Wait (without blocking the loop) for the thread to end; False if it did not
        within :data:`THREAD_EXIT_SECONDS` (which an aborted thread never needs)."""
        if not self._thread.is_alive() and self.done.done():
            return True
        try:
            async with asyncio.timeout(THREAD_EXIT_SECONDS):
                await asyncio.shield(self.done)
            return True
        except TimeoutError:
            log.warning("%s did not end within %.1f s", self.name, THREAD_EXIT_SECONDS)
            return False

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class SessionThreads:
    """The live session threads of one provider, so that ``close()`` can end them all.

    A session that completed normally does not wait for its thread: the thread only
    has the WebSocket close handshake left (one round trip), which it does on its own
    while the result is already in use.
    """

    def __init__(self) -> None:
        self._threads: set[SessionThread] = set()

    def add(self, thread: SessionThread) -> None:
        self._threads.add(thread)
        thread.done.add_done_callback(lambda _: self._threads.discard(thread))

    def __len__(self) -> int:
        return len(self._threads)

    def __iter__(self) -> Iterator[SessionThread]:
        return iter(list(self._threads))

    async def close(self) -> None:
        threads = list(self._threads)
        for thread in threads:
            thread.abort()
        for thread in threads:
            await thread.wait_done()
