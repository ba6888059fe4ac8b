"""Helpers for the core tests: tiny plugin distributions installed with pip."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Prefix of every module the tiny test distributions install.
TEST_MODULE_PREFIX = "xz_"


def make_distribution(
    root: Path,
    name: str,
    version: str,
    plugin_source: str,
    entry_point: str,
    extra_modules: dict[str, str] | None = None,
) -> Path:
    """Write a minimal provider package (the skeleton of plugins/xiaozhi-*) under ``root``.

    The package ``xz_<name>`` gets ``plugin.py`` = ``plugin_source`` and the entry point
    ``<entry_point> = "xz_<name>.plugin"`` in the group ``xiaozhi_core.providers``.
    """
    package = TEST_MODULE_PREFIX + name.removeprefix("xz-").replace("-", "_")
    project = root / name
    src = project / "src" / package
    src.mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "{version}"
        dependencies = ["xiaozhi-core"]

        [project.entry-points."xiaozhi_core.providers"]
        {entry_point} = "{package}.plugin"

        [tool.setuptools.packages.find]
        where = ["src"]
        """)
    )
    (src / "__init__.py").write_text("")
    (src / "plugin.py").write_text(textwrap.dedent(plugin_source))
    for module, source in (extra_modules or {}).items():
        (src / f"{module}.py").write_text(textwrap.dedent(source))
    return project


def pip_install(projects: list[Path], target: Path) -> None:
    """``pip install --no-deps --no-build-isolation --target``: offline, like a user would."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            *map(str, projects),
        ],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"},
    )


@pytest.fixture
def clean_test_modules() -> Iterator[None]:
    """Forget the tiny distributions' modules after a test (they live in a tmp dir)."""
    yield
    for name in [m for m in sys.modules if m.startswith(TEST_MODULE_PREFIX)]:
        del sys.modules[name]


GOOD_PLUGIN = """
    from dataclasses import dataclass
    from xiaozhi_core import ProviderSpec, hookimpl

    @dataclass
    class BeepOptions:
        sample_rate: int = 16000

    @hookimpl
    def xiaozhi_providers():
        yield ProviderSpec(role="tts", name="xzbeep", execution="cpu",
                           factory="xz_good.impl:Beep", options=BeepOptions,
                           description="a beep per sentence")
    """

GOOD_IMPL = """
    class Beep:
        def __init__(self, options):
            self.sample_rate = options.sample_rate

        def synthesize(self, text, *, voice=None):
            for _ in text.split():
                yield b"\\x10\\x00" * 160
    """

#: name -> (version, entry point name, plugin.py source, extra modules)
TEST_DISTRIBUTIONS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "xz-good": ("1.2.3", "xzbeep", GOOD_PLUGIN, {"impl": GOOD_IMPL}),
    # Its SDK is not installed: importing the entry point fails.
    "xz-broken": (
        "0.4.0",
        "xzbroken",
        """
        import xz_sdk_that_is_not_installed  # noqa: F401
        """,
        {},
    ),
    "xz-hookfail": (
        "0.5.0",
        "xzhookfail",
        """
        from xiaozhi_core import hookimpl

        @hookimpl
        def xiaozhi_providers():
            raise RuntimeError("could not read the model list")
        """,
        {},
    ),
    "xz-notspec": (
        "0.6.0",
        "xznotspec",
        """
        from xiaozhi_core import hookimpl

        @hookimpl
        def xiaozhi_providers():
            return [{"role": "tts", "name": "xznotspec"}]
        """,
        {},
    ),
    # A valid spec, then one with a role that does not exist.
    "xz-badspec": (
        "0.7.0",
        "xzbadspec",
        """
        from xiaozhi_core import ProviderSpec, hookimpl

        @hookimpl
        def xiaozhi_providers():
            yield ProviderSpec(role="asr", name="xzfine", execution="io",
                               factory="xz_badspec.nowhere:ASR")
            yield ProviderSpec(role="translator", name="xzbadspec", execution="io",
                               factory="xz_badspec.nowhere:T")
        """,
        {},
    ),
    "xz-dup-a": (
        "1.0",
        "xzdup_a",
        """
        from xiaozhi_core import ProviderSpec, hookimpl

        @hookimpl
        def xiaozhi_providers():
            return [ProviderSpec(role="asr", name="xzdup", execution="cpu",
                                 factory="xz_dup_a.impl:ASR")]
        """,
        {},
    ),
    "xz-dup-b": (
        "2.0",
        "xzdup_b",
        """
        from xiaozhi_core import ProviderSpec, hookimpl

        @hookimpl
        def xiaozhi_providers():
            return [ProviderSpec(role="asr", name="xzdup", execution="io",
                                 factory="xz_dup_b.impl:ASR")]
        """,
        {},
    ),
}


@pytest.fixture(scope="session")
def installed_test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the distributions above and pip-install them (one pip run) into a target
    directory. Tests put it on ``sys.path`` to make them "installed"."""
    root = tmp_path_factory.mktemp("dists")
    projects = [
        make_distribution(root, name, version, source, ep, extra)
        for name, (version, ep, source, extra) in TEST_DISTRIBUTIONS.items()
    ]
    target = tmp_path_factory.mktemp("site")
    pip_install(projects, target)
    return target


@pytest.fixture
def with_test_plugins(
    installed_test_plugins: Path, monkeypatch: pytest.MonkeyPatch, clean_test_modules: None
) -> Path:
    """The test distributions are importable (and their entry points visible) in this test."""
    monkeypatch.syspath_prepend(str(installed_test_plugins))
    return installed_test_plugins
