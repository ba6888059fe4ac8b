"""The real model (SmolLM2-135M-Instruct): streaming, limits, cancellation, queueing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.types import Message, ToolCall, ToolSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

QUESTION = [Message("user", "What is the capital of France?")]
STORY = [Message("user", "Tell me a long story about a dragon and a knight.")]


def test_streams_several_text_deltas_of_a_sensible_answer(llamacpp_llm: Any) -> None:
    reply = llamacpp_llm.chat(QUESTION)
    deltas = list(reply)
    assert all(isinstance(d, str) for d in deltas)
    text = "".join(deltas)
    assert len([d for d in deltas if d]) >= 3, deltas
    assert "Paris" in text
    assert reply.stats.finish_reason == "stop"  # ended on the end-of-turn token
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    assert reply.stats.prompt_tokens > 10 and reply.stats.first_token_seconds is not None


def test_max_tokens_cuts_a_runaway_reply(make_llamacpp: Callable[..., Any]) -> None:
    llm = make_llamacpp(max_tokens=8, temperature=0.0)
    reply = llm.chat(STORY)
    deltas = [d for d in reply if d]
    assert reply.stats.tokens == 8 and reply.stats.finish_reason == "length"
    assert 1 <= len(deltas) <= 8
    assert "".join(deltas).strip()


def test_early_close_stops_generation_and_frees_the_model(llamacpp_llm: Any) -> None:
    reply = llamacpp_llm.chat(STORY)
    first = [next(reply), next(reply)]
    assert llamacpp_llm.status()["free"] == 0  # the model is held mid-reply
    reply.close()
    assert reply.stats.finish_reason == "cancelled" and reply.stats.tokens == 2
    assert llamacpp_llm.status() == {"instances": 1, "free": 1, "queued": 0}
    assert list(reply) == []  # a closed reply stays finished
    assert "".join(first).strip()
    # The model is usable again, and the next reply is complete.
    again = llamacpp_llm.chat(QUESTION)
    assert "Paris" in "".join(again) and again.stats.finish_reason == "stop"


def test_close_from_another_thread_while_a_token_is_being_computed(
    make_llamacpp: Callable[..., Any],
) -> None:
    """The core closes a stream from a pool thread while another pool thread may be
    inside next(): close() must wait for that step, then stop, never raise. (It once
    waited for the whole reply: the consumer took the step lock again token after
    token; 512 tokens so that the reply cannot end by itself first.)"""
    llamacpp_llm = make_llamacpp(max_tokens=512, temperature=0.0)
    reply = llamacpp_llm.chat(STORY)
    got: list[Any] = []
    started = threading.Event()

    def consume() -> None:
        for item in reply:
            got.append(item)
            started.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(30)
    reply.close()  # most likely while `worker` is computing the next token
    worker.join(10)
    assert not worker.is_alive()
    assert reply.stats.finish_reason == "cancelled"
    assert reply.stats.tokens < llamacpp_llm.options.max_tokens
    assert llamacpp_llm.status()["free"] == 1


def test_abandoned_reply_releases_the_model_when_collected(llamacpp_llm: Any) -> None:
    reply = llamacpp_llm.chat(STORY)
    next(reply)
    del reply  # never closed explicitly: the generator's finaliser closes it
    assert llamacpp_llm.status()["free"] == 1


def test_two_threads_are_served_one_after_the_other(llamacpp_llm: Any) -> None:
    barrier = threading.Barrier(2)
    results: dict[int, dict[str, Any]] = {}

    def run(i: int) -> None:
        barrier.wait()
        reply = llamacpp_llm.chat([Message("user", "Name three colours.")])
        items, stamps = [], []
        for item in reply:
            items.append(item)
            if item:
                stamps.append(time.monotonic())
        results[i] = {
            "items": items,
            "stamps": stamps,
            "stats": reply.stats,
            "end": time.monotonic(),
        }

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1]
    for r in results.values():
        assert "".join(r["items"]).strip(), r
        assert r["stats"].finish_reason == "stop"
    # Serialised: the text of one reply started after the other had ended, and the one
    # that waited reported empty deltas (it handed its thread back) while queued.
    first, second = sorted(results.values(), key=lambda r: r["stamps"][0])
    assert second["stamps"][0] > first["stamps"][-1]
    assert second["stats"].queued_seconds > 0.05
    assert "" in second["items"]
    assert llamacpp_llm.status() == {"instances": 1, "free": 1, "queued": 0}


def test_waiting_longer_than_wait_timeout_is_a_provider_error(
    make_llamacpp: Callable[..., Any],
) -> None:
    llm = make_llamacpp(wait_timeout=0.3)
    holder = llm.chat(STORY)
    next(holder)  # holds the only model copy
    waiting = llm.chat(QUESTION)
    t0 = time.monotonic()
    with pytest.raises(ProviderError, match=r"no free model copy within wait_timeout 0.3s"):
        for item in waiting:
            assert item == ""
    assert 0.25 < time.monotonic() - t0 < 2
    assert llm.status()["queued"] == 0  # the failed reply left the queue
    holder.close()
    assert llm.status()["free"] == 1


def test_two_instances_serve_two_replies_at_once(make_llamacpp: Callable[..., Any]) -> None:
    llm = make_llamacpp(instances=2, temperature=0.0)
    a, b = llm.chat(QUESTION), llm.chat(STORY)
    assert next(a) and next(b)  # both started: neither is queued behind the other
    assert llm.status() == {"instances": 2, "free": 0, "queued": 0}
    assert "Paris" in "".join(a)
    b.close()
    assert llm.status()["free"] == 2


def test_tool_history_renders_and_offered_tools_are_ignored(llamacpp_llm: Any) -> None:
    history = [
        Message("system", "You are a voice assistant."),
        Message("user", "What time is it?"),
        Message("assistant", "", tool_calls=[ToolCall("c1", "get_time", {})]),
        Message("tool", "It is 12:00.", tool_call_id="c1"),
    ]
    reply = llamacpp_llm.chat(history, tools=[ToolSpec("get_time", "Current time")])
    items = list(reply)
    assert all(isinstance(i, str) for i in items)  # never a ToolCall
    assert "".join(items).strip() and reply.stats.finish_reason in ("stop", "length")


def test_long_history_is_trimmed_to_the_context_window(make_llamacpp: Callable[..., Any]) -> None:
    llm = make_llamacpp(n_ctx=256, max_tokens=16, temperature=0.0)
    history = [Message("system", "Be brief.")]
    for i in range(20):
        history += [Message("user", f"Remember the number {i}."), Message("assistant", "OK.")]
    history.append(Message("user", "What is the capital of France?"))
    reply = llm.chat(history)
    assert "".join(reply).strip()
    assert reply.stats.dropped_turns > 0
    assert reply.stats.prompt_tokens <= 256 - 16


def test_a_message_too_long_for_the_context_is_a_provider_error(
    make_llamacpp: Callable[..., Any],
) -> None:
    llm = make_llamacpp(n_ctx=128, max_tokens=16)
    with pytest.raises(ProviderError, match=r"prompt needs \d+ tokens .* raise llm.options.n_ctx"):
        list(llm.chat([Message("user", "word " * 400)]))
    assert llm.status()["free"] == 1
