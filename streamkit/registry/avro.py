"""Avro in the Confluent wire format, with fastavro (a C-accelerated reader and writer of
schemaless Avro, with schema resolution).

    Avro(Order)                         # the schema derived from a pydantic model / dataclass
    Avro(Order, schema=order_avsc)      # the user's own schema, decoded into Order
    Avro(schema=order_avsc)             # no type: values are what fastavro reads (dicts...)
    Avro(str)                           # a primitive: "string" (a key, say)

A record written with another version of the subject's schema is read through Avro's schema
resolution (writer's schema from the registry by id, the declared one as the reader's).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from streamkit.registry.avro_schema import avro_schema
from streamkit.registry.client import RegisteredSchema
from streamkit.registry.codec import HEADER, SchemaCodec
from streamkit.serde import DecodeError, describe, type_name
from streamkit.settings import ConfigError

_BUFFER = re.compile(r" from <_io\.BytesIO object at 0x[0-9a-f]+>")

try:
    import fastavro
except ImportError:  # pragma: no cover - the registry extra is not installed
    fastavro = None  # type: ignore[assignment]


def _needs(module: Any, what: str) -> None:
    if module is None:
        raise ConfigError(f"{what} needs the registry extra: pip install 'streamkit[registry]'")


def _name(schema: Any) -> str:
    """`record A`, `"string"`: how an Avro schema reads in a reason."""
    if isinstance(schema, dict):
        return f"{schema.get('type')} {schema.get('name', '')}".strip()
    return json.dumps(schema)[:60]


class Avro(SchemaCodec):
    schema_type = "AVRO"
    format_name = "Avro"

    def __init__(
        self,
        type_: Any = None,
        *,
        schema: str | dict[str, Any] | list[Any] | None = None,
        namespace: str | None = None,
        subject: str | None = None,
        register: bool = True,
    ) -> None:
        _needs(fastavro, "Avro")
        if type_ is None and schema is None:
            raise ConfigError("Avro(): give a type (Avro(Order)) or a schema (schema=...)")
        what = type_name(type_) if type_ is not None else "schema"
        super().__init__(subject=subject, register=register, what=what)
        raw = avro_schema(type_, namespace) if schema is None else schema
        if isinstance(raw, str) and raw.lstrip()[:1] in ("{", "[", '"'):
            raw = json.loads(raw)
        try:
            self.parsed = fastavro.parse_schema(raw)
        except Exception as exc:
            raise ConfigError(f"Avro({what}): not a valid Avro schema: {exc}") from None
        self.text = json.dumps(raw, separators=(",", ":"))
        self.type_ = type_
        self._adapter: TypeAdapter[Any] | None = None
        if type_ is not None and type_ not in (str, bytes, int, float, bool):
            self._adapter = TypeAdapter(type_)

    def schema_text(self) -> str:
        return self.text

    def own_writer(self) -> Any:
        return self.parsed  # the writer is the reader: `read` needs no resolution

    def parse_writer(self, registered: RegisteredSchema) -> Any:
        return fastavro.parse_schema(json.loads(registered.schema))

    def write(self, obj: Any) -> bytes:
        if isinstance(obj, BaseModel):
            obj = obj.model_dump()
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            obj = dataclasses.asdict(obj)
        out = io.BytesIO()
        try:
            fastavro.schemaless_writer(out, self.parsed, obj)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ValueError(
                f"{self.where}: {type(obj).__name__} value does not fit Avro schema "
                f"{self.what}: {exc}"
            ) from None
        return out.getvalue()

    def read(self, writer: Any, schema_id: int, data: bytes) -> Any:
        buf = io.BytesIO(data)
        buf.seek(HEADER)
        try:
            if writer is self.parsed:
                value = fastavro.schemaless_reader(buf, self.parsed, None)
            else:
                value = fastavro.schemaless_reader(buf, writer, self.parsed)
        except Exception as exc:  # EOFError, UnicodeDecodeError, SchemaResolutionError...
            said = _BUFFER.sub("", str(exc)) or "truncated"
            if type(exc).__name__ == "SchemaResolutionError":
                said = (
                    f"the writer's {_name(writer)} does not resolve to the declared "
                    f"{_name(self.parsed)} ({said[:120]}...)"
                    if len(said) > 160
                    else said
                )
            raise DecodeError(
                f"bytes do not match Avro schema id {schema_id} ({self.what}): "
                f"{type(exc).__name__}: {said}"
            ) from None
        left = len(data) - buf.tell()
        if left:
            raise DecodeError(
                f"bytes do not match Avro schema id {schema_id} ({self.what}): {left} bytes "
                "left over after the record"
            )
        if self._adapter is None:
            return value
        try:
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            raise DecodeError(f"invalid {self.what}: {describe(exc)}") from None
