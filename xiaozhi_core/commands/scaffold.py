"""``xiaozhi plugin new NAME --role ROLE``: write a complete, working provider package.

The package follows the skeleton every provider package of the repository has
(``plugin.py`` + one module per role, the version in ``pyproject.toml`` only, its own
pytest settings) and works outside the repository: ``pip install -e`` it, run ``pytest``
in it (unit tests, doctests and an end-to-end session through
:func:`xiaozhi_core.testing.serve_with`), see it in ``xiaozhi plugins``, select it in a
deployment. The templates ship inside the core (``xiaozhi_core/templates/plugin``).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> root = scaffold("my-tts", "tts", parent=Path(tempfile.mkdtemp()))
    >>> root.name, sorted(p.name for p in (root / "src" / "xiaozhi_my_tts").iterdir())
    ('xiaozhi-my-tts', ['__init__.py', 'plugin.py', 'py.typed', 'tts.py'])
    >>> 'my_tts = "xiaozhi_my_tts.plugin"' in (root / "pyproject.toml").read_text()
    True
    >>> scaffold("My TTS", "tts", parent=root)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.XiaozhiError: plugin name 'My TTS' must be lowercase letters and ...
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..command import Command, CommandGroup
from ..errors import XiaozhiError

__all__ = ["ROLES", "commands", "scaffold"]

ROLES = ("vad", "asr", "llm", "tts", "voiceprint")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


@dataclass(frozen=True)
class _Role:
    suffix: str  # class name suffix
    default_execution: str
    title: str
    capabilities: str
    options: str
    doctest: str
    bad_key: str
    bad_value: str


_ROLES: dict[str, _Role] = {
    "vad": _Role(
        "VAD",
        "cpu",
        "voice activity detection from window energy",
        '{"batch"}',
        """    #: RMS (of float audio in [-1, 1]) at which the speech probability reaches 1.
    full_scale_rms: Annotated[float, at.Interval(gt=0, le=1)] = 0.05""",
        """    >>> spec.validate({"full_scale_rms": 0.1}).full_scale_rms
    0.1""",
        "full_scale_rms",
        "0",
    ),
    "asr": _Role(
        "ASR",
        "cpu",
        "speech recognition (a template that measures the sound)",
        "",
        """    #: RMS (of float audio in [-1, 1]) above which a 10 ms frame counts as sound.
    level: Annotated[float, at.Interval(gt=0, le=1)] = 0.01""",
        """    >>> spec.validate({"level": 0.02}).level
    0.02""",
        "level",
        "0",
    ),
    "llm": _Role(
        "LLM",
        "io",
        "a chat model (a template that echoes the user)",
        "",
        """    #: Put before the echoed words.
    prefix: str = "You said:"
    #: Pause between streamed words, in seconds (imitates a remote model's pace).
    word_delay: Annotated[float, at.Ge(0)] = 0.0""",
        '    >>> spec.validate({"prefix": "Echo:"}).prefix\n    \'Echo:\'',
        "word_delay",
        "-1",
    ),
    "tts": _Role(
        "TTS",
        "cpu",
        "speech synthesis (a template that speaks a tone)",
        "",
        """    #: Output sample rate of the PCM16 mono stream, in Hz.
    sample_rate: Annotated[int, at.Interval(ge=8000, le=48000)] = 24000
    #: Tone frequency, in Hz.
    frequency: Annotated[float, at.Gt(0)] = 440.0
    #: Seconds of audio per character of text.
    seconds_per_char: Annotated[float, at.Gt(0)] = 0.06
    #: Peak amplitude, 0..1 of full scale.
    amplitude: Annotated[float, at.Interval(gt=0, le=1)] = 0.3
    #: Length of each streamed chunk, in milliseconds.
    chunk_ms: Annotated[int, at.Interval(ge=10, le=1000)] = 100

    def __post_init__(self) -> None:
        # What types cannot say (a relation between options) is checked here; a
        # ValueError becomes a ConfigError naming the key path.
        if self.frequency >= self.sample_rate / 2:
            raise ValueError(f"frequency {self.frequency} Hz must be below half the "
                             f"sample rate ({self.sample_rate // 2} Hz)")""",
        """    >>> spec.validate({"sample_rate": 16000}).sample_rate
    16000
    >>> spec.validate({"amplitude": 2}, path="tts.options")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: tts.options.amplitude: must be in (0, 1], got 2""",
        "amplitude",
        "2",
    ),
    "voiceprint": _Role(
        "Voiceprint",
        "cpu",
        "speaker identification (a template on spectral bands)",
        "",
        """    #: Smallest cosine similarity that names an enrolled speaker.
    threshold: Annotated[float, at.Interval(ge=0, le=1)] = 0.9
    #: Spectral bands of the embedding.
    bins: Annotated[int, at.Ge(2)] = 16""",
        """    >>> spec.validate({"threshold": 0.8}).threshold
    0.8""",
        "threshold",
        "1.5",
    ),
}

_NOTES = {
    "cpu": "plain blocking functions, run in the core's worker pool",
    "io": "coroutines / async generators, awaited on the event loop",
}


def _templates() -> resources.abc.Traversable:
    return resources.files("xiaozhi_core").joinpath("templates", "plugin")


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise AssertionError(f"unfilled placeholder in a template: {text[text.index('{{') :][:40]}")
    return text


def scaffold(
    name: str, role: str, *, execution: str | None = None, parent: Path | None = None
) -> Path:
    """Write the package for provider ``name`` of ``role`` into ``parent`` (default: the
    working directory) and return its folder, ``xiaozhi-NAME``."""
    base = name.removeprefix("xiaozhi-").removeprefix("xiaozhi_")
    if not _NAME_RE.match(base):
        raise XiaozhiError(
            f"plugin name {name!r} must be lowercase letters and digits, words joined by "
            "'-' or '_' (e.g. 'mytts', 'acme-asr')"
        )
    if role not in _ROLES:
        raise XiaozhiError(f"role {role!r} is not one of {', '.join(ROLES)}")
    r = _ROLES[role]
    execution = execution or r.default_execution
    if execution not in _NOTES:
        raise XiaozhiError(f"execution {execution!r} must be 'cpu' or 'io'")
    provider = base.replace("-", "_")
    camel = "".join(w.capitalize() for w in re.split(r"[-_]", base))
    dist, package = f"xiaozhi-{base}", f"xiaozhi_{provider}"
    root = (parent or Path.cwd()) / dist
    if root.exists() and any(root.iterdir()):
        raise XiaozhiError(f"{root} already exists and is not empty; choose another --dir")
    roles = dict.fromkeys(("vad", "asr", "llm", "tts"), "fake")
    roles[role] = provider
    values = {
        "dist": dist,
        "package": package,
        "provider": provider,
        "role": role,
        "ROLE": role.upper(),
        "execution": execution,
        "EXECUTION": execution.upper(),
        "execution_note": _NOTES[execution],
        "Class": f"{camel}{r.suffix}",
        "Options": f"{camel}{r.suffix}Options",
        "capabilities": r.capabilities,
        "description": f"A {role} provider for xiaozhi-core: {r.title}",
        "title": r.title,
        "options": r.options,
        "doctest": r.doctest,
        "bad_key": r.bad_key,
        "bad_value": r.bad_value,
        "vad": roles["vad"],
        "asr": roles["asr"],
        "llm": roles["llm"],
        "tts": roles["tts"],
        "voiceprint_line": f"\nvoiceprint: {{provider: {provider}}}"
        if role == "voiceprint"
        else "",
        "options_doc": f"See `src/{package}/plugin.py`, or `xiaozhi plugins --schema`.",
    }
    t = _templates()
    files = {
        "pyproject.toml": t / "pyproject.toml.tmpl",
        "README.md": t / "README.md.tmpl",
        f"src/{package}/__init__.py": t / "__init__.py.tmpl",
        f"src/{package}/plugin.py": t / "plugin.py.tmpl",
        f"src/{package}/{role}.py": t / "roles" / f"{role}_{execution}.py.tmpl",
        "tests/test_plugin.py": t / "test_plugin.py.tmpl",
    }
    out: dict[str, str] = {
        rel: _render(src.read_text(encoding="utf-8"), values) for rel, src in files.items()
    }
    out[f"tests/test_{role}.py"] = _render(
        (t / "roles" / f"test_{role}.py.tmpl").read_text(encoding="utf-8"), values
    )
    out["tests/test_e2e.py"] = _render(
        (t / "roles" / f"e2e_{role}.py.tmpl").read_text(encoding="utf-8"), values
    )
    out[f"src/{package}/py.typed"] = ""
    for rel, text in out.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _new_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name",
        help="provider name: lowercase words joined by '-' or '_' "
        "(package xiaozhi-NAME, import xiaozhi_NAME)",
    )
    p.add_argument("--role", required=True, choices=ROLES, help="the provider's role")
    flavour = p.add_mutually_exclusive_group()
    flavour.add_argument(
        "--cpu",
        dest="execution",
        action="store_const",
        const="cpu",
        help="blocking work methods, run in the worker pool (local models)",
    )
    flavour.add_argument(
        "--io",
        dest="execution",
        action="store_const",
        const="io",
        help="async work methods, awaited on the event loop (services)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder to create the package in (default: the working directory)",
    )


def _new(args: argparse.Namespace) -> int:
    from ..registry import default_registry

    provider = args.name.removeprefix("xiaozhi-").removeprefix("xiaozhi_").replace("-", "_")
    taken = {s.name for s in default_registry().specs(args.role)}
    if provider in taken:
        # Two installed providers with one role and name are both refused by the registry.
        raise XiaozhiError(
            f"a {args.role} provider named {provider!r} is already installed; "
            "choose another name (xiaozhi plugins lists them)"
        )
    root = scaffold(args.name, args.role, execution=args.execution, parent=args.dir)
    print(f"created {root}")
    print(f"next: pip install -e {root} && (cd {root} && pytest) && xiaozhi plugins")
    return 0


def commands() -> list[Command | CommandGroup]:
    """``xiaozhi plugin new`` (entry point ``xiaozhi_core.commands: scaffold``)."""
    return [
        CommandGroup(("plugin",), "make provider packages"),
        Command(
            ("plugin", "new"), "write a new provider package from the template", _new, _new_args
        ),
    ]
