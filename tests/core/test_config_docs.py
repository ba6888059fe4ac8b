"""docs/configuration.md is generated from the option schemas and must not go stale."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_config_docs.py"


def test_committed_configuration_reference_is_up_to_date() -> None:
    render = runpy.run_path(str(SCRIPT))["render"]
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), (
        "docs/configuration.md is stale: run .venv/bin/python scripts/gen_config_docs.py"
    )


def test_reference_covers_core_sections_and_every_repo_provider() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for heading in (
        "### `server`",
        "#### `server.limits`",
        "### `executor`",
        "### `session`",
        "#### `tts: {provider: espeak}` (cpu)",
        "#### `vad: {provider: silero}` (cpu)",
        "#### `llm: {provider: openai}` (io)",
    ):
        assert heading in text
    assert "| `rate` | `int` (in 80..450) | `175` |" in text  # ranges from annotated_types
    assert "fake_io" not in text  # test doubles (xiaozhi-testkit) are not documented


def test_check_mode_accepts_the_committed_file() -> None:
    ok = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
