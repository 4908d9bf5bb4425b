"""Schema Registry codecs: Avro, Protobuf and JSON Schema keys and values in the Confluent wire
format, their schemas registered (or looked up) at start in a Confluent-compatible registry
(`schema_registry_url`). See docs/registry.md.

    from streamkit.registry import Avro, JsonSchema, Protobuf
    orders = app.topic("orders", value_type=Avro(Order), key_type=Avro(str))
    clicks = app.topic("clicks", value_type=Protobuf(Click))  # a generated message class
    events = app.topic("events", value_type=JsonSchema(Event))
"""

from streamkit.registry.avro import Avro
from streamkit.registry.avro_schema import avro_schema
from streamkit.registry.client import RegistryClient, RegistryError, RegistryUnavailable
from streamkit.registry.codec import SchemaCodec, prepare_codecs
from streamkit.registry.json_schema import JsonSchema
from streamkit.registry.protobuf import Protobuf

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
