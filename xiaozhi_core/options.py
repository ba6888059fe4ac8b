"""Typed option schemas: a provider (and the core) declares its options as a dataclass.

A YAML mapping is validated against it: unknown keys are errors, types are checked,
``Literal`` values list what is allowed, and every error names its key path.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``,
``list[T]``, ``dict[str, T]``, ``T | None``, ``Any`` and nested dataclasses.

Values are not coerced (``port: "80"`` is an error for an ``int``), except strings that
came from ``${VAR}`` expansion (:class:`EnvStr`): the environment only holds strings, so
those are parsed as the field's type (``"8000"`` → 8000, ``"true"`` → True, ``""`` →
None for an optional field), while a ``str`` field keeps them verbatim (an API key
``"0123"`` stays ``"0123"``).

Example:
    >>> from dataclasses import dataclass
    >>> from typing import Literal
    >>> @dataclass
    ... class Opts:
    ...     model: Literal["tiny", "base"] = "tiny"
    ...     beam_size: int = 1
    >>> validate_options(Opts, {"beam_size": 2}, path="asr.options")
    Opts(model='tiny', beam_size=2)
    >>> validate_options(Opts, {"model": "huge"}, path="asr.options")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: asr.options.model: 'huge' is not allowed; allowed: 'tiny', ...
    >>> validate_options(Opts, {"beam_size": EnvStr("5")}).beam_size
    5
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from .errors import ConfigError

__all__ = ["EnvStr", "describe_options", "options_to_dict", "validate_options"]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class EnvStr(str):
    """A config string produced by ``${VAR}`` expansion.

    Validation parses it as the option's type (int, float, bool, null); a ``str``
    option gets it unchanged.

    >>> EnvStr("8000") == "8000"
    True
    """

    __slots__ = ()


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"", "null", "~", "none"}


def _env_scalar(tp: Any, value: EnvStr) -> Any:
    """``value`` parsed as scalar type ``tp``; raises ValueError when it does not parse."""
    text = value.strip()
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(value)
    if tp is int:
        return int(text, 10)
    if tp is float:
        return float(text)
    if tp is type(None):
        if text.lower() in _NULL:
            return None
        raise ValueError(value)
    return str(value)


def _kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else type(value).__name__


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return str(value) if isinstance(value, EnvStr) else value
    if origin is Literal:
        allowed = get_args(tp)
        for choice in allowed:
            if value == choice and isinstance(value, bool) == isinstance(choice, bool):
                return choice
            if isinstance(value, EnvStr) and not isinstance(choice, str):
                try:
                    if _env_scalar(type(choice), value) == choice:
                        return choice
                except ValueError:
                    pass
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{str(value)!r} is not allowed; allowed: {choices}", path=path)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if isinstance(value, EnvStr) and type(None) in args and value.strip().lower() in _NULL:
            return None
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"must not be null; expected {_type_name(tp)}", path=path)
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{value!r} is not a valid {_type_name(tp)}", path=path)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping, got {_kind(value)}", path=path)
        return validate_options(tp, value, path=path)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {_kind(value)}", path=path)
        (item_tp,) = get_args(tp) or (Any,)
        return [_convert(item_tp, v, _join(path, i)) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping, got {_kind(value)}", path=path)
        key_tp, val_tp = get_args(tp) or (str, Any)
        return {
            _convert(key_tp, k, _join(path, str(k))): _convert(val_tp, v, _join(path, str(k)))
            for k, v in value.items()
        }
    if isinstance(value, EnvStr) and tp in (bool, int, float, str):
        try:
            return _env_scalar(tp, value)
        except ValueError:
            pass  # reported below, like a literal value of the wrong type
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true or false, got {value!r}", path=path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"expected an integer, got {value!r}", path=path)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"expected a number, got {value!r}", path=path)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"expected a string, got {_kind(value)}", path=path)
    raise ConfigError(f"unsupported option type {tp!r} in schema", path=path)


def validate_options(schema: type[T], data: Mapping[str, Any] | None, *, path: str = "") -> T:
    """Build ``schema`` (a dataclass) from ``data``, or raise :class:`ConfigError`."""
    if not (dataclasses.is_dataclass(schema) and isinstance(schema, type)):
        raise TypeError(f"options schema must be a dataclass type, got {schema!r}")
    data = dict(data or {})
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(
            f"unknown key {unknown[0]!r}; allowed keys: {allowed}", path=_join(path, unknown[0])
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise ConfigError(f"is required ({_type_name(hints[name])})", path=sub)
    try:
        obj = schema(**kwargs)
    except ConfigError as exc:
        if exc.path or not path:
            raise
        raise ConfigError(exc.message, path=path) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), path=path) from exc
    return obj


def options_to_dict(obj: Any) -> dict[str, Any]:
    """The plain mapping of a validated options object (for logs and process pools)."""
    return dataclasses.asdict(obj)


def describe_options(schema: type) -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` rows for docs and ``xiaozhi plugins --verbose``.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class O:
    ...     x: int = 3
    >>> describe_options(O)
    [('x', 'int', 3)]
    """
    hints = typing.get_type_hints(schema)
    rows: list[tuple[str, str, Any]] = []
    for f in dataclasses.fields(schema):
        if f.default is not _MISSING:
            default: Any = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default))
    return rows
