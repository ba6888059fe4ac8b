"""The ``xiaozhi`` command line: plugins, config check, serve, errors, extensibility."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from xiaozhi_core import cli

FAKES = """\
vad: {provider: fake}
asr: {provider: fake, options: {text: hi}}
llm: {provider: fake_io}
tts: {provider: fake}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xiaozhi_core", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(FAKES + "server: {host: 0.0.0.0}\n")
    return path


def test_plugins_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ROLE", "NAME", "EXEC", "CAPABILITIES", "DISTRIBUTION", "VERSION"]
    assert ["asr", "fake", "cpu", "streaming", "xiaozhi-core", "0.1.0"] in [
        line.split() for line in lines]
    assert cli.main(["plugins", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fake_llm = next(p for p in doc["providers"] if (p["role"], p["name"]) == ("llm", "fake"))
    assert fake_llm["capabilities"] == ["tools"] and fake_llm["execution"] == "cpu"
    assert fake_llm["distribution"] == "xiaozhi-core"
    assert isinstance(doc["failures"], list)


def test_plugins_lists_load_failures(with_test_plugins: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "plugin(s) failed to load:" in out
    row = next(line for line in out.splitlines() if line.startswith("xz-broken"))
    assert row.split()[:4] == ["xz-broken", "0.4.0", "import", "failed:"]
    assert "option sample_rate: int = 16000" in out  # --verbose shows options
    assert cli.main(["plugins", "--json"]) == 0
    failures = json.loads(capsys.readouterr().out)["failures"]
    broken = next(f for f in failures if f["distribution"] == "xz-broken")
    assert broken["version"] == "0.4.0" and "ModuleNotFoundError" in broken["error"]


def test_config_check_ok(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", str(good), "--no-local"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {good}\n")
    rows = [line.split() for line in out.splitlines()]
    assert ["llm", "fake_io", "io", "xiaozhi-core", "0.1.0"] in rows
    assert "(auth on)" in out  # 0.0.0.0 is not loopback


def test_config_check_error_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAKES.replace("provider: fake_io", "provider: gpt9"))
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"xiaozhi: config error: {bad}: llm.provider: llm provider 'gpt9' is not installed; "
        "installed llm providers: " + result.stderr.split("installed llm providers: ")[1].strip()]
    assert "Traceback" not in result.stderr
    assert "echo" in result.stderr and "fake_io" in result.stderr


def test_config_check_merges_several_files(good: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("tts: {provider: sine}\n")
    assert cli.main(["config", "check", str(good), str(extra)]) == 0
    out = capsys.readouterr().out
    assert ["tts", "sine", "cpu", "xiaozhi-example", "0.1.0"] in [
        line.split() for line in out.splitlines()]


def test_serve_builds_every_provider_and_exits(good: Path, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text("executor: {cpu_workers: 1}\nllm: {provider: echo}\n")
    result = run_cli("--log-level", "info", "serve", "--check", "-c", str(good), "-c",
                     str(override), "--host", "127.0.0.1", "--port", "9123")
    assert result.returncode == 0, result.stderr
    built = [line.strip() for line in result.stdout.splitlines() if "built " in line]
    assert built == [
        "built vad: fake (cpu, xiaozhi-core 0.1.0)",
        "built asr: fake (cpu, xiaozhi-core 0.1.0)",
        "built llm: echo (io, xiaozhi-example 0.1.0)",
        "built tts: fake (cpu, xiaozhi-core 0.1.0)",
    ]
    assert "INFO xiaozhi_core.app" in result.stderr  # --log-level reached the loggers


def test_serve_in_process_pool_mode(good: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    override = tmp_path / "process.yaml"
    override.write_text("executor: {kind: process, cpu_workers: 1}\n")
    assert cli.main(["serve", "--check", "-c", str(good), "-c", str(override)]) == 0
    assert "built asr: fake (cpu, xiaozhi-core 0.1.0)" in capsys.readouterr().out


def test_serve_reports_a_provider_that_cannot_start(
        with_test_plugins: Path, good: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    override = tmp_path / "broken.yaml"
    override.write_text("asr: {provider: xzfine}\n")  # its factory module does not exist
    assert cli.main(["serve", "--check", "-c", str(good), "-c", str(override)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("xiaozhi: error: asr provider 'xzfine': factory "
                          "'xz_badspec.nowhere:ASR': cannot import 'xz_badspec.nowhere': "
                          "ModuleNotFoundError")


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--port", "70000", "-c", "x.yaml"])
    assert exc.value.code == 2
    assert "port 70000 is not in 0..65535" in capsys.readouterr().err
    assert cli.main([]) == 2  # no command: help on stderr
    assert "COMMAND" in capsys.readouterr().err


@pytest.fixture
def demo_command() -> Iterator[None]:
    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="world")

    @cli.command("demo", "hello", help="say hello", arguments=arguments)
    def _hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 3

    yield
    del cli.COMMANDS[("demo", "hello")]


def test_a_new_subcommand_is_one_registered_function(
        demo_command: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "hello", "--name", "xiaozhi"]) == 3
    assert capsys.readouterr().out == "hello xiaozhi\n"
    with pytest.raises(ValueError, match="registered twice"):
        cli.command("demo", "hello", help="again")(lambda args: 0)
