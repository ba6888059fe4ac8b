"""The import-layer contract: no import cycle in xiaozhi_core (imports under
TYPE_CHECKING and inside functions count), and every import points down the layers of
docs/architecture.md. Checked with import-linter, whose contracts live in pyproject.toml.

A second test shows the contract bites: a tiny package with a late-import cycle and an
upward TYPE_CHECKING import fails the same kinds of contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(
    cwd: Path, *extra: str, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (scripts/setup.sh --dev installs it)"
    env = {**os.environ, "PYTHONPATH": str(pythonpath or cwd)}
    return subprocess.run(
        [exe, "--no-cache", *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_xiaozhi_core_keeps_its_import_contracts() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_the_contracts_catch_late_cycles_and_upward_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "xzlayers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "high.py").write_text("from . import low\n")
    # an upward import hidden under TYPE_CHECKING, and a cycle closed by a late import
    (pkg / "low.py").write_text(
        textwrap.dedent("""\
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from . import high
        def later():
            from . import high
        """)
    )
    (tmp_path / ".importlinter").write_text(
        textwrap.dedent("""\
        [importlinter]
        root_package = xzlayers
        exclude_type_checking_imports = false

        [importlinter:contract:cycles]
        name = no cycles
        type = acyclic_siblings
        ancestors = xzlayers

        [importlinter:contract:layers]
        name = layers
        type = layers
        layers =
            xzlayers.high
            xzlayers.low
        """)
    )
    result = lint_imports(tmp_path, "--config", str(tmp_path / ".importlinter"))
    assert result.returncode != 0
    assert "0 kept, 2 broken" in result.stdout, result.stdout
