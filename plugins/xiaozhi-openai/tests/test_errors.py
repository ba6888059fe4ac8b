"""Failures of the server or the network become ProviderError / ProviderTimeout with
precise messages, for each of the three providers."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from fake_openai import ChatReply, ErrorReply, FakeOpenAI, Hang, SpeechReply

from xiaozhi_core.errors import ProviderError, ProviderTimeout
from xiaozhi_core.testing import tone
from xiaozhi_core.types import Message

ROLES = ["llm", "asr", "tts"]


async def run(role: str, provider: Any) -> Any:
    """One unit of work of a provider, consumed to the end."""
    if role == "llm":
        return [x async for x in provider.chat([Message("user", "hi")])]
    if role == "asr":
        return await provider.transcribe(tone(0.3))
    return [c async for c in provider.synthesize("Hello there.")]


def script(server: FakeOpenAI, role: str, *replies: Any) -> None:
    {"llm": server.script_chat, "asr": server.script_transcription, "tts": server.script_speech}[
        role
    ](*replies)


# --------------------------------------------------------------------------- HTTP status
@pytest.mark.parametrize("role", ROLES)
async def test_wrong_key_401_says_which_key_to_check(
    role: str,
    fake_openai: FakeOpenAI,
    make_provider: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-revoked-0000")
    provider = make_provider(role, api_key=None)  # the key comes from OPENAI_API_KEY
    with pytest.raises(ProviderError) as info:
        await run(role, provider)
    assert type(info.value) is ProviderError
    message = str(info.value)
    assert f"openai {role} (model " in message and fake_openai.base_url in message
    assert "the API key was rejected (401: Incorrect API key provided: sk-**********0000" in message
    assert "check OPENAI_API_KEY" in message
    assert "[request id req_" in message
    assert fake_openai.requests[-1].authorization == "Bearer sk-revoked-0000"


async def test_401_with_a_configured_key_points_at_the_option(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm", api_key="sk-typo-9999", max_retries=1)
    with pytest.raises(
        ProviderError,
        match=r"check the api_key option \(or the variable it is "
        r"set from, e\.g\. OPENAI_API_KEY\)",
    ):
        await run("llm", llm)
    assert len(fake_openai.requests) == 1  # a 401 is never retried


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ErrorReply.rate_limit(), r"was rate limited \(429: Rate limit reached for gpt-4o-mini"),
        (ErrorReply.quota(), r"quota exhausted \(429: You exceeded your current quota"),
        (ErrorReply.server_error(500), r"server error 500 \(The server had an error"),
        (ErrorReply.server_error(503), r"server error 503 .*try again later"),
        (
            ErrorReply(
                404,
                "The model `gpt-9` does not exist or you do not have access to it.",
                code="model_not_found",
            ),
            r"not found \(404: The model `gpt-9` does not exist"
            r".*check the model name",
        ),
        (
            ErrorReply(400, "Invalid value for 'voice'.", param="voice"),
            r"was rejected \(400: Invalid value for 'voice'\.\)",
        ),
        (ErrorReply(403, "Project does not have access to model."), r"permission denied \(403"),
    ],
)
async def test_status_errors(
    role: str,
    reply: ErrorReply,
    expected: str,
    fake_openai: FakeOpenAI,
    make_provider: Callable[..., Any],
) -> None:
    provider = make_provider(role)
    script(fake_openai, role, reply)
    with pytest.raises(ProviderError, match=expected) as info:
        await run(role, provider)
    assert not isinstance(info.value, ProviderTimeout)
    assert str(info.value).startswith(f"openai {role} (model ")


@pytest.mark.parametrize("role", ROLES)
async def test_one_retry_absorbs_a_transient_5xx(
    role: str, fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    provider = make_provider(role, max_retries=1)
    quick = {"retry-after-ms": "10"}  # OpenAI's header; keeps the SDK's back-off short
    script(fake_openai, role, ErrorReply(502, "Bad gateway", "server_error", headers=quick))
    assert await run(role, provider)
    assert len(fake_openai.requests) == 2
    assert fake_openai.requests[1].headers["x-stainless-retry-count"] == "1"


# --------------------------------------------------------------------------- broken streams
async def test_malformed_sse_json(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(
        ChatReply(
            raw_events=[
                '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                '[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}',
                '{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"cont',
            ]
        )
    )
    with pytest.raises(
        ProviderError,
        match=r"malformed response from http://127\.0\.0\.1:\d+/v1 "
        r"\(invalid JSON in the stream",
    ):
        await run("llm", llm)


async def test_chunks_of_the_wrong_shape(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(ChatReply(raw_events=['{"id": "c", "choices": [42]}', "[DONE]"]))
    with pytest.raises(ProviderError, match=r"malformed stream chunk"):
        await run("llm", llm)


async def test_error_event_inside_the_stream(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(
        ChatReply(
            pieces=["Hel"],
            error_event={
                "message": "The model is overloaded.",
                "type": "server_error",
                "code": None,
            },
        )
    )
    items: list[Any] = []
    with pytest.raises(
        ProviderError, match=r"reported an error mid-stream: The model is overloaded"
    ):
        async for item in llm.chat([Message("user", "hi")]):
            items.append(item)
    assert items == ["Hel"]  # what came before the error was delivered


async def test_connection_refused(make_provider: Callable[..., Any]) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = make_provider("llm", base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(
        ProviderError,
        match=rf"cannot talk to http://127\.0\.0\.1:{port}/v1 "
        r"\(ConnectError",
    ):
        await run("llm", llm)


# --------------------------------------------------------------------------- timeouts
@pytest.mark.parametrize(
    ("role", "options", "expected"),
    [
        (
            "llm",
            {"first_token_timeout": 0.3},
            r"chat completion produced no output within 0\.3 s \(first_token_timeout\)",
        ),
        (
            "asr",
            {"total_timeout": 0.3},
            r"transcription did not finish within 0\.3 s \(total_timeout\)",
        ),
        (
            "tts",
            {"first_chunk_timeout": 0.3},
            r"speech produced no output within 0\.3 s \(first_chunk_timeout\)",
        ),
    ],
)
async def test_a_hung_server_times_out_and_the_connection_is_closed(
    role: str,
    options: dict[str, Any],
    expected: str,
    fake_openai: FakeOpenAI,
    make_provider: Callable[..., Any],
) -> None:
    provider = make_provider(role, **options)
    script(fake_openai, role, Hang())
    with pytest.raises(ProviderTimeout, match=expected):
        await run(role, provider)
    await fake_openai.wait_aborted(1, within=1.0)


async def test_first_token_timeout_ignores_the_role_chunk(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    # Headers and the empty role delta arrive at once; the first token never comes in time.
    llm = make_provider("llm", first_token_timeout=0.3)
    fake_openai.script_chat(ChatReply("late reply", first_delay=5.0))
    with pytest.raises(ProviderTimeout, match=r"\(first_token_timeout\)"):
        await run("llm", llm)
    await fake_openai.wait_aborted(1, within=1.0)


@pytest.mark.parametrize("role", ["llm", "tts"])
async def test_a_stream_that_stalls_hits_read_timeout(
    role: str, fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    provider = make_provider(role, read_timeout=0.3)
    if role == "llm":
        fake_openai.script_chat(ChatReply("one two three four five six", stall_after=3))
    else:
        fake_openai.script_speech(SpeechReply(chunk_bytes=480, stall_after=3))
    received: list[Any] = []
    with pytest.raises(
        ProviderTimeout, match=r"sent nothing for read_timeout seconds \(ReadTimeout"
    ):
        async for item in (
            provider.chat([Message("user", "hi")])
            if role == "llm"
            else provider.synthesize("Hello there.")
        ):
            received.append(item)
    assert received  # the part before the stall was delivered
    await fake_openai.wait_aborted(1, within=1.0)


async def test_total_timeout_bounds_a_slow_stream(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm", total_timeout=0.4)
    fake_openai.script_chat(ChatReply(" ".join(["word"] * 30), delay=0.05))
    with pytest.raises(ProviderTimeout, match=r"did not finish within 0\.4 s \(total_timeout\)"):
        await run("llm", llm)
    await fake_openai.wait_aborted(1, within=1.0)
