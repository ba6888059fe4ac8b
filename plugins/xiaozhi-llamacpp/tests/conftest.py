"""Shared fixtures: one loaded SmolLM2 provider for the whole test session, and a
factory for providers with other options (closed at the end of the test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from xiaozhi_llamacpp.plugin import xiaozhi_providers


def _build(options: dict[str, Any]) -> Any:
    # Validated like a deployment config, built like the core builds it.
    return xiaozhi_providers()[0].create(options)


@pytest.fixture(scope="session")
def llamacpp_llm() -> Iterator[Any]:
    """Greedy decoding: replies are deterministic, assertions stable."""
    llm = _build({"temperature": 0.0, "seed": 0})
    yield llm
    llm.close()


@pytest.fixture
def make_llamacpp() -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def make(**options: Any) -> Any:
        llm = _build(options)
        built.append(llm)
        return llm

    yield make
    for llm in built:
        llm.close()
