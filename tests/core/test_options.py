"""validate_options on pydantic: today's key-path messages, ${VAR} parsing, ranges from
annotated_types, and the JSON Schema / docs helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import annotated_types as at
import pytest

from xiaozhi_core.errors import ConfigError
from xiaozhi_core.options import (
    EnvStr,
    describe_options,
    field_docs,
    json_schema,
    option_range,
    validate_options,
)


@dataclass
class Inner:
    #: How many.
    count: Annotated[int, at.Ge(1)] = 1


@dataclass
class Opts:
    #: A name.
    name: str = "x"
    ratio: Annotated[float, at.Interval(gt=0, le=1)] = 0.5
    level: Annotated[int, at.Interval(ge=0, le=100)] = 50
    limit: Annotated[int, at.Ge(1)] | None = None
    mode: Literal["a", "b"] = "a"
    rate: Literal[16000, 24000] = 16000
    enabled: bool | Literal["auto"] = "auto"
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name == "bad":
            raise ValueError("name must not be 'bad'")


@dataclass
class Child(Opts):
    #: Only in the child.
    more: int = 0


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        validate_options(Opts, data, path="x.options")
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"nmae": 1},
            "x.options.nmae: unknown key 'nmae' (did you mean 'name'?); allowed keys: "
            "enabled, extra, inner, items, level, limit, mode, name, rate, ratio, tags",
        ),
        (
            {"inner": {"cnt": 2}},
            "x.options.inner.cnt: unknown key 'cnt' (did you mean 'count'?); allowed keys: count",
        ),
        ({"ratio": 0}, "x.options.ratio: must be in (0, 1], got 0"),
        ({"level": 101}, "x.options.level: must be in 0..100, got 101"),
        ({"limit": 0}, "x.options.limit: must be >= 1, got 0"),
        ({"items": [{"count": 1}, {"count": 0}]}, "x.options.items[1].count: must be >= 1, got 0"),
        ({"mode": "c"}, "x.options.mode: 'c' is not allowed; allowed: 'a', 'b'"),
        ({"rate": "16000"}, "x.options.rate: '16000' is not allowed; allowed: 16000, 24000"),
        ({"level": "50"}, "x.options.level: expected an integer, got '50'"),
        ({"level": 5.0}, "x.options.level: expected an integer, got 5.0"),
        ({"level": True}, "x.options.level: expected an integer, got True"),
        ({"ratio": "half"}, "x.options.ratio: expected a number, got 'half'"),
        ({"tags": "a"}, "x.options.tags: expected a list, got a string"),
        ({"inner": 3}, "x.options.inner: expected a mapping, got int"),
        ({"name": ["x"]}, "x.options.name: expected a string, got list"),
        ({"enabled": "maybe"}, "x.options.enabled: 'maybe' is not a valid bool | 'auto'"),
        ({"name": "bad"}, "x.options: name must not be 'bad'"),
    ],
)
def test_messages_name_the_key_path(data: dict[str, Any], message: str) -> None:
    assert error(data) == message


def test_env_strings_are_parsed_for_the_declared_type() -> None:
    o = validate_options(
        Opts,
        {
            "name": EnvStr("0123"),
            "ratio": EnvStr("0.25"),
            "level": EnvStr(" 7 "),
            "limit": EnvStr(""),
            "rate": EnvStr("24000"),
            "enabled": EnvStr("off"),
            "tags": [EnvStr("t")],
            "inner": {"count": EnvStr("3")},
            "extra": {"k": EnvStr("5")},
        },
    )
    assert (o.name, o.ratio, o.level, o.limit, o.rate, o.enabled) == (
        "0123",
        0.25,
        7,
        None,
        24000,
        False,
    )
    assert type(o.name) is str and o.tags == ["t"] and o.inner.count == 3
    assert o.extra == {"k": "5"}  # Any keeps the text
    assert error({"level": EnvStr("many")}) == "x.options.level: expected an integer, got 'many'"
    assert validate_options(Opts, {"enabled": EnvStr("auto")}).enabled == "auto"


def test_numbers_are_accepted_as_text_and_floats_from_ints() -> None:
    o = validate_options(Opts, {"name": 80, "ratio": 1})
    assert o.name == "80" and o.ratio == 1.0 and isinstance(o.ratio, float)


def test_missing_required_field() -> None:
    @dataclass
    class Req:
        key: str

    with pytest.raises(ConfigError, match=r"^o\.key: is required \(str\)$"):
        validate_options(Req, {}, path="o")


def test_json_schema_has_ranges_descriptions_and_forbids_extra_keys() -> None:
    s = json_schema(Child)
    assert s["additionalProperties"] is False
    assert s["properties"]["level"] == {
        "default": 50,
        "maximum": 100,
        "minimum": 0,
        "type": "integer",
    }
    assert s["properties"]["name"]["description"] == "A name."
    assert s["properties"]["more"]["description"] == "Only in the child."
    inner = s["$defs"]["Inner"]
    assert inner["additionalProperties"] is False
    assert inner["properties"]["count"]["description"] == "How many."


def test_describe_range_and_docs() -> None:
    rows = {n: t for n, t, _ in describe_options(Opts)}
    assert rows["limit"] == "int | null" and rows["enabled"] == "bool | 'auto'"
    assert option_range(Opts, "limit") == ">= 1"
    assert option_range(Opts, "ratio") == "in (0, 1]"
    assert option_range(Opts, "name") == ""
    assert field_docs(Child) == {"name": "A name.", "more": "Only in the child."}


class Opaque:
    pass


@dataclass
class Broken:
    thing: Opaque | None = None


def test_a_schema_pydantic_cannot_handle_is_a_one_line_plugin_error() -> None:
    from xiaozhi_core.errors import PluginError

    with pytest.raises(
        PluginError,
        match=r"^options schema .*Broken is not supported: "
        r"Unable to generate pydantic-core schema",
    ) as info:
        validate_options(Broken, {})
    assert "\n" not in str(info.value)
    with pytest.raises(PluginError):
        json_schema(Broken)
