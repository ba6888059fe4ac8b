"""``xiaozhi plugins``: the installed providers and the plugins that failed to load."""

from __future__ import annotations

import argparse
import json
import sys

from ..command import Command
from ._output import one_line, table

__all__ = ["commands"]


def _plugins_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show each provider's factory, description and options",
    )
    p.add_argument(
        "--schema",
        action="store_true",
        help="print the JSON Schema of each provider's options (JSON)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any plugin failed to load (for CI and deployment scripts)",
    )


def _plugins(args: argparse.Namespace) -> int:
    from ..options import describe_options, option_range
    from ..registry import default_registry

    registry = default_registry()
    providers = registry.providers()
    failures = registry.failures
    if args.schema:
        from ..errors import XiaozhiError
        from ..options import json_schema

        docs: list[dict[str, object]] = []
        for r in providers:
            doc: dict[str, object] = {
                "role": r.spec.role.value,
                "name": r.spec.name,
                "distribution": r.origin.distribution,
            }
            try:
                doc["options"] = json_schema(r.spec.options)
            except XiaozhiError as exc:  # one plugin's broken schema does not hide the rest
                doc["error"] = str(exc)
            docs.append(doc)
        print(json.dumps(docs, indent=2, ensure_ascii=False, default=repr))
        return 0
    if args.json:
        doc = {
            "providers": [
                {
                    "role": r.spec.role.value,
                    "name": r.spec.name,
                    "execution": r.spec.execution.value,
                    "capabilities": sorted(r.spec.capabilities),
                    "distribution": r.origin.distribution,
                    "version": r.origin.version,
                    "entry_point": r.origin.entry_point,
                    "factory": r.spec.factory_path,
                    "description": r.spec.description,
                    "options": [
                        {"name": n, "type": t, "default": d}
                        for n, t, d in describe_options(r.spec.options)
                    ],
                }
                for r in providers
            ],
            "failures": [
                {
                    "distribution": f.origin.distribution,
                    "version": f.origin.version,
                    "entry_point": f.origin.entry_point,
                    "error": f.error,
                }
                for f in failures
            ],
        }
        print(json.dumps(doc, indent=2, default=repr))
        return 1 if args.strict and failures else 0
    out = sys.stdout
    if providers:
        rows = [["ROLE", "NAME", "EXEC", "CAPABILITIES", "DISTRIBUTION", "VERSION"]]
        rows += [
            [
                str(r.spec.role),
                r.spec.name,
                str(r.spec.execution),
                ",".join(sorted(r.spec.capabilities)) or "-",
                r.origin.distribution,
                r.origin.version or "-",
            ]
            for r in providers
        ]
        table(rows, out)
    else:
        print("no providers installed (pip install a xiaozhi-* provider package)", file=out)
    if args.verbose:
        for r in providers:
            print(
                f"\n{r.spec.role} {r.spec.name}: {r.spec.description or '(no description)'}",
                file=out,
            )
            print(f"  factory: {r.spec.factory_path}", file=out)
            for name, type_name, default in describe_options(r.spec.options):
                bounds = option_range(r.spec.options, name)
                print(
                    f"  option {name}: {type_name}{' ' + bounds if bounds else ''} = {default!r}",
                    file=out,
                )
    if failures:
        print(f"\n{len(failures)} plugin(s) failed to load:", file=out)
        table(
            [["DISTRIBUTION", "VERSION", "ERROR"]]
            + [
                [f.origin.distribution, f.origin.version or "-", one_line(f.error)]
                for f in failures
            ],
            out,
        )
        if args.strict:
            print(
                f"xiaozhi: error: {len(failures)} plugin(s) failed to load (--strict)",
                file=sys.stderr,
            )
            return 1
    return 0


def commands() -> list[Command]:
    """``xiaozhi plugins`` (entry point ``xiaozhi_core.commands: plugins``)."""
    return [
        Command(
            ("plugins",),
            "list installed providers and plugins that failed to load",
            _plugins,
            _plugins_args,
        )
    ]
