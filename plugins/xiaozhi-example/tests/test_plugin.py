"""The package is discoverable through its entry point, and the entry point is cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest
import xiaozhi_example

from xiaozhi_core.errors import ConfigError
from xiaozhi_core.registry import default_registry


def test_installed_entry_point_offers_echo_and_sine() -> None:
    registry = default_registry()
    found = {(str(r.spec.role), r.spec.name): r for r in registry.providers()}
    for key in [("llm", "echo"), ("tts", "sine")]:
        assert key in found, f"{key} not discovered; is xiaozhi-example installed?"
        assert found[key].origin.distribution == "xiaozhi-example"
        assert found[key].origin.version == xiaozhi_example.__version__
    assert not [f for f in registry.failures if f.origin.distribution == "xiaozhi-example"]


def test_entry_point_does_not_import_the_implementations() -> None:
    # A fresh interpreter: the registry imports plugin.py only, never llm.py / tts.py.
    code = (
        "import sys\n"
        "from xiaozhi_core.registry import default_registry\n"
        "r = default_registry()\n"
        "assert r.get('tts', 'sine') and r.get('llm', 'echo')\n"
        "print(sorted(m for m in sys.modules if m.startswith('xiaozhi_example')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "['xiaozhi_example', 'xiaozhi_example.plugin']"


@pytest.mark.parametrize(
    ("options", "path", "message"),
    [
        ({"frequency": 9000}, "tts.options", "below half the sample rate"),
        ({"sample_rate": "fast"}, "tts.options.sample_rate", "expected an integer"),
        ({"volume": 1}, "tts.options.volume", "allowed keys: amplitude, chunk_ms"),
    ],
)
def test_sine_options_are_validated(options: dict[str, object], path: str, message: str) -> None:
    spec = default_registry().get("tts", "sine")
    with pytest.raises(ConfigError) as err:
        spec.validate(options, path="tts.options")
    assert err.value.path == path
    assert message in err.value.message


def test_echo_options_are_validated() -> None:
    spec = default_registry().get("llm", "echo")
    with pytest.raises(ConfigError, match=r"^llm\.options\.word_delay: must be >= 0, got -1$"):
        spec.validate({"word_delay": -1}, path="llm.options")
