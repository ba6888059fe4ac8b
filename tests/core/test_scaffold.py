"""``xiaozhi plugin new``: the packages it writes work outside the repository, as a new
provider author would use them — installed (into a --target folder on PYTHONPATH, so
the venv stays clean), their own pytest run in their own folder, listed by ``xiaozhi
plugins``, selected in a YAML deployment served by ``xiaozhi serve`` and answering
``xiaozhi simulate``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from xiaozhi_core import cli
from xiaozhi_core.commands.scaffold import ROLES, scaffold
from xiaozhi_core.errors import XiaozhiError

ROOT = Path(__file__).resolve().parents[2]
#: Every role in its default flavour, and each in the other one.
VARIANTS = [(f"my-{role}", role, None) for role in ROLES] + [
    (f"alt-{role}", role, "io" if role in ("vad", "asr", "tts", "voiceprint") else "cpu")
    for role in ROLES
]


def _env(target: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder holding the generated packages, --target folder they are installed in)."""
    work = tmp_path_factory.mktemp("authors")
    assert ROOT not in work.parents
    for name, role, execution in VARIANTS:
        args = ["plugin", "new", name, "--role", role, "--dir", str(work)]
        if execution:
            args.append(f"--{execution}")
        assert cli.main(args) == 0
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            *[str(work / f"xiaozhi-{name}") for name, _, _ in VARIANTS],
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return work, target


def test_names_and_roles_are_checked(tmp_path: Path) -> None:
    with pytest.raises(XiaozhiError, match="plugin name 'My TTS' must be lowercase"):
        scaffold("My TTS", "tts", parent=tmp_path)
    with pytest.raises(XiaozhiError, match="role 'stt' is not one of vad, asr, llm, tts"):
        scaffold("x", "stt", parent=tmp_path)
    root = scaffold("xiaozhi-acme", "asr", parent=tmp_path)
    assert root.name == "xiaozhi-acme" and (root / "src/xiaozhi_acme/asr.py").exists()
    with pytest.raises(XiaozhiError, match="already exists and is not empty"):
        scaffold("acme", "asr", parent=tmp_path)


def test_an_installed_provider_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plugin", "new", "espeak", "--role", "tts", "--dir", str(tmp_path)]) == 1
    assert "a tts provider named 'espeak' is already installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_skeleton_matches_the_repository_packages(tmp_path: Path) -> None:
    root = scaffold("acme-voice", "tts", execution="io", parent=tmp_path)
    pyproject = (root / "pyproject.toml").read_text()
    for line in (
        'name = "xiaozhi-acme-voice"',
        'requires = ["setuptools>=77"]',
        '"xiaozhi-core>=0.1,<0.2"',
        'acme_voice = "xiaozhi_acme_voice.plugin"',
        'asyncio_mode = "auto"',
        "--doctest-modules",
    ):
        assert line in pyproject
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/xiaozhi_acme_voice/__init__.py",
        "src/xiaozhi_acme_voice/plugin.py",
        "src/xiaozhi_acme_voice/py.typed",
        "src/xiaozhi_acme_voice/tts.py",
        "tests/test_e2e.py",
        "tests/test_plugin.py",
        "tests/test_tts.py",
    ]
    plugin = (root / "src/xiaozhi_acme_voice/plugin.py").read_text()
    assert 'factory="xiaozhi_acme_voice.tts:AcmeVoiceTTS"' in plugin
    assert "execution=Execution.IO" in plugin
    assert "async def synthesize" in (root / "src/xiaozhi_acme_voice/tts.py").read_text()
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # every template renders to Python


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "role", "execution"), VARIANTS, ids=[f"{r}-{e or 'default'}" for _, r, e in VARIANTS]
)
def test_generated_package_passes_its_own_tests(
    installed: tuple[Path, Path], name: str, role: str, execution: str | None
) -> None:
    work, target = installed
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=work / f"xiaozhi-{name}",
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    passed = re.match(r"(\d+) passed in ", summary)
    # doctests of plugin.py and the role module, 3 spec tests, >= 1 unit, 1 end to end
    assert passed and int(passed.group(1)) >= 7 and "skipped" not in summary, summary


@pytest.mark.slow
def test_listed_served_and_answering_simulate(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, target = installed
    env = _env(target)
    listed = subprocess.run(
        [sys.executable, "-m", "xiaozhi_core", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line.split() for line in listed.splitlines()]
    assert ["tts", "my_tts", "cpu", "-", "xiaozhi-my-tts", "0.1.0"] in rows
    assert ["voiceprint", "alt_voiceprint", "io", "-", "xiaozhi-alt-voiceprint", "0.1.0"] in rows
    config = tmp_path / "mine.yaml"
    config.write_text(
        "server: {host: 127.0.0.1, port: 0, http_port: 0}\n"
        "vad: {provider: fake}\n"
        "asr: {provider: fake, options: {text: what time is it}}\n"
        "llm: {provider: my_llm}\n"
        "tts: {provider: my_tts, options: {frequency: 330}}\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "xiaozhi_core", "serve", "--no-local", "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        ws_url = None
        while ws_url is None:
            line = server.stdout.readline() if server.stdout else ""
            assert line, (server.stderr.read() if server.stderr else "")[-3000:]
            if line.startswith("WebSocket URL"):
                ws_url = line.split()[-1]
        reply = tmp_path / "reply.wav"
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "xiaozhi_core",
                "simulate",
                "--url",
                ws_url,
                "--text",
                "What time is it?",
                "--out",
                str(reply),
                "--timeout",
                "60",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert sim.returncode == 0, sim.stdout[-3000:] + sim.stderr[-3000:]
        assert "turn 1: stt 'what time is it'" in sim.stdout, sim.stdout
        # my_llm's echo, spoken sentence by sentence by my_tts
        assert "subtitle: You said:\n  subtitle: what time is it.\n" in sim.stdout, sim.stdout
        with wave.open(str(reply)) as w:
            assert w.getnframes() / w.getframerate() > 0.5  # the tone "voice" spoke
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
