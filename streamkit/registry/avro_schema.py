"""An Avro schema derived from Python type hints: a pydantic model or a dataclass (nested ones
too), or a plain type. Pure functions, no registry.

| Python | Avro |
|---|---|
| `bool`, `int`, `float`, `str`, `bytes` | `boolean`, `long`, `double`, `string`, `bytes` |
| `datetime` / `date` / `UUID` | `long` timestamp-micros / `int` date / `string` uuid |
| a `str` enum (`class Color(str, Enum)`) | `enum` of its values |
| `list[X]`, `tuple[X, ...]` | `array` |
| `dict[str, X]` | `map` |
| `X \\| None` | `["null", X]` (default null when the field defaults to None) |
| `X \\| Y` | a union |
| a pydantic model or dataclass | `record` (named once, referred to by name after) |

A field's default is kept when Avro can hold it (a plain value, an enum, an empty list or
dict from `default_factory`): a field added with a default stays BACKWARD compatible.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import types
import typing
import uuid
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from streamkit.serde import type_name
from streamkit.settings import ConfigError

_PRIMITIVES: dict[Any, str] = {
    bool: "boolean",
    int: "long",
    float: "double",
    str: "string",
    bytes: "bytes",
}
_LOGICAL: dict[Any, dict[str, str]] = {
    dt.datetime: {"type": "long", "logicalType": "timestamp-micros"},
    dt.date: {"type": "int", "logicalType": "date"},
    uuid.UUID: {"type": "string", "logicalType": "uuid"},
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NO_DEFAULT = object()


def avro_schema(declared: Any, namespace: str | None = None) -> Any:
    """The Avro schema (JSON-ready: a str, dict or list) of a declared type. ConfigError for a
    type Avro cannot hold, naming the field."""
    return _Deriver(namespace).schema(declared, type_name(declared))


class _Deriver:
    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.named: set[str] = set()  # records and enums already defined

    def schema(self, declared: Any, where: str) -> Any:
        if declared in _PRIMITIVES:
            return _PRIMITIVES[declared]
        if declared in _LOGICAL:
            return dict(_LOGICAL[declared])
        origin, args = get_origin(declared), get_args(declared)
        if origin is typing.Annotated:
            return self.schema(args[0], where)
        if origin is Union or origin is types.UnionType:
            branches = [a for a in args if a is not type(None)]
            union = [self.schema(a, where) for a in branches]
            return ["null", *union] if len(branches) < len(args) else union
        if origin in (list, set, frozenset) or (origin is tuple and args[1:] == (...,)):
            return {"type": "array", "items": self.schema(args[0] if args else Any, where)}
        if origin is dict:
            if args and args[0] is not str:
                raise ConfigError(f"{where}: an Avro map's keys are strings, not {args[0]}")
            return {"type": "map", "values": self.schema(args[1] if args else Any, where)}
        if isinstance(declared, type) and issubclass(declared, enum.Enum):
            return self.enum(declared, where)
        if isinstance(declared, type) and (
            issubclass(declared, BaseModel) or dataclasses.is_dataclass(declared)
        ):
            return self.record(declared)
        raise ConfigError(
            f"{where}: {type_name(declared)} has no Avro form; use bool, int, float, str, "
            "bytes, datetime, date, UUID, a str enum, list, dict[str, ...], a union, a "
            "pydantic model or a dataclass, or pass the schema (Avro(..., schema=...))"
        )

    def full_name(self, cls: type) -> str:
        return f"{self.namespace}.{cls.__name__}" if self.namespace else cls.__name__

    def enum(self, cls: type[enum.Enum], where: str) -> Any:
        name = self.full_name(cls)
        if name in self.named:
            return name
        symbols = [m.value for m in cls]
        if not all(isinstance(s, str) and _NAME.match(s) for s in symbols):
            raise ConfigError(
                f"{where}: enum {cls.__name__} needs str values that are Avro names "
                f"(letters, digits, _), got {symbols!r}"
            )
        self.named.add(name)
        return {"type": "enum", "name": cls.__name__, **self.ns(), "symbols": symbols}

    def ns(self) -> dict[str, str]:
        return {"namespace": self.namespace} if self.namespace else {}

    def record(self, cls: type) -> Any:
        name = self.full_name(cls)
        if name in self.named:
            return name
        self.named.add(name)  # before the fields: a recursive record refers to itself
        fields = []
        for field, hint, default in _fields(cls):
            schema = self.schema(hint, f"{cls.__name__}.{field}")
            entry: dict[str, Any] = {"name": field, "type": schema}
            if default is not _NO_DEFAULT:
                entry |= _avro_default(schema, default)
            fields.append(entry)
        return {"type": "record", "name": cls.__name__, **self.ns(), "fields": fields}


def _fields(cls: type) -> list[tuple[str, Any, Any]]:
    """(name, type hint, default or _NO_DEFAULT) of a model's or dataclass's fields."""
    if issubclass(cls, BaseModel):
        out = []
        for name, info in cls.model_fields.items():
            if info.default is not PydanticUndefined:
                default = info.default
            elif info.default_factory is list or info.default_factory is dict:
                default = info.default_factory()
            else:
                default = _NO_DEFAULT
            out.append((name, info.annotation, default))
        return out
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # a dataclass, checked before
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is list or f.default_factory is dict:
            default = f.default_factory()
        else:
            default = _NO_DEFAULT
        out.append((f.name, hints[f.name], default))
    return out


def _avro_default(schema: Any, default: Any) -> dict[str, Any]:
    """{"default": ...} when Avro can state this default for this schema, else {}."""
    if default is None:
        return {"default": None} if isinstance(schema, list) and schema[0] == "null" else {}
    if isinstance(default, enum.Enum):
        default = default.value
    first = schema[0] if isinstance(schema, list) else schema
    if isinstance(schema, list) and schema[0] == "null":
        return {}  # a union's default must match its first branch (null)
    plain: dict[str, type | tuple[type, ...]] = {
        "boolean": bool,
        "long": int,
        "double": (int, float),
        "string": str,
    }
    if isinstance(first, str) and first in plain and isinstance(default, plain[first]):
        if first == "long" and isinstance(default, bool):
            return {}
        return {"default": default}
    if isinstance(first, dict) and first.get("type") == "enum" and default in first["symbols"]:
        return {"default": default}
    if isinstance(first, dict) and first.get("type") in ("array", "map") and not default:
        return {"default": [] if first["type"] == "array" else {}}
    return {}
