"""Fixtures: the fake DashScope server (see fake_dashscope.py) on a random local port."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest


def _load_fake() -> object:
    # Tests run with --import-mode=importlib (no sys.path insertion): load the sibling
    # module under one stable name so every test module shares its classes.
    name = "xiaozhi_dashscope_tests_fake"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("fake_dashscope.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fake = _load_fake()


@pytest.fixture
async def fake_dashscope() -> AsyncIterator[object]:
    """A started :class:`FakeDashScope` accepting the key ``sk-test``."""
    server = fake.FakeDashScope(api_key="sk-test")  # type: ignore[attr-defined]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def fake_module() -> object:
    """The fake_dashscope module (its script and record classes)."""
    return fake


def dashscope_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dashscope-")]


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fails the test if a DashScope session thread is still alive shortly after it."""
    yield
    deadline = time.monotonic() + 2.0
    while dashscope_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not dashscope_threads(), f"threads left running: {dashscope_threads()}"
