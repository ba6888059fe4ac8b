"""Typed option schemas: a provider (and the core) declares its options as a dataclass.

A YAML mapping is validated against it by pydantic (a ``TypeAdapter`` over the plain
dataclass, strict types, unknown keys forbidden): unknown keys are errors, types are
checked, ``Literal`` values list what is allowed, range limits written as
``annotated_types`` constraints (``Annotated[int, Ge(1)]``, ``Interval(ge=0, le=100)``)
are enforced, and every error names its key path. Provider modules only import
``annotated_types`` (tiny), so ``plugin.py`` stays cheap to import; pydantic loads when
a config is validated.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``,
``list[T]``, ``dict[str, T]``, ``T | None``, ``Any``, nested dataclasses, each optionally
``Annotated`` with ``annotated_types`` constraints. A ``__post_init__`` may check what
types cannot say (relations between fields); its ``ValueError`` becomes a
:class:`ConfigError` at the schema's path.

Values are not coerced (``port: "80"`` is an error for an ``int``), except strings that
came from ``${VAR}`` expansion (:class:`EnvStr`): the environment only holds strings, so
those are parsed as the field's type (``"8000"`` → 8000, ``"true"`` → True, ``""`` →
None for an optional field), while a ``str`` field keeps them verbatim (an API key
``"0123"`` stays ``"0123"``). Numbers are accepted for ``str`` fields (as text).

:func:`json_schema` gives the JSON Schema of an options dataclass (``xiaozhi plugins
--schema``, ``docs/configuration.md``).

Example:
    >>> from dataclasses import dataclass
    >>> from typing import Annotated, Literal
    >>> import annotated_types as at
    >>> @dataclass
    ... class Opts:
    ...     model: Literal["tiny", "base"] = "tiny"
    ...     beam_size: Annotated[int, at.Ge(1)] = 1
    >>> validate_options(Opts, {"beam_size": 2}, path="asr.options")
    Opts(model='tiny', beam_size=2)
    >>> validate_options(Opts, {"model": "huge"}, path="asr.options")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: asr.options.model: 'huge' is not allowed; allowed: 'tiny', ...
    >>> validate_options(Opts, {"beam_size": 0}, path="asr.options")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: asr.options.beam_size: must be >= 1, got 0
    >>> validate_options(Opts, {"beam_size": EnvStr("5")}).beam_size
    5
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    TypeGuard,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import annotated_types as at  # noqa: F401 - doctest schemas resolve ``at.Ge`` here

from .errors import ConfigError, PluginError, did_you_mean
from .types import JSONObject

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from pydantic import TypeAdapter
    from pydantic_core import ErrorDetails

__all__ = [
    "EnvStr",
    "describe_options",
    "field_docs",
    "json_schema",
    "option_range",
    "options_to_dict",
    "validate_options",
]

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


def _env_scalar(tp: object, value: str) -> object:
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
    if tp is str or tp is Any:
        return str(value)
    raise ValueError(value)


def _parse_env(tp: object, value: str) -> object:
    """An :class:`EnvStr` parsed for declared type ``tp`` (today's rules); ValueError
    when it cannot be."""
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin is Literal:
        for choice in get_args(tp):
            if isinstance(choice, str):
                if value == choice:
                    return choice
                continue
            try:
                if _env_scalar(type(choice), value) == choice:
                    return choice
            except ValueError:
                pass
        raise ValueError(value)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and value.strip().lower() in _NULL:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_env(arg, value)
            except ValueError:
                pass
        raise ValueError(value)
    return _env_scalar(tp, value)


# ----------------------------------------------------------------------- type helpers
def _strip(tp: object) -> object:
    """``tp`` without ``Annotated`` metadata."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _metadata(tp: object) -> list[object]:
    out: list[object] = []
    while get_origin(tp) is Annotated:
        out.extend(get_args(tp)[1:])
        tp = get_args(tp)[0]
    return out


def _is_union(tp: object) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _non_null(tp: object) -> object:
    """``X`` for ``X | None``; the type itself otherwise."""
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_dataclass_type(tp: object) -> TypeGuard[type]:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


@functools.cache
def _hints(schema: type) -> dict[str, object]:
    return typing.get_type_hints(schema, include_extras=True)


def _init_fields(schema: type) -> list[dataclasses.Field[object]]:
    return [f for f in dataclasses.fields(schema) if f.init]


def _type_name(tp: object) -> str:
    tp = _strip(tp)
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


def _kind(value: object) -> str:
    return "a string" if isinstance(value, str) else type(value).__name__


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _child(container: object, part: str | int) -> tuple[bool, object]:
    """``(True, container[part])`` if the data has that key or index, else ``(False, None)``."""
    if isinstance(container, Mapping) and part in container:
        return True, container[part]
    if isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container):
        return True, container[part]
    return False, None


def _walk(
    schema: object, data: object, loc: Sequence[str | int]
) -> tuple[object, object, list[str | int]]:
    """Follow a pydantic error location through the declared types and the data.

    Returns ``(type, value, keys)``: the declared type at the location (a multi-member
    union is not descended: its member tags are skipped), the input value there (None if
    absent) and the keys followed (for the error path).
    """
    tp: object = schema
    value: object = data
    keys: list[str | int] = []
    for part in loc:
        base = _non_null(_strip(tp))
        if _is_union(base):
            break  # the rest is a union member tag
        origin = get_origin(base)
        if _is_dataclass_type(base) and isinstance(part, str):
            tp = _hints(base).get(part, object)
        elif origin is list and isinstance(part, int):
            tp = (get_args(base) or (object,))[0]
        elif origin is dict:
            tp = (get_args(base) or (str, object))[1]
        else:
            tp = object  # nothing declared here: any value
        keys.append(part)
        value = _child(value, part)[1]
    return tp, value, keys


# ----------------------------------------------------------------------- pydantic
def _forbid_extra(tp: object, seen: set[int]) -> None:
    """Give every dataclass reachable from ``tp`` pydantic's ``extra="forbid"`` config."""
    tp = _strip(tp)
    if id(tp) in seen:
        return
    seen.add(id(tp))
    if _is_dataclass_type(tp):
        if "__pydantic_config__" not in tp.__dict__:
            from pydantic import ConfigDict

            setattr(tp, "__pydantic_config__", ConfigDict(extra="forbid"))  # noqa: B010
        for hint in _hints(tp).values():
            _forbid_extra(hint, seen)
    for arg in get_args(tp):
        _forbid_extra(arg, seen)


def _adapter(schema: type) -> TypeAdapter[object]:
    """The cached validator of ``schema``; :class:`PluginError` (one line) when pydantic
    cannot build one (a field type it does not know: a plugin's bug, not the user's)."""
    try:
        return _build_adapter(schema)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PluginError(
            f"options schema {schema.__module__}.{schema.__qualname__} is not supported: {first}"
        ) from None


@functools.cache
def _build_adapter(schema: type) -> TypeAdapter[object]:
    from pydantic import TypeAdapter

    _forbid_extra(schema, set())
    return TypeAdapter(schema)


def _bounds(tp: object) -> str:
    """The range an ``Annotated`` type allows, as text: ``0..100``, ``>= 1``, ``> 0``."""
    lo = hi = None
    lo_open = hi_open = False
    for m in _metadata(tp):
        for name in ("ge", "gt", "le", "lt"):
            v = getattr(m, name, None)
            if v is None:
                continue
            if name in ("ge", "gt"):
                lo, lo_open = v, name == "gt"
            else:
                hi, hi_open = v, name == "lt"
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"in {lo}..{hi}"
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def _message(err: ErrorDetails, tp: object, value: object, parent_tp: object) -> str:
    """Today's wording for one pydantic error."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    base = _non_null(_strip(tp))
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        key = err["loc"][-1]
        parent = _strip(parent_tp)
        fields = _init_fields(parent) if _is_dataclass_type(parent) else []
        allowed = ", ".join(sorted(f.name for f in fields))
        hint = did_you_mean(key, [f.name for f in fields])
        return f"unknown key {key!r}{hint}; allowed keys: {allowed or '(none)'}"
    if kind in ("missing", "missing_argument"):
        return f"is required ({_type_name(tp)})"
    if _is_union(base) and kind not in ("value_error", "assertion_error"):
        return f"{value!r} is not a valid {_type_name(tp)}"
    if kind == "literal_error":
        choices = ", ".join(repr(a) for a in get_args(base))
        hint = (
            did_you_mean(value, [a for a in get_args(base) if isinstance(a, str)])
            if isinstance(value, str)
            else ""
        )
        return f"{str(value)!r} is not allowed{hint}; allowed: {choices}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {value!r}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"expected a number, got {value!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {value!r}"
    if kind == "string_type":
        return f"expected a string, got {_kind(value)}"
    if kind == "list_type":
        return f"expected a list, got {_kind(value)}"
    if kind in ("dict_type", "dataclass_type", "model_type", "dataclass_args_type"):
        return f"expected a mapping, got {_kind(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be {_bounds(tp) or _bounds(base)}, got {value!r}"
    if kind == "too_short":
        if isinstance(value, str) and ctx.get("min_length") == 1:
            return "must not be empty"
        return f"needs at least {ctx.get('min_length')} items, got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match {ctx.get('pattern')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(err.get("msg", kind))


def _prepare(tp: object, value: object) -> object:
    """A copy of ``value`` with each ${VAR} string parsed for its declared type (left as
    it is when it does not parse: validation then reports it) and numbers given for a
    ``str`` turned into text."""
    base = _non_null(_strip(tp))
    if isinstance(value, EnvStr):
        try:
            return _parse_env(tp, value)
        except ValueError:
            return str(value)
    if base is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Mapping):
        if _is_dataclass_type(base):
            hints = _hints(base)
            return {k: _prepare(hints.get(k, object), v) for k, v in value.items()}
        if get_origin(base) is dict:
            key_tp, val_tp = get_args(base) or (str, object)
            return {_prepare(key_tp, k): _prepare(val_tp, v) for k, v in value.items()}
        return {k: _prepare(object, v) for k, v in value.items()}
    if isinstance(value, list):
        item_tp = (get_args(base) or (object,))[0] if get_origin(base) is list else object
        return [_prepare(item_tp, v) for v in value]
    return value


def _order(err: ErrorDetails) -> tuple[int, str]:
    # Unknown keys first, by name (like a reader scanning the mapping), then field order.
    unknown = err["type"] in ("unexpected_keyword_argument", "extra_forbidden")
    return (0, str(err["loc"])) if unknown else (1, "")


def validate_options(schema: type[T], data: Mapping[str, object] | None, *, path: str = "") -> T:
    """Build ``schema`` (a dataclass) from ``data``, or raise :class:`ConfigError`."""
    from pydantic import ValidationError

    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"options schema must be a dataclass type, got {schema!r}")
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, got {_kind(data)}", path=path)
    adapter = _adapter(schema)
    work = _prepare(schema, dict(data or {}))
    try:
        text = json.dumps(work, default=str, allow_nan=True)
        obj = adapter.validate_json(text, strict=True)
    except ConfigError as exc:  # raised by a __post_init__ with its own path
        if exc.path or not path:
            raise
        raise ConfigError(exc.message, path=path) from None
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, ValidationError):
            raise ConfigError(str(exc), path=path) from None
        err = sorted(exc.errors(), key=_order)[0]
    else:
        if isinstance(obj, schema):
            return obj
        raise TypeError(f"validating {schema.__qualname__} gave a {type(obj).__name__}")
    loc = err["loc"]
    tp, value, keys = _walk(schema, work, loc)
    parent_tp = None
    if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        parent_tp, _, parent_keys = _walk(schema, work, loc[:-1])
        keys = [*parent_keys, loc[-1]]
    elif err["type"] in ("missing", "missing_argument"):
        keys = list(loc)
    where = path
    for k in keys:
        where = _join(where, k)
    raise ConfigError(_message(err, tp, value, parent_tp), path=where) from None


def options_to_dict(obj: DataclassInstance) -> dict[str, object]:
    """The plain mapping of a validated options object (for logs and process pools)."""
    return dataclasses.asdict(obj)


# ----------------------------------------------------------------------- documentation
_DOC_RE = re.compile(r"^\s*#:\s?(.*)$")
_FIELD_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


@functools.cache
def field_docs(schema: type) -> dict[str, str]:
    """The ``#:`` comments written above each field of ``schema`` (and its bases).

    >>> from xiaozhi_core.config import LimitSettings
    >>> field_docs(LimitSettings)["max_frame_bytes"]
    'Largest WebSocket frame accepted (the firmware refuses frames over 65535 bytes).'
    """
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not _is_dataclass_type(cls):
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines[1:]:
            if m := _DOC_RE.match(line):
                pending.append(m.group(1).strip())
                continue
            if (m := _FIELD_RE.match(line)) and pending:
                docs[m.group(1)] = " ".join(pending)
            if line.strip() and not line.strip().startswith("#"):
                pending = []
    return docs


def json_schema(schema: type) -> JSONObject:
    """The JSON Schema (draft 2020-12) of an options dataclass, with each field's ``#:``
    comment as its description.

    >>> from dataclasses import dataclass
    >>> from typing import Annotated
    >>> import annotated_types as at
    >>> @dataclass
    ... class O:
    ...     volume: Annotated[int, at.Interval(ge=0, le=100)] = 50
    >>> s = json_schema(O)
    >>> s["properties"]["volume"], s["additionalProperties"]
    ({'default': 50, 'maximum': 100, 'minimum': 0, 'type': 'integer'}, False)
    """
    doc: JSONObject = _adapter(schema).json_schema()
    defs = doc.get("$defs")

    def describe(node: JSONObject, cls: type) -> None:
        docs = field_docs(cls)
        hints = _hints(cls)
        props = node.get("properties")
        for name, prop in props.items() if isinstance(props, dict) else ():
            if not isinstance(prop, dict):
                continue
            prop.pop("title", None)
            if name in docs:
                prop["description"] = docs[name]
            sub = _non_null(_strip(hints.get(name)))
            ref = prop.get("$ref")
            if (
                _is_dataclass_type(sub)
                and isinstance(ref, str)
                and ref.startswith("#/$defs/")
                and isinstance(defs, dict)
            ):
                target = defs.get(ref.rsplit("/", 1)[1])
                if isinstance(target, dict):
                    describe(target, sub)

    describe(doc, schema)
    if schema.__doc__ and not schema.__doc__.startswith(f"{schema.__name__}("):
        doc["description"] = inspect.cleandoc(schema.__doc__).split("\n\n")[0]
    return doc


def describe_options(schema: type) -> list[tuple[str, str, object]]:
    """``(name, type, default)`` rows for docs and ``xiaozhi plugins --verbose``
    (:func:`option_range` gives a field's range, :func:`json_schema` everything).

    >>> from dataclasses import dataclass
    >>> from typing import Annotated
    >>> import annotated_types as at
    >>> @dataclass
    ... class O:
    ...     x: int = 3
    ...     n: Annotated[int, at.Ge(1)] = 2
    >>> describe_options(O)
    [('x', 'int', 3), ('n', 'int', 2)]
    >>> option_range(O, "n")
    '>= 1'
    """
    hints = _hints(schema)
    rows: list[tuple[str, str, object]] = []
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        if f.default is not _MISSING:
            default: object = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default))
    return rows


def option_range(schema: type, name: str) -> str:
    """The range field ``name`` of ``schema`` allows, as text (``"in 0..100"``,
    ``">= 1"``), or ``""`` when it has no ``annotated_types`` bounds."""
    tp = _hints(schema)[name]
    return _bounds(tp) or _bounds(_non_null(_strip(tp)))
