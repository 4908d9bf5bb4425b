"""Our registry codecs and Confluent's own serializers (confluent-kafka's schema-registry
serdes) read each other's records, through the same real registry: the wire format (magic
byte, schema id, Protobuf's message indexes) and the payloads agree, in all three formats,
keys and values."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, prefix_schema_id_serializer
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.common.protobuf import _create_index_array
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from pydantic import BaseModel

import streamkit as sk
from streamkit.registry import (
    Avro,
    JsonSchema,
    Protobuf,
    RegistryClient,
    SchemaCodec,
    prepare_codecs,
)
from streamkit.serde import DecodeError
from streamkit.settings import ConfigError
from tests.protohelp import F, event_with_timestamp, shop_file, shop_messages


class Reading(BaseModel):
    sensor: str
    value: float
    at: dt.datetime
    tags: list[str] = []
    note: str | None = None


def readings(n: int) -> list[Reading]:
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    return [
        Reading(
            sensor=f"s{i}",
            value=i / 4,
            at=at + dt.timedelta(milliseconds=i),
            tags=["a"] * (i % 3),
            note=None if i % 2 else f"n{i}",
        )
        for i in range(n)
    ]


def their_client(url: str) -> SchemaRegistryClient:
    """Confluent's registry client with a request timeout (its default is none). Its
    serializers (2.16) first ask for the topic's subject associations, a path this Apicurio
    answers 404 in milliseconds, but about one request in a few dozen got no answer at all
    here: without a timeout the test then hung until pytest's 300 s; with one, the client
    sends the request again."""
    return SchemaRegistryClient({"url": url, "timeout": 10})


def topic_with(key: SchemaCodec, value: SchemaCodec, url: str) -> tuple[sk.Topic, str]:
    name = f"interop-{uuid.uuid4().hex[:8]}"
    app = sk.App(f"app-{name}", schema_registry_url=url)
    topic = app.topic(name, key_type=key, value_type=value)
    prepare_codecs([topic], url)
    return topic, name


def contexts(name: str) -> tuple[SerializationContext, SerializationContext]:
    return (
        SerializationContext(name, MessageField.KEY),
        SerializationContext(name, MessageField.VALUE),
    )


def test_avro_records_cross_with_confluents_serializers(schema_registry: str) -> None:
    topic, name = topic_with(Avro(str), Avro(Reading), schema_registry)
    client = their_client(schema_registry)
    key_ctx, value_ctx = contexts(name)
    theirs_key, theirs_value = AvroDeserializer(client), AvroDeserializer(client)
    ours = readings(20)
    for reading in ours:  # ours → theirs
        assert theirs_key(topic.key_codec.encode(reading.sensor), key_ctx) == reading.sensor
        read = theirs_value(topic.value_codec.encode(reading), value_ctx)
        assert Reading.model_validate(read) == reading
    text = topic.value_codec.schema_text()  # type: ignore[attr-defined]
    latest = {"auto.register.schemas": False, "use.latest.version": True}
    serialize = AvroSerializer(client, text, conf=latest)
    serialize_key = AvroSerializer(client, '"string"', conf=latest)
    for reading in ours:  # theirs → ours
        frame = serialize(reading.model_dump(), value_ctx)
        assert frame[:5] == topic.value_codec.encode(reading)[:5]  # the same id
        assert topic.value_codec.decode(frame) == reading
        assert topic.key_codec.decode(serialize_key(reading.sensor, key_ctx)) == reading.sensor


def test_protobuf_records_cross_with_confluents_serializers(schema_registry: str) -> None:
    messages = shop_messages(f"interop{uuid.uuid4().hex[:6]}")
    Key, Order, Total = messages["Key"], messages["Order"], messages["Total"]
    key_codec, value_codec = Protobuf(Key), Protobuf(Order)
    topic, name = topic_with(key_codec, value_codec, schema_registry)
    key_ctx, value_ctx = contexts(name)
    # Confluent's Protobuf deserializer asks the registry for the writer's schema as a
    # base64 descriptor (`?format=serialized`), which Apicurio 3.3.3 answers with raw bytes:
    # given no registry client, it reads the framing (magic byte, id, message indexes) and
    # the message by the declared class.
    conf = {"use.deprecated.format": False}
    theirs_key = ProtobufDeserializer(Key, conf)
    theirs_value = ProtobufDeserializer(Order, conf)
    orders = []
    for i in range(20):
        order = Order(id=i, amount=i * 1.25, color=i % 2, note=f"n{i}" if i % 2 else "")
        order.lines.add(sku=f"sku{i}", qty=i)
        order.tags["t"] = i
        if i % 3 == 0:
            order.card = f"card{i}"
        elif i % 3 == 1:
            order.voucher = i
        orders.append(order)
    for i, order in enumerate(orders):  # ours → theirs
        key = Key(customer=f"c{i}")
        assert theirs_key(topic.key_codec.encode(key), key_ctx) == key
        assert theirs_value(topic.value_codec.encode(order), value_ctx) == order
    # theirs → ours: their framing of the same id with the message indexes they compute (their
    # serializer itself would look the schema up as a base64 descriptor, which Apicurio lacks)
    value_id = topic.value_codec.schema_id  # type: ignore[attr-defined]
    their_id = SchemaId("PROTOBUF", value_id, None, _create_index_array(Order.DESCRIPTOR))
    for order in orders:
        frame = prefix_schema_id_serializer(order.SerializeToString(), value_ctx, their_id)
        assert frame == topic.value_codec.encode(order)  # byte for byte: header, indexes, body
        assert topic.value_codec.decode(frame) == order
    # a message that is not the file's first: the index list [2] (Total), both ways
    total_topic, total_name = topic_with(Protobuf(Key), Protobuf(Total), schema_registry)
    total = Total(id=7, total=3.5)
    ours = total_topic.value_codec.encode(total)
    assert ours[5:7] == b"\x02\x04"  # count 1, index 2 (zigzag varints)
    their_total = ProtobufDeserializer(Total, conf)
    assert _create_index_array(Total.DESCRIPTOR) == [2]
    assert their_total(ours, contexts(total_name)[1]) == total


def test_json_schema_records_cross_with_confluents_serializers(schema_registry: str) -> None:
    typed = JsonSchema(Reading)
    topic, name = topic_with(JsonSchema(str), typed, schema_registry)
    client = their_client(schema_registry)
    key_ctx, value_ctx = contexts(name)
    theirs_value = JSONDeserializer(None, schema_registry_client=client)
    theirs_key = JSONDeserializer(None, schema_registry_client=client)
    ours = readings(20)
    for reading in ours:  # ours → theirs (which validates against the registered schema)
        assert theirs_key(topic.key_codec.encode(reading.sensor), key_ctx) == reading.sensor
        read = theirs_value(topic.value_codec.encode(reading), value_ctx)
        assert Reading.model_validate(read) == reading
    latest = {"auto.register.schemas": False, "use.latest.version": True}
    serialize = JSONSerializer(typed.schema_text(), client, conf=latest)
    for reading in ours:  # theirs → ours
        frame = serialize(reading.model_dump(mode="json"), value_ctx)
        assert frame[:5] == topic.value_codec.encode(reading)[:5]
        assert topic.value_codec.decode(frame) == reading


@pytest.mark.parametrize(
    ("codec", "value"),
    [
        (Avro(schema={"type": "map", "values": "long"}), {"a": 1, "b": -2}),
        (
            JsonSchema(
                schema={
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"],
                }
            ),
            {"n": 5},
        ),
    ],
    ids=["avro-schema-only", "json-schema-only"],
)
def test_a_codec_given_only_a_schema_round_trips_plain_values(
    schema_registry: str, codec: SchemaCodec, value: Any
) -> None:
    topic, _ = topic_with(Avro(str), codec, schema_registry)
    assert topic.value_codec.decode(topic.value_codec.encode(value)) == value


def test_an_untyped_json_schema_codec_checks_records_against_their_writers_schema(
    schema_registry: str,
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    topic, _ = topic_with(JsonSchema(int), JsonSchema(schema=schema), schema_registry)
    header = topic.value_codec.encode({"n": 1})[:5]
    with pytest.raises(DecodeError, match=r"does not match JSON schema id \d+: n: 'x' is not"):
        topic.value_codec.decode(header + b'{"n": "x"}')
    with pytest.raises(DecodeError, match="invalid JSON after the header"):
        topic.value_codec.decode(header + b"{")
    with pytest.raises(ValueError, match="value does not match the JSON schema: value: 'n'"):
        topic.value_codec.encode({"m": 1})  # written records are checked too


def test_a_protobuf_message_importing_a_well_known_type_registers_and_crosses(
    schema_registry: str,
) -> None:
    Event = event_with_timestamp(f"wkt{uuid.uuid4().hex[:6]}")
    topic, name = topic_with(Avro(str), Protobuf(Event), schema_registry)
    assert 'import "google/protobuf/timestamp.proto";' in topic.value_codec.schema_text()  # type: ignore[attr-defined]
    event = Event(n=3)
    event.at.seconds = 1_700_000_000
    frame = topic.value_codec.encode(event)
    assert topic.value_codec.decode(frame) == event
    theirs = ProtobufDeserializer(Event, {"use.deprecated.format": False})
    assert theirs(frame, contexts(name)[1]) == event


def test_a_protobuf_record_of_a_newer_version_reads_into_the_declared_message(
    schema_registry: str,
) -> None:
    package = f"evo{uuid.uuid4().hex[:6]}"
    subject = f"{package}-value"
    old = shop_messages(package)["Order"]
    newer_file = shop_file(package)
    newer_file.message_type[1].field.add(
        name="channel", number=9, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="channel"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(newer_file)
    # Any: types-protobuf 7.35.1.20261122 gives generated classes `Message`'s bare __init__
    newer: Any = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Order"))
    client = RegistryClient(schema_registry)
    reader, writer = Protobuf(old, subject=subject), Protobuf(newer, subject=subject)
    assert reader.prepare(client) != writer.prepare(client)  # two versions, two ids
    frame = writer.encode(newer(id=5, amount=2.5, channel="web"))
    decoded = reader.decode(frame)
    assert isinstance(decoded, old)
    assert (decoded.id, decoded.amount) == (5, 2.5)
    # the field the reader does not know is kept (unknown fields), so passing it on loses nothing
    again: Any = newer.FromString(decoded.SerializeToString())
    assert again.channel == "web"


@pytest.mark.parametrize(
    "message",
    [descriptor_pb2.FileDescriptorProto, struct_pb2.Struct, any_pb2.Any],
    ids=["descriptor.proto (proto2: nesting, enums, options)", "struct.proto (map, oneof)", "any"],
)
def test_the_proto_source_rendered_from_protobufs_own_files_registers_and_round_trips(
    schema_registry: str, message: Any
) -> None:
    codec = Protobuf(message, subject=f"render-{uuid.uuid4().hex[:8]}")
    codec.prepare(RegistryClient(schema_registry))  # the registry parses the rendered source
    value = message()
    if message is struct_pb2.Struct:
        value.update({"a": 1.5, "b": [True, None, "x"], "c": {"d": "e"}})
    elif message is any_pb2.Any:
        value.Pack(struct_pb2.Value(string_value="packed"))
    else:
        value.name, value.package = "x.proto", "x"
        value.message_type.add(name="M").field.add(name="f", number=1)
    assert codec.decode(codec.encode(value)) == value


def test_a_protobuf_editions_file_asks_for_its_source() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="ed.proto", package="ed")
    file.syntax = "editions"
    file.edition = descriptor_pb2.EDITION_2023
    file.message_type.add(name="M").field.add(
        name="n", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL, json_name="n"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    message = message_factory.GetMessageClass(pool.FindMessageTypeByName("ed.M"))
    with pytest.raises(ConfigError, match=r"editions.*pass its \.proto source as schema="):
        Protobuf(message)
    assert Protobuf(message, schema='edition = "2023";\npackage ed;\nmessage M { int32 n = 1; }\n')
