"""``xiaozhi config check`` catches at load time what used to fail only at run time
(issue 9, items 13 and 14): every error at once, the allowed values, the closest name, the
provider factories imported and policy-checked without loading a model; plugins --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xiaozhi_core.config import load_config
from xiaozhi_core.errors import ConfigError
from xiaozhi_core.registry import default_registry

FAKES = """\
vad: {provider: fake}
asr: {provider: fake, options: {text: hi}}
llm: {provider: fake_io}
tts: {provider: fake}
"""


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xiaozhi_core", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("rate", [12345, 44100, 22050])
def test_output_sample_rate_must_be_an_opus_rate(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(FAKES + f"session: {{output_sample_rate: {rate}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config([path], default_registry())
    message = str(info.value)
    assert "session.output_sample_rate" in message
    assert "8000, 12000, 16000, 24000, 48000" in message


def test_espeak_unknown_voice_is_refused_at_load_time_with_the_allowed_values(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        FAKES.replace("tts: {provider: fake}", "tts: {provider: espeak, options: {voice: elvish}}")
    )
    result = config_check(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "tts.options.voice" in result.stderr and "unknown voice 'elvish'" in result.stderr
    assert "installed voices: " in result.stderr and "en-us" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_reports_every_error_at_once_with_suggestions(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("""\
sesion: {}
server: {port: 70000}
session: {output_sample_rate: 12345}
vad: {provider: fake}
asr: {provider: wisper}
llm: {provider: fake_io, options: {replly: x}}
tts: {provider: espeak, options: {voice: elvish}}
""")
    result = config_check(path)
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("xiaozhi: config error")]
    text = "\n".join(errors)
    assert len(errors) == 6, result.stderr
    assert "unknown key 'sesion' (did you mean 'session'?)" in text
    assert "server.port" in text
    assert "session.output_sample_rate: '12345' is not allowed" in text
    assert "asr provider 'wisper' is not installed (did you mean 'whisper'?)" in text
    assert "unknown key 'replly' (did you mean 'reply'?)" in text
    assert "unknown voice 'elvish'" in text
    assert "6 errors in" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_covers_profiles_devices_store_and_ota(tmp_path: Path) -> None:
    """config check validates every section load_config does (it once skipped
    profiles, devices, store and ota): one line each, all at once."""
    path = tmp_path / "c.yaml"
    path.write_text(
        FAKES
        + """\
ota: {websocket_url: 5}
store: {backend: mysql}
session: {default_profile: kidz}
profiles:
  kids: {language: zn, voyce: x}
  adults: {language: zh}
devices:
  "aa:bb:cc:dd:ee:ff": grownups
"""
    )
    result = config_check(path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("xiaozhi: config error")]
    text = "\n".join(errors)
    assert "ota.websocket_url" in text, result.stderr
    assert "store.backend" in text, result.stderr
    assert "profiles.kids" in text and "'voyce' (did you mean 'voice'?)" in text, text
    assert "session.default_profile: unknown profile 'kidz'" in text, text
    assert "devices.aa:bb:cc:dd:ee:ff: unknown profile 'grownups'" in text, text
    assert len(errors) == 5, result.stderr
    assert "Traceback" not in result.stderr
    # the same file through load_config stops at the first of them
    with pytest.raises(ConfigError):
        load_config([path], default_registry())


def test_config_check_imports_the_factories(tmp_path: Path, with_test_plugins: Path) -> None:
    """A provider whose factory cannot be imported is caught by config check (as serve
    --check would, but without building anything); the good config still passes."""
    import os

    env = {**os.environ, "PYTHONPATH": str(with_test_plugins)}
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        FAKES.replace("asr: {provider: fake, options: {text: hi}}", "asr: {provider: xzfine}")
    )
    result = subprocess.run(
        [sys.executable, "-m", "xiaozhi_core", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    assert "asr.provider" in result.stderr and "cannot import 'xz_badspec.nowhere'" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text(FAKES)
    result = config_check(good)
    assert result.returncode == 0, result.stderr
    assert "policy-checked" in result.stdout


# ------------------------------------------------------------------ item 14
def test_plugins_strict_exits_non_zero_when_a_plugin_failed(
    with_test_plugins: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xiaozhi_core import cli

    assert cli.main(["plugins", "--strict"]) == 1
    captured = capsys.readouterr()
    assert "plugin(s) failed to load" in captured.out
    assert "--strict" in captured.err
    assert cli.main(["plugins", "--json", "--strict"]) == 1
    capsys.readouterr()
    assert cli.main(["plugins"]) == 0  # informational by default
    assert cli.main(["plugins", "--log-level", "info", "--strict"]) == 1  # after the command


def test_plugins_strict_is_zero_when_every_plugin_loaded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from xiaozhi_core import cli

    assert cli.main(["--log-level", "warning", "plugins", "--strict"]) == 0
