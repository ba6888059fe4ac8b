"""Fixtures: the fake Edge service on 127.0.0.1, providers pointed at it, and a guard
that fails any test of this folder that tries to reach a non-loopback host."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Test modules import the fake as a top-level module (importlib mode puts no test
# folder on sys.path).
sys.path.insert(0, str(Path(__file__).parent))

from fake_edge import FakeEdge
from xiaozhi_edge_tts.plugin import xiaozhi_providers

from xiaozhi_core.providers import ProviderSpec


# --------------------------------------------------------------------------- no network
class _NetworkGuard:
    """An audit hook (installed once per process, active only during these tests)
    that refuses DNS look-ups and socket connections to anything but loopback."""

    def __init__(self) -> None:
        self.active = False
        self.violations: list[str] = []

    @staticmethod
    def _loopback(host: Any) -> bool:
        if host is None or host in ("", "localhost", b"localhost"):
            return True
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False  # a host name other than localhost

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "socket.getaddrinfo":
            host = args[0]
        elif event == "socket.connect":
            address = args[1]
            if not isinstance(address, tuple):  # AF_UNIX path
                return
            host = address[0]
        else:
            return
        if not self._loopback(host):
            self.violations.append(f"{event} {host!r}")
            raise RuntimeError(f"test tried to reach a non-loopback host: {event} {host!r}")


def _guard() -> _NetworkGuard:
    guard = getattr(sys, "_xiaozhi_edge_tts_network_guard", None)
    if guard is None:
        guard = _NetworkGuard()
        sys.addaudithook(guard)  # audit hooks cannot be removed; inactive outside
        sys._xiaozhi_edge_tts_network_guard = guard  # type: ignore[attr-defined]
    return guard


@pytest.fixture(autouse=True)
def no_network() -> Iterator[_NetworkGuard]:
    """Every test here: loopback only. A blocked attempt fails the test even if the
    code under test swallowed the error."""
    guard = _guard()
    guard.violations.clear()
    guard.active = True
    try:
        yield guard
    finally:
        guard.active = False
    assert not guard.violations, f"non-loopback network access: {guard.violations}"


@pytest.fixture(autouse=True)
def keep_edge_tts_clock() -> Iterator[None]:
    """edge-tts corrects a 403 by shifting a process-wide clock skew (from the fake's
    Date header): undo it after each test."""
    from edge_tts.drm import DRM

    skew = DRM.clock_skew_seconds
    yield
    DRM.clock_skew_seconds = skew


# --------------------------------------------------------------------------- fake service
@pytest.fixture
async def fake_edge() -> AsyncIterator[FakeEdge]:
    """A running fake Edge read-aloud service."""
    async with FakeEdge() as server:
        yield server


@pytest.fixture
def edge_spec() -> ProviderSpec:
    """The ``edge`` provider's spec (as the entry point declares it)."""
    [spec] = xiaozhi_providers()
    return spec


@pytest.fixture
async def make_tts(
    fake_edge: FakeEdge, edge_spec: ProviderSpec
) -> AsyncIterator[Callable[..., Any]]:
    """``make_tts(**options)``: an ``edge`` provider built through its spec (option
    validation and factory) with ``endpoint`` = the fake server; closed after the test."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        tts = edge_spec.create({"endpoint": fake_edge.url, **options})
        made.append(tts)
        return tts

    yield make
    for tts in made:
        await tts.close()
