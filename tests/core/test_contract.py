"""Meta-tests: the docs and tests enforce the plugin contract.

* every hook spec in :mod:`xiaozhi_core.hookspecs` has a docstring with a runnable
  example (``>>>``) and at least one test under ``tests/`` that names it;
* every Protocol in :mod:`xiaozhi_core.providers` has a docstring with an example;
* every class and function exported by ``xiaozhi_core`` (and by the core modules'
  ``__all__``) has its own docstring.

The checkers are plain functions, tested against deliberately broken modules below, so
these tests are known to fail when the contract is broken.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

import xiaozhi_core
import xiaozhi_core.hookspecs
import xiaozhi_core.providers

TESTS_DIR = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

#: Core modules whose ``__all__`` is public API (protocol/gateway/session have their own).
CORE_MODULES = [
    "xiaozhi_core.app",
    "xiaozhi_core.cli",
    "xiaozhi_core.config",
    "xiaozhi_core.errors",
    "xiaozhi_core.executor",
    "xiaozhi_core.hookspecs",
    "xiaozhi_core.looplag",
    "xiaozhi_core.options",
    "xiaozhi_core.providers",
    "xiaozhi_core.registry",
    "xiaozhi_core.testing",
    "xiaozhi_core.types",
]


# ------------------------------------------------------------------ the checkers
def own_doc(obj: Any) -> str:
    """The object's own docstring: not inherited, not the one @dataclass generates."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return ""
        return doc
    return getattr(obj, "__doc__", None) or ""


def hook_specs(module: types.ModuleType) -> dict[str, Callable[..., Any]]:
    marker = f"{xiaozhi_core.hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(module).items() if callable(fn) and hasattr(fn, marker)}


def test_sources(tests_dir: Path, exclude: Path) -> dict[Path, str]:
    return {
        p: p.read_text(encoding="utf-8")
        for p in sorted(tests_dir.rglob("test_*.py"))
        if p.resolve() != exclude
    }


test_sources.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def hook_problems(module: types.ModuleType, sources: dict[Path, str]) -> list[str]:
    problems = []
    for name, fn in hook_specs(module).items():
        if ">>>" not in own_doc(fn):
            problems.append(f"hook {name}: docstring has no runnable example (>>>)")
        if not any(name in text for text in sources.values()):
            problems.append(f"hook {name}: no test under tests/ mentions it")
    return problems


def protocol_problems(module: types.ModuleType) -> list[str]:
    problems = []
    for name, cls in vars(module).items():
        if (
            inspect.isclass(cls)
            and cls.__module__ == module.__name__
            and getattr(cls, "_is_protocol", False)
            and cls is not Protocol
        ):
            doc = own_doc(cls)
            if not doc.strip():
                problems.append(f"protocol {name}: no docstring")
            elif ">>>" not in doc:
                problems.append(f"protocol {name}: docstring has no example (>>>)")
    return problems


def public_doc_problems(module: types.ModuleType) -> list[str]:
    problems = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not own_doc(obj).strip():
            problems.append(f"{module.__name__}.{name}: no docstring")
    return problems


# ------------------------------------------------------------------ the contract
def test_every_hook_has_a_runnable_example_and_a_test() -> None:
    specs = hook_specs(xiaozhi_core.hookspecs)
    assert "xiaozhi_providers" in specs  # the checker does see the real hooks
    assert hook_problems(xiaozhi_core.hookspecs, test_sources(TESTS_DIR, THIS_FILE)) == []
    result = doctest.testmod(xiaozhi_core.hookspecs, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= len(specs) and result.failed == 0


def test_every_provider_protocol_is_documented_with_an_example() -> None:
    assert protocol_problems(xiaozhi_core.providers) == []
    result = doctest.testmod(xiaozhi_core.providers, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize("module_name", ["xiaozhi_core", *CORE_MODULES])
def test_every_public_name_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__, f"{module_name} has no __all__"
    assert public_doc_problems(module) == []


# ------------------------------------------------------------------ the checkers can fail
def broken_hookspecs() -> types.ModuleType:
    module = types.ModuleType("broken_hookspecs")
    hookspec = xiaozhi_core.hookspecs.hookspec

    @hookspec
    def xiaozhi_untested_hook() -> None:
        """Documented, with an example, but no test mentions it.

        >>> 1 + 1
        2
        """

    @hookspec
    def xiaozhi_providers() -> None:
        """Mentioned by tests, but no example."""

    module.xiaozhi_untested_hook = xiaozhi_untested_hook  # type: ignore[attr-defined]
    module.xiaozhi_providers = xiaozhi_providers  # type: ignore[attr-defined]
    return module


def test_hook_checker_flags_missing_examples_and_tests() -> None:
    problems = hook_problems(broken_hookspecs(), test_sources(TESTS_DIR, THIS_FILE))
    assert problems == [
        "hook xiaozhi_untested_hook: no test under tests/ mentions it",
        "hook xiaozhi_providers: docstring has no runnable example (>>>)",
    ]


def test_hook_checker_ignores_this_file() -> None:
    # This file names xiaozhi_untested_hook; counting it would let any hook pass.
    sources = test_sources(TESTS_DIR, exclude=Path("/nonexistent"))
    assert hook_problems(broken_hookspecs(), sources) == [
        "hook xiaozhi_providers: docstring has no runnable example (>>>)"
    ]


def test_protocol_and_docstring_checkers_flag_undocumented_names() -> None:
    module = types.ModuleType("broken_providers")

    class Undocumented(Protocol):
        def run(self) -> None: ...

    class NoExample(Protocol):
        """Says what it is, shows nothing."""

        def run(self) -> None: ...

    @dataclasses.dataclass
    class Options:  # @dataclass writes a __doc__ that must not count
        x: int = 1

    def helper() -> None:
        pass

    for obj in (Undocumented, NoExample, Options, helper):
        obj.__module__ = module.__name__
        setattr(module, obj.__name__, obj)
    module.__all__ = ["Options", "helper", "NoExample"]  # type: ignore[attr-defined]
    assert protocol_problems(module) == [
        "protocol Undocumented: no docstring",
        "protocol NoExample: docstring has no example (>>>)",
    ]
    assert public_doc_problems(module) == [
        "broken_providers.Options: no docstring",
        "broken_providers.helper: no docstring",
    ]
