"""JSON Schema in the Confluent wire format: the 5-byte header, then the value as JSON.

    JsonSchema(Order)                   # the schema pydantic derives; decoded into Order
    JsonSchema(schema=order_schema)     # the user's schema; values are plain JSON, validated

With a type, pydantic both derives the schema (`TypeAdapter.json_schema`) and validates a
record into the type (its Rust parser, one pass): a record that does not fit is a dead letter
with pydantic's reasons. Without one, the `jsonschema` library validates each record against
its writer's schema (fetched by id, compiled once), as Confluent's deserializer does, and
writes are validated against the declared schema before they leave.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from streamkit.registry.client import RegisteredSchema
from streamkit.registry.codec import HEADER, SchemaCodec
from streamkit.serde import DecodeError, describe, type_name
from streamkit.settings import ConfigError

try:
    import jsonschema
except ImportError:  # pragma: no cover - the registry extra is not installed
    jsonschema = None  # type: ignore[assignment]

DRAFT = "http://json-schema.org/draft-07/schema#"


class JsonSchema(SchemaCodec):
    schema_type = "JSON"
    format_name = "JSON Schema"

    def __init__(
        self,
        type_: Any = None,
        *,
        schema: str | dict[str, Any] | None = None,
        subject: str | None = None,
        register: bool = True,
    ) -> None:
        if jsonschema is None:
            raise ConfigError(
                "JsonSchema needs the registry extra: pip install 'streamkit[registry]'"
            )
        if type_ is None and schema is None:
            raise ConfigError("JsonSchema(): give a type (JsonSchema(Order)) or a schema=")
        what = type_name(type_) if type_ is not None else "schema"
        super().__init__(subject=subject, register=register, what=what)
        self._adapter: TypeAdapter[Any] | None = None
        if type_ is not None:
            self._adapter = TypeAdapter(type_)
        if schema is None:
            assert self._adapter is not None
            raw: dict[str, Any] = {"$schema": DRAFT, **self._adapter.json_schema()}
        else:
            raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
        self.validator = _validator(raw, what)
        self.text = json.dumps(raw, separators=(",", ":"), sort_keys=True)

    def schema_text(self) -> str:
        return self.text

    def own_writer(self) -> Any:
        return self.validator

    def parse_writer(self, registered: RegisteredSchema) -> Any:
        return _validator(json.loads(registered.schema), f"schema id {registered.id}")

    def write(self, obj: Any) -> bytes:
        if self._adapter is not None:
            return self._adapter.dump_json(obj, warnings=False)
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(obj))
        if error is not None:
            raise ValueError(f"value does not match the JSON schema: {_say(error)}")
        return orjson.dumps(obj)

    def read(self, writer: Any, schema_id: int, data: bytes) -> Any:
        body = data[HEADER:]
        if self._adapter is not None:
            try:
                return self._adapter.validate_json(body)
            except ValidationError as exc:
                raise DecodeError(f"invalid {self.what}: {describe(exc)}") from None
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON after the header: {exc}") from None
        error = jsonschema.exceptions.best_match(writer.iter_errors(value))
        if error is not None:
            raise DecodeError(f"does not match JSON schema id {schema_id}: {_say(error)}")
        return value


def _validator(schema: dict[str, Any], what: str) -> Any:
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ConfigError(f"JsonSchema({what}): not a valid JSON schema: {exc.message}") from None
    return cls(schema)


def _say(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{where.lstrip('.') or 'value'}: {error.message}"
