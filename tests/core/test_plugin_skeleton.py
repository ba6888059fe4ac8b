"""Every provider package in plugins/ has the same skeleton (CONTRIBUTING.md, issue 8):
``plugin.py`` plus one module per role, private helpers, the same core pin and
setuptools floor, the version written once, benchmarks in ``benchmarks/``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))
ROLE_MODULES = {"vad.py", "asr.py", "llm.py", "tts.py", "voiceprint.py", "vision.py", "memory.py"}


def test_there_are_plugins() -> None:
    assert len(PLUGINS) >= 9


@pytest.mark.parametrize("root", PLUGINS, ids=lambda p: p.name)
def test_pyproject_pins_and_floor(root: Path) -> None:
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["build-system"]["requires"] == ["setuptools>=77"]
    deps = meta["project"]["dependencies"]
    assert "xiaozhi-core>=0.1,<0.2" in deps, deps
    assert "version" in meta["project"] and "version" not in meta["project"].get("dynamic", [])
    assert list(meta["project"]["entry-points"]["xiaozhi_core.providers"].values()) == [
        f"{root.name.replace('-', '_')}.plugin"
    ]


@pytest.mark.parametrize("root", PLUGINS, ids=lambda p: p.name)
def test_module_layout(root: Path) -> None:
    (pkg,) = [p.parent for p in (root / "src").glob("*/plugin.py")]
    modules = {p.name for p in pkg.glob("*.py")}
    assert "plugin.py" in modules and modules & ROLE_MODULES
    public = modules - {"__init__.py", "__main__.py", "plugin.py"} - ROLE_MODULES
    assert all(m.startswith("_") for m in public), f"helpers must be private: {public}"
    # The factories point into the role modules.
    for factory in re.findall(r'factory="([\w.]+):', (pkg / "plugin.py").read_text()):
        assert factory.rsplit(".", 1)[1] + ".py" in ROLE_MODULES, factory


@pytest.mark.parametrize("root", PLUGINS, ids=lambda p: p.name)
def test_version_in_one_place_and_benches_in_benchmarks(root: Path) -> None:
    for path in (root / "src").rglob("*.py"):
        assert not re.search(r'^__version__\s*=\s*"', path.read_text(), re.M), path
    strays = [
        p
        for p in root.rglob("bench*.py")
        if p.parent.name != "benchmarks" and "build" not in p.parts
    ]
    assert not strays, f"benchmarks belong in {root.name}/benchmarks/: {strays}"
