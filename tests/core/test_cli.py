"""The ``xiaozhi`` command line: plugins, config check, serve, errors, extensibility."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xiaozhi_core import cli
from xiaozhi_core.command import Command, CommandGroup, CommandSet, load_commands

FAKES = """\
vad: {provider: fake}
asr: {provider: fake, options: {text: hi}}
llm: {provider: fake_io}
tts: {provider: fake}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xiaozhi_core", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(FAKES + "server: {host: 0.0.0.0}\n")
    return path


def test_plugins_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ROLE", "NAME", "EXEC", "CAPABILITIES", "DISTRIBUTION", "VERSION"]
    assert ["asr", "fake", "cpu", "streaming", "xiaozhi-testkit", "0.1.0"] in [
        line.split() for line in lines
    ]
    assert cli.main(["plugins", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fake_llm = next(p for p in doc["providers"] if (p["role"], p["name"]) == ("llm", "fake"))
    assert fake_llm["capabilities"] == ["options", "tools"] and fake_llm["execution"] == "cpu"
    assert fake_llm["distribution"] == "xiaozhi-testkit"
    assert isinstance(doc["failures"], list)


def test_plugins_schema_is_json_schema_with_ranges_and_descriptions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["plugins", "--schema"]) == 0
    doc = json.loads(capsys.readouterr().out)
    sine = next(p for p in doc if (p["role"], p["name"]) == ("tts", "sine"))
    options = sine["options"]
    assert options["type"] == "object" and options["additionalProperties"] is False
    rate = options["properties"]["sample_rate"]
    assert (rate["type"], rate["minimum"], rate["maximum"], rate["default"]) == (
        "integer",
        8000,
        48000,
        16000,
    )
    assert rate["description"] == "Output sample rate of the PCM16 mono stream, in Hz."
    assert {(p["role"], p["name"]) for p in doc} >= {("llm", "echo"), ("asr", "fake")}


def test_plugins_lists_load_failures(
    with_test_plugins: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    assert ["llm", "fake_io", "io", "xiaozhi-testkit", "0.1.0"] in rows
    assert "(auth on)" in out  # 0.0.0.0 is not loopback


def test_config_check_error_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAKES.replace("provider: fake_io", "provider: gpt9"))
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"xiaozhi: config error: {bad}: llm.provider: llm provider 'gpt9' is not installed; "
        "installed llm providers: " + result.stderr.split("installed llm providers: ")[1].strip()
    ]
    assert "Traceback" not in result.stderr
    assert "echo" in result.stderr and "fake_io" in result.stderr


def test_config_check_merges_several_files(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("tts: {provider: sine}\n")
    assert cli.main(["config", "check", str(good), str(extra)]) == 0
    out = capsys.readouterr().out
    assert ["tts", "sine", "cpu", "xiaozhi-example", "0.1.0"] in [
        line.split() for line in out.splitlines()
    ]


def test_serve_builds_every_provider_and_exits(good: Path, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text("executor: {cpu_workers: 1}\nllm: {provider: echo}\n")
    result = run_cli(
        "--log-level",
        "info",
        "serve",
        "--check",
        "-c",
        str(good),
        "-c",
        str(override),
        "--host",
        "127.0.0.1",
        "--port",
        "9123",
    )
    assert result.returncode == 0, result.stderr
    built = [line.strip() for line in result.stdout.splitlines() if "built " in line]
    assert built == [
        "built vad: fake (cpu, xiaozhi-testkit 0.1.0)",
        "built asr: fake (cpu, xiaozhi-testkit 0.1.0)",
        "built llm: echo (io, xiaozhi-example 0.1.0)",
        "built tts: fake (cpu, xiaozhi-testkit 0.1.0)",
    ]
    assert "INFO xiaozhi_core.app" in result.stderr  # --log-level reached the loggers


def test_serve_in_process_pool_mode(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    override = tmp_path / "process.yaml"
    override.write_text("executor: {kind: process, cpu_workers: 1}\n")
    assert cli.main(["serve", "--check", "-c", str(good), "-c", str(override)]) == 0
    assert "built asr: fake (cpu, xiaozhi-testkit 0.1.0)" in capsys.readouterr().out


def test_serve_reports_a_provider_that_cannot_start(
    with_test_plugins: Path, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    override = tmp_path / "broken.yaml"
    override.write_text("asr: {provider: xzfine}\n")  # its factory module does not exist
    assert cli.main(["serve", "--check", "-c", str(good), "-c", str(override)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "xiaozhi: error: asr provider 'xzfine': factory "
        "'xz_badspec.nowhere:ASR': cannot import 'xz_badspec.nowhere': "
        "ModuleNotFoundError"
    )


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--port", "70000", "-c", "x.yaml"])
    assert exc.value.code == 2
    assert "port 70000 is not in 0..65535" in capsys.readouterr().err
    assert cli.main([]) == 2  # no command: help on stderr
    assert "COMMAND" in capsys.readouterr().err


def _demo_commands() -> list[Command | CommandGroup]:
    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="world")

    def hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 3

    return [
        CommandGroup(("demo",), "demo commands"),
        Command(("demo", "hello"), "say hello", hello, arguments),
    ]


def test_a_new_subcommand_is_one_record(capsys: pytest.CaptureFixture[str]) -> None:
    found = CommandSet({}, {}, [])
    found.add(_demo_commands(), "test")
    assert cli.main(["demo", "hello", "--name", "xiaozhi"], commands=found) == 3
    assert capsys.readouterr().out == "hello xiaozhi\n"
    found.add([Command(("demo", "hello"), "again", lambda args: 0)], "other")
    assert found.failures == ["other: command 'demo hello' is already provided; ignored"]


def _dist_info(site: Path, name: str, entry_points: str, module: str, source: str) -> None:
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (site / f"{module}.py").write_text(source)


def test_commands_come_from_entry_points_of_any_distribution(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_test_modules: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _dist_info(
        tmp_path,
        "xz-cmd",
        "[xiaozhi_core.commands]\nhello = xz_cmd:commands\n",
        "xz_cmd",
        "from xiaozhi_core.command import Command\n"
        "def commands():\n"
        "    return [Command(('hello',), 'greet', lambda a: print('hi') or 0)]\n",
    )
    _dist_info(
        tmp_path,
        "xz-cmdbroken",
        "[xiaozhi_core.commands]\nbad = xz_cmdbroken:nope\n",
        "xz_cmdbroken",
        "",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = load_commands()
    assert ("hello",) in found.commands and ("serve",) in found.commands
    assert any("xz-cmdbroken" in f and "AttributeError" in f for f in found.failures)
    assert cli.main(["hello"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "hi\n"
    assert "command plugin xz-cmdbroken" in captured.err  # reported, never fatal


def test_log_level_before_or_after_the_command(good: Path) -> None:
    for args in (
        ["--log-level", "info", "config", "check", str(good)],
        ["config", "check", str(good), "--log-level", "info"],
    ):
        assert cli.main(args) == 0
    with pytest.raises(SystemExit):
        cli.main(["config", "check", str(good), "--log-level", "loud"])
