"""The provider registry: pluggy plugins discovered through entry points.

Installed distributions declare plugin modules in the entry-point group
``xiaozhi_core.providers`` (the name says whose plugins they are and what they offer).
:meth:`Registry.load_entry_points` imports each one in isolation: a plugin that fails
to import, fails in its hook, or declares a bad spec is recorded in
:attr:`Registry.failures` with its distribution name and version, and the rest still
load. Two providers with the same role and name are both refused, naming both
distributions, because picking one would depend on install order.

Plugins can also be registered directly (tests, embedding): ``registry.register(obj)``
or the underlying ``registry.pm.register(obj)``.

Example:
    >>> import xiaozhi_core.testing
    >>> registry = Registry()
    >>> registry.register(xiaozhi_core.testing)
    >>> [s.name for s in registry.specs("llm")]
    ['fake', 'fake_io']
    >>> registry.get("asr", "whisperx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: asr provider 'whisperx' is not installed; installed asr ...
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError, did_you_mean
from .providers import ProviderSpec
from .types import Role

__all__ = ["ENTRY_POINT_GROUP", "LoadFailure", "Origin", "Registered", "Registry"]

log = logging.getLogger(__name__)

#: The entry-point group provider distributions register their plugin modules under.
ENTRY_POINT_GROUP = "xiaozhi_core.providers"


@dataclass(frozen=True)
class Origin:
    """Where a plugin came from."""

    distribution: str
    version: str
    entry_point: str = ""

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}".strip()


@dataclass(frozen=True)
class Registered:
    """A provider spec with the distribution that offers it."""

    spec: ProviderSpec
    origin: Origin


@dataclass(frozen=True)
class LoadFailure:
    """A plugin (or one of its specs) that could not be loaded, and why."""

    origin: Origin
    error: str

    def __str__(self) -> str:
        where = f" (entry point {self.origin.entry_point})" if self.origin.entry_point else ""
        return f"{self.origin}{where}: {self.error}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _plugin_label(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _is_hookspec(name: str) -> bool:
    return hasattr(getattr(hookspecs, name, None), f"{hookspecs.PROJECT}_spec")


def _call_hook(function: Callable[[], object]) -> tuple[list[object], str]:
    """Call one ``xiaozhi_providers`` implementation: (items it gave, error or "").

    Items yielded by a generator before it failed are kept, so one broken spec does
    not hide its siblings.
    """
    items: list[object] = []
    try:
        result = function()
        if result is None:
            return items, ""
        if isinstance(result, ProviderSpec):
            return [result], ""
        if isinstance(result, str | bytes | Mapping) or not isinstance(result, Iterable):
            return items, (
                f"xiaozhi_providers() returned {type(result).__name__}; expected "
                "a list of ProviderSpec (or yield them)"
            )
        for item in result:
            items.append(item)
    except Exception as exc:
        return items, f"xiaozhi_providers() failed: {_describe(exc)}"
    return items, ""


class Registry:
    """Discovers, validates and looks up provider specs."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[str, Origin] = {}
        self._load_failures: list[LoadFailure] = []
        self._cache_key: tuple[int, ...] | None = None
        self._providers: dict[tuple[Role, str], Registered] = {}
        self._collect_failures: list[LoadFailure] = []
        self._duplicates: dict[tuple[Role, str], list[Origin]] = {}

    # -- loading --------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Import and register every plugin of ``group`` from installed distributions."""
        for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
            dist = ep.dist
            origin = Origin(
                dist.name if dist else "(unknown distribution)",
                dist.version if dist else "",
                f"{ep.name} = {ep.value}",
            )
            name = f"{origin.distribution}:{ep.name}"
            if self.pm.has_plugin(name):
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # isolation: report, keep loading the rest
                self._fail(LoadFailure(origin, f"import failed: {_describe(exc)}"))
                continue
            self.register(plugin, name=name, origin=origin)

    def register(
        self, plugin: object, name: str | None = None, origin: Origin | None = None
    ) -> None:
        """Register a plugin object or module directly (no entry point needed).

        A plugin that pluggy refuses, that implements a hook the core does not know (a
        typo such as ``xiaozhi_provider``), or that implements no hook at all (a
        forgotten ``@hookimpl``) is recorded in :attr:`failures` instead.
        """
        if self.pm.is_registered(plugin):
            return
        label = origin or Origin(f"<registered {name or _plugin_label(plugin)}>", "")
        try:
            registered_name = self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._fail(LoadFailure(label, f"invalid plugin: {_describe(exc)}"))
            return
        callers = self.pm.get_hookcallers(plugin) or []
        unknown = sorted(c.name for c in callers if c.spec is None)
        known = ", ".join(sorted(n for n in vars(hookspecs) if _is_hookspec(n)))
        problem = ""
        if unknown:
            problem = f"implements unknown hook {unknown[0]}(); the core's hooks are: {known}"
        elif not callers:
            problem = f"implements no hook; mark its {known}() function with @xiaozhi_core.hookimpl"
        if problem:
            self.pm.unregister(plugin)
            self._fail(LoadFailure(label, problem))
            return
        if registered_name is not None:
            self._origins[registered_name] = origin or Origin(f"<registered {registered_name}>", "")
        self._cache_key = None

    def _fail(self, failure: LoadFailure) -> None:
        log.warning("plugin %s", failure)
        self._load_failures.append(failure)

    # -- collection -------------------------------------------------------------
    def _collect(self) -> None:
        impls = self.pm.hook.xiaozhi_providers.get_hookimpls()
        key = tuple(id(i.plugin) for i in impls)
        if key == self._cache_key:
            return
        providers: dict[tuple[Role, str], Registered] = {}
        duplicates: dict[tuple[Role, str], list[Origin]] = {}
        failures: list[LoadFailure] = []
        for impl in impls:
            origin = self._origins.get(impl.plugin_name) or Origin(
                f"<registered {impl.plugin_name}>", ""
            )
            specs, error = _call_hook(impl.function)
            if error:
                failures.append(LoadFailure(origin, error))
            for spec in specs:
                if not isinstance(spec, ProviderSpec):
                    failures.append(
                        LoadFailure(
                            origin,
                            f"xiaozhi_providers() returned {type(spec).__name__}, "
                            "expected ProviderSpec",
                        )
                    )
                    continue
                if spec.key in duplicates:
                    duplicates[spec.key].append(origin)
                elif spec.key in providers:
                    duplicates[spec.key] = [providers.pop(spec.key).origin, origin]
                else:
                    providers[spec.key] = Registered(spec, origin)
        for (role, name), origins in duplicates.items():
            who = " and ".join(str(o) for o in origins)
            failures.append(
                LoadFailure(
                    origins[-1],
                    f"duplicate provider {role} {name!r} offered by {who}; both refused "
                    "(uninstall one of them)",
                )
            )
        self._duplicates = duplicates
        self._providers = providers
        self._collect_failures = failures
        self._cache_key = key
        for f in failures:
            log.warning("plugin %s", f)

    @property
    def failures(self) -> list[LoadFailure]:
        """Plugins and specs that could not be loaded (import, hook, spec, duplicate)."""
        self._collect()
        return [*self._load_failures, *self._collect_failures]

    def providers(self, role: str | Role | None = None) -> list[Registered]:
        """Every usable provider (optionally of one role), sorted by role and name."""
        self._collect()
        wanted = Role(role) if role is not None else None
        rows = [r for r in self._providers.values() if wanted is None or r.spec.role is wanted]
        order = list(Role)
        return sorted(rows, key=lambda r: (order.index(r.spec.role), r.spec.name))

    def specs(self, role: str | Role | None = None) -> list[ProviderSpec]:
        return [r.spec for r in self.providers(role)]

    def get(self, role: str | Role, name: str) -> ProviderSpec:
        """The spec of provider ``name`` for ``role``; a clear error when it is missing."""
        return self.lookup(role, name).spec

    def lookup(self, role: str | Role, name: str) -> Registered:
        self._collect()
        role = Role(role)
        found = self._providers.get((role, name))
        if found is not None:
            return found
        if (role, name) in self._duplicates:
            who = " and ".join(str(o) for o in self._duplicates[(role, name)])
            raise PluginError(f"{role} provider {name!r} is offered by both {who}; uninstall one")
        installed = ", ".join(s.name for s in self.specs(role)) or "(none)"
        hint = ""
        broken = [
            f
            for f in self.failures
            if name in f.error
            or name in f.origin.distribution
            or name in f.origin.entry_point.partition("=")[0]
        ]
        if broken:
            hint = f" (a plugin failed to load: {broken[0]})"
        suggestion = did_you_mean(name, [s.name for s in self.specs(role)])
        raise ConfigError(
            f"{role} provider {name!r} is not installed{suggestion}; installed {role} "
            f"providers: {installed}{hint}"
        )


def default_registry(extra_plugins: Iterable[object] = ()) -> Registry:
    """A registry loaded from installed distributions, plus ``extra_plugins``."""
    registry = Registry()
    registry.load_entry_points()
    for plugin in extra_plugins:
        registry.register(plugin)
    return registry
