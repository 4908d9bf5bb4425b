"""Schema Registry codecs: Avro, Protobuf and JSON Schema keys and values in the Confluent wire
format, their schemas registered (or looked up) at start in a Confluent-compatible registry
(`schema_registry_url`). See docs/registry.md.

    from streamkit.registry import Avro, JsonSchema, Protobuf
    orders = app.topic("orders", value_type=Avro(Order), key_type=Avro(str))
    clicks = app.topic("clicks", value_type=Protobuf(Click))  # a generated message class
    events = app.topic("events", value_type=JsonSchema(Event))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamkit.registry.avro_schema import avro_schema
from streamkit.registry.client import RegistryClient, RegistryError, RegistryUnavailable
from streamkit.registry.codec import SchemaCodec, prepare_codecs

if TYPE_CHECKING:
    from streamkit.registry.avro import Avro
    from streamkit.registry.json_schema import JsonSchema
    from streamkit.registry.protobuf import Protobuf

# the formats are imported on first use: a worker that uses none of them does not load
# fastavro, jsonschema and protobuf (~80 ms of every process start)
_WHERE = {"Avro": "avro", "JsonSchema": "json_schema", "Protobuf": "protobuf"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "Avro",
    "JsonSchema",
    "Protobuf",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaCodec",
    "avro_schema",
    "prepare_codecs",
]
