"""Stopping a stream (the core closes the async generator) or cancelling the task closes
the HTTP stream at once: the fake server sees the connection close mid-response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from fake_openai import ChatReply, FakeOpenAI, Hang, SpeechReply, speech_pcm

from xiaozhi_core.testing import tone
from xiaozhi_core.types import Message

LONG_REPLY = ChatReply(" ".join(f"w{i}" for i in range(100)), delay=0.05)  # ~5 s if read


async def test_closing_the_llm_stream_closes_the_connection(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(LONG_REPLY)
    stream = llm.chat([Message("user", "talk")])
    assert [await anext(stream), await anext(stream)] == ["w0", " w1"]
    t0 = time.monotonic()
    await stream.aclose()  # what the core does when the user barges in
    await fake_openai.wait_aborted(1, within=1.0)
    assert time.monotonic() - t0 < 0.5
    assert fake_openai.chunks_sent[-1] < 10  # of ~103: the server stopped sending


async def test_cancelling_the_llm_task_closes_the_connection(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(LONG_REPLY)
    got: list[Any] = []
    two = asyncio.Event()

    async def consume() -> None:
        async for item in llm.chat([Message("user", "talk")]):
            got.append(item)
            if len(got) == 2:
                two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two.wait(), 2.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    await fake_openai.wait_aborted(1, within=1.0)
    assert fake_openai.chunks_sent[-1] < 10


async def test_closing_the_tts_stream_closes_the_connection(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    tts = make_provider("tts")
    fake_openai.script_speech(SpeechReply(pcm=speech_pcm(5.0), chunk_bytes=4800, delay=0.05))
    stream = tts.synthesize("A long sentence that takes a while to say.")
    first = await anext(stream)
    assert len(first) == 4800
    await stream.aclose()
    await fake_openai.wait_aborted(1, within=1.0)
    assert fake_openai.chunks_sent[-1] < 10  # of 50


async def test_cancelling_the_tts_task_closes_the_connection(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    tts = make_provider("tts")
    fake_openai.script_speech(SpeechReply(pcm=speech_pcm(5.0), chunk_bytes=4800, delay=0.05))
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in tts.synthesize("A long sentence."):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await fake_openai.wait_aborted(1, within=1.0)
    assert fake_openai.chunks_sent[-1] < 10


async def test_cancelling_a_pending_transcription_closes_the_connection(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    asr = make_provider("asr")
    fake_openai.script_transcription(Hang())
    task = asyncio.create_task(asr.transcribe(tone(0.5)))
    await fake_openai.wait_requests(1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    await fake_openai.wait_aborted(1, within=1.0)


async def test_the_client_is_reused_after_an_aborted_stream(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    llm = make_provider("llm")
    fake_openai.script_chat(LONG_REPLY, ChatReply("fine"))
    stream = llm.chat([Message("user", "talk")])
    await anext(stream)
    await stream.aclose()
    assert [x async for x in llm.chat([Message("user", "again")])] == ["fine"]
