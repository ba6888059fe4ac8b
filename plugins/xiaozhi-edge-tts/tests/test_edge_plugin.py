"""Discovery, cheap import, option validation, and the tests' own network guard."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from xiaozhi_core.errors import ConfigError, ProviderError
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.registry import Registry
from xiaozhi_core.types import Execution, Role


def test_entry_point_is_discovered() -> None:
    registry = Registry()
    registry.load_entry_points()
    assert not [f for f in registry.failures if "edge" in str(f)]
    found = registry.lookup("tts", "edge")
    assert found.origin.distribution == "xiaozhi-edge-tts"
    assert found.spec.role is Role.TTS and found.spec.execution is Execution.IO
    assert found.spec.factory_path == "xiaozhi_edge_tts.tts:EdgeTTS"
    assert found.spec.capabilities == {"multilingual"}


def test_the_plugin_module_imports_no_sdk() -> None:
    code = (
        "import sys, xiaozhi_edge_tts.plugin; "
        "print(sorted(m for m in ('edge_tts', 'av', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_defaults(edge_spec: ProviderSpec) -> None:
    options = edge_spec.validate({})
    assert options.voice == "en-US-EmmaMultilingualNeural"
    assert (options.rate, options.volume, options.pitch) == ("+0%", "+0%", "+0Hz")
    assert options.sample_rate == 24000 and options.endpoint is None and options.proxy is None
    tts = edge_spec.create({})
    assert tts.sample_rate == 24000
    assert tts.url == (
        "wss://speech.platform.bing.com/consumer/speech/synthesize/readaloud/edge/v1"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"voice": "Xiaoxiao"}, r"tts\.options: edge: voice 'Xiaoxiao' is not an Edge voice name"),
        ({"rate": "1.2"}, r"edge: rate '1\.2' must look like '\+10%' or '-25%'"),
        ({"volume": "+10"}, r"edge: volume '\+10' must look like"),
        ({"pitch": "+10%"}, r"edge: pitch '\+10%' must look like '\+5Hz' or '-10Hz'"),
        (
            {"sample_rate": 22050},
            r"tts\.options\.sample_rate: .*22050.* is not allowed; "
            r"allowed: 16000, 24000",
        ),
        ({"receive_timeout": 0}, r"tts\.options\.receive_timeout: must be > 0, got 0"),
        (
            {"endpoint": "http://127.0.0.1/x"},
            r"edge: endpoint 'http://127\.0\.0\.1/x' must be a "
            r"ws:// or wss:// URL",
        ),
        ({"proxy": "socks5://p:1080"}, r"edge: proxy 'socks5://p:1080' must be an http:// or"),
        ({"voices": "x"}, r"unknown key 'voices'"),
    ],
)
def test_options_are_validated(
    options: dict[str, Any], message: str, edge_spec: ProviderSpec
) -> None:
    with pytest.raises(ConfigError, match=message):
        edge_spec.validate(options, path="tts.options")


def test_long_form_voice_names_are_accepted(edge_spec: ProviderSpec) -> None:
    voice = "Microsoft Server Speech Text to Speech Voice (zh-CN, YunxiNeural)"
    assert edge_spec.create({"voice": voice}).options.voice == voice


async def test_the_default_endpoint_is_microsofts_and_the_tests_cannot_reach_it(
    no_network: Any, edge_spec: ProviderSpec
) -> None:
    # Without `endpoint`, edge-tts goes to speech.platform.bing.com: the guard of these
    # tests stops the DNS look-up before any packet leaves.
    tts = edge_spec.create({"connect_timeout": 1, "receive_timeout": 1})
    with pytest.raises(
        ProviderError,
        match=r"edge: .*RuntimeError: test tried to reach a "
        r"non-loopback host: socket\.getaddrinfo "
        r"'speech\.platform\.bing\.com'",
    ):
        async for _ in tts.synthesize("hello"):
            pass
    assert no_network.violations == ["socket.getaddrinfo 'speech.platform.bing.com'"]
    no_network.violations.clear()  # expected here
