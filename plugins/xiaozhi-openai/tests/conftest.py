"""Fixtures: a fake OpenAI server on 127.0.0.1 and providers pointed at it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

# The tests import the fake server as a top-level module (pytest runs in importlib
# mode, where a tests folder is not on sys.path).
sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAI
from xiaozhi_openai.plugin import xiaozhi_providers

API_KEY = "sk-test-key"


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A running fake OpenAI server expecting ``Authorization: Bearer sk-test-key``."""
    async with FakeOpenAI(api_key=API_KEY) as server:
        yield server


def _spec(role: str) -> Any:
    return next(s for s in xiaozhi_providers() if str(s.role) == role)


@pytest.fixture
async def make_provider(fake_openai: FakeOpenAI) -> AsyncIterator[Callable[..., Any]]:
    """``make_provider("llm", model=..., ...)``: a provider (built through its spec's
    option validation and factory) talking to the fake server; closed after the test.
    Retries default to 0 so that error tests see the first failure."""
    made: list[Any] = []

    def make(role: str, **options: Any) -> Any:
        opts = {"base_url": fake_openai.base_url, "api_key": API_KEY, "max_retries": 0, **options}
        provider = _spec(role).create(opts)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()
