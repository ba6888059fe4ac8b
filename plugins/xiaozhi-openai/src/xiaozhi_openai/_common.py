"""What the three providers share: the SDK client, the API key, timeouts and errors.

Imports the OpenAI SDK; only the factories' modules import this one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import openai

from xiaozhi_core.errors import ProviderError, ProviderTimeout

from .plugin import OpenAIConnectionOptions

try:  # openai >= 3 talks HTTP through httpx2
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - older SDKs use httpx
    import httpx as _httpx  # type: ignore[no-redef]

__all__ = [
    "Budget",
    "Target",
    "close_quietly",
    "is_local_url",
    "make_client",
    "map_error",
    "resolve_api_key",
]

log = logging.getLogger("xiaozhi_openai")
T = TypeVar("T")

#: Sent as the bearer token to a local server that needs none (Ollama, vLLM,
#: llama.cpp server ignore it unless they were started with an API key).
NO_KEY_PLACEHOLDER = "no-key-required"


def is_local_url(url: str) -> bool:
    """True if ``url`` points at this machine or a private network (no key needed).

    >>> is_local_url("http://127.0.0.1:11434/v1"), is_local_url("http://localhost:8000/v1")
    (True, True)
    >>> is_local_url("http://192.168.1.20:8080/v1"), is_local_url("https://api.openai.com/v1")
    (True, False)
    """
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


@dataclass(frozen=True)
class Target:
    """Who is talking to whom: used in every error message.

    >>> Target("llm", "gpt-4o-mini", "https://api.openai.com/v1", "OPENAI_API_KEY").label
    "openai llm (model 'gpt-4o-mini' at https://api.openai.com/v1)"
    """

    role: str
    model: str
    base_url: str
    key_hint: str

    @property
    def label(self) -> str:
        return f"openai {self.role} (model {self.model!r} at {self.base_url})"


def resolve_api_key(options: OpenAIConnectionOptions, role: str) -> tuple[str, str]:
    """The key to send and a hint naming where it came from (for 401 messages).

    Raises :class:`ProviderError` naming the environment variable to set when no key
    is configured for a non-local server.

    >>> from xiaozhi_openai.plugin import OpenAILLMOptions
    >>> resolve_api_key(OpenAILLMOptions(api_key="sk-test"), "llm")[0]
    'sk-test'
    >>> resolve_api_key(OpenAILLMOptions(base_url="http://127.0.0.1:11434/v1",
    ...                                  api_key_env="NO_SUCH_VAR_X"), "llm")[0]
    'no-key-required'
    """
    env = options.api_key_env
    if options.api_key:
        return options.api_key, f"the api_key option (or the variable it is set from, e.g. {env})"
    value = os.environ.get(env, "").strip()
    if value:
        return value, env
    if is_local_url(options.base_url):
        return NO_KEY_PLACEHOLDER, env
    raise ProviderError(
        f"openai {role}: no API key for {options.base_url}: set the environment variable "
        f"{env} (or the provider's api_key option, e.g. api_key: ${{{env}}}). A server "
        "that needs no key on a non-local host can be given any placeholder, e.g. "
        "api_key: none."
    )


def make_client(
    options: OpenAIConnectionOptions, role: str, model: str
) -> tuple[openai.AsyncOpenAI, Target]:
    """Create the SDK client of one provider (done once, in its factory)."""
    api_key, hint = resolve_api_key(options, role)
    target = Target(role, model, options.base_url.rstrip("/"), hint)
    client = openai.AsyncOpenAI(
        api_key=api_key,
        base_url=options.base_url,
        timeout=openai.Timeout(options.read_timeout, connect=options.connect_timeout),
        max_retries=options.max_retries,
        default_headers=dict(options.extra_headers) or None,
    )
    return client, target


# --------------------------------------------------------------------------- errors
def _server_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return str(exc.message)


def _request_id(exc: openai.APIStatusError) -> str:
    rid = getattr(exc, "request_id", None)
    return f" [request id {rid}]" if rid else ""


def map_error(exc: BaseException, target: Target, doing: str) -> ProviderError:
    """Translate an SDK / HTTP / decoding exception into a precise :class:`ProviderError`.

    ``doing`` says what failed ("chat completion", "transcription", "speech").
    """
    where = f"{target.label}: {doing}"
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        msg = _server_message(exc)
        rid = _request_id(exc)
        if status == 401:
            return ProviderError(
                f"{where} was refused: the API key was rejected (401: {msg}){rid}; "
                f"check {target.key_hint} — is it a valid key for {target.base_url}?"
            )
        if status == 403:
            return ProviderError(
                f"{where} was refused: permission denied (403: {msg}){rid}; the key has no "
                f"access to model {target.model!r} (or this region/project)"
            )
        if status == 404:
            return ProviderError(
                f"{where} failed: not found (404: {msg}){rid}; check the model name "
                f"{target.model!r} and that base_url {target.base_url} is the API root "
                "(usually ending in /v1)"
            )
        if status == 429:
            if exc.code == "insufficient_quota":
                return ProviderError(
                    f"{where} was refused: quota exhausted (429: {msg}){rid}; add credit or "
                    "raise the plan's limit"
                )
            return ProviderError(
                f"{where} was rate limited (429: {msg}){rid}; too many requests or tokens per "
                "minute for this key — slow down, or raise the rate limit"
            )
        if status >= 500:
            return ProviderError(
                f"{where} failed: server error {status} ({msg}){rid}; the service is failing "
                "or overloaded, try again later"
            )
        return ProviderError(f"{where} was rejected ({status}: {msg}){rid}")
    if isinstance(exc, openai.APITimeoutError):
        cause = exc.__cause__
        if isinstance(cause, _httpx.ConnectTimeout):
            return ProviderTimeout(
                f"{where} timed out connecting to {target.base_url} (connect_timeout); is the "
                "server up and reachable?"
            )
        return ProviderTimeout(
            f"{where} timed out: the server sent nothing for read_timeout seconds "
            f"({type(cause).__name__ if cause else 'timeout'}); it is hung or overloaded"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause else exc.message
        return ProviderError(
            f"{where} failed: cannot talk to {target.base_url} ({detail}); check base_url "
            "and that the server is running"
        )
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        return ProviderError(
            f"{where} failed: the server reported an error mid-stream: {_server_message(exc)}"
        )
    if isinstance(exc, _httpx.TimeoutException):
        return ProviderTimeout(
            f"{where} timed out: the server sent nothing for read_timeout seconds "
            f"({type(exc).__name__}); it is hung or overloaded"
        )
    if isinstance(exc, _httpx.HTTPError):
        return ProviderError(
            f"{where} failed: connection to {target.base_url} broke ({type(exc).__name__}: {exc})"
        )
    if isinstance(exc, json.JSONDecodeError):
        return ProviderError(
            f"{where} failed: malformed response from {target.base_url} (invalid JSON in the "
            f"stream: {exc}); is base_url an OpenAI-compatible API?"
        )
    if isinstance(exc, openai.OpenAIError):
        return ProviderError(f"{where} failed: {exc}")
    return ProviderError(f"{where} failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- timeouts
class Budget:
    """The time one request may spend waiting for the server.

    Every wait goes through :meth:`step`, which bounds it by what is left of
    ``total`` and, until :meth:`got_first` is called, of ``first`` (the first-output
    timeout). Time the consumer spends between steps is not counted.
    """

    def __init__(
        self,
        target: Target,
        doing: str,
        total: float,
        first: float | None = None,
        first_name: str = "first_token_timeout",
    ) -> None:
        self.target = target
        self.doing = doing
        self.total = total
        self.first = first
        self.first_name = first_name
        self.spent = 0.0
        self.first_at: float | None = None

    def got_first(self) -> None:
        if self.first_at is None:
            self.first_at = self.spent

    async def step(self, awaitable: Awaitable[T]) -> T:
        first_pending = self.first is not None and self.first_at is None
        limit, name = self.total - self.spent, "total_timeout"
        if first_pending and self.first is not None and self.first - self.spent < limit:
            limit, name = self.first - self.spent, self.first_name
        t0 = time.monotonic()
        timeout = asyncio.timeout(max(limit, 0.0))
        try:
            async with timeout:
                return await awaitable
        except TimeoutError:
            if not timeout.expired():
                raise
            seconds = self.first if name == self.first_name else self.total
            what = "produced no output" if name == self.first_name else "did not finish"
            raise ProviderTimeout(
                f"{self.target.label}: {self.doing} {what} within {seconds:g} s ({name}); "
                "the server is slow or overloaded — raise the timeout or use a faster model"
            ) from None
        finally:
            self.spent += time.monotonic() - t0


async def close_quietly(resource: Any) -> None:
    """Close an SDK stream / response, ignoring errors (the request is over anyway)."""
    close = getattr(resource, "aclose", None) or getattr(resource, "close", None)
    if close is None:
        return
    try:
        await close()
    except Exception as exc:  # closing must not mask the real outcome
        log.debug("closing %r failed: %s", resource, exc)
