"""Schema Registry codecs against a real registry (the `schema_registry` fixture: Apicurio, or
STREAMKIT_SCHEMA_REGISTRY_URL) and the broker: keys and values round-trip through a worker in
the wire format, a schema the registry refuses fails the start with its message, and every
kind of undecodable record reaches the dead-letter topic with a precise reason."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import streamkit as sk
from streamkit.registry import Avro, RegistryClient, avro_schema, prepare_codecs
from streamkit.runtime.dlq import describe
from streamkit.runtime.worker import Worker
from streamkit.settings import ConfigError
from tests.kafkahelp import (
    committed,
    create_topic,
    end_offsets,
    produce,
    read_all,
    running,
    wait_until,
)


class Color(enum.StrEnum):
    red = "red"
    blue = "blue"


class Line(BaseModel):
    sku: str
    qty: int = 1


class Order(BaseModel):
    id: int
    amount: float
    at: dt.datetime
    color: Color = Color.red
    lines: list[Line] = []
    note: str | None = None


class Total(BaseModel):
    id: int
    total: float


def orders(n: int) -> list[Order]:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return [
        Order(
            id=i,
            amount=i * 1.5,
            at=start + dt.timedelta(seconds=i),
            color=Color.blue if i % 2 else Color.red,
            lines=[Line(sku=f"s{i}", qty=i % 3 + 1)] if i % 3 else [],
            note=None if i % 4 else f"note {i}",
        )
        for i in range(n)
    ]


def registry_app(
    uid: str, url: str, workdir: Path, key: Any, value: Any, out_value: Any
) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App(
        f"reg-{uid}",
        schema_registry_url=url,
        workdir=workdir,
        processing_guarantee="exactly_once",
    )
    src = app.topic(f"reg-in-{uid}", key_type=key, value_type=value, partitions=1)
    out = app.topic(f"reg-out-{uid}", key_type=key, value_type=out_value, partitions=2)

    @app.agent(src, sink=out)
    async def total(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for order in stream:
            yield Total(id=order.id, total=order.amount * 2)

    return app, src, out


async def run_to_the_end(app: sk.App, topic: str) -> None:
    async with running(app):
        ends = await end_offsets(topic)

        async def all_committed() -> bool:
            return await committed(app.id, topic) == ends

        await wait_until(all_committed, within=60, what="every input offset committed")


async def test_avro_keys_and_values_round_trip_and_bad_records_go_to_the_dlq(
    schema_registry: str, uid: str, workdir: Path
) -> None:
    app, src, out = registry_app(uid, schema_registry, workdir, Avro(str), Avro(Order), Avro(Total))
    await create_topic(src.name, 1)
    await asyncio.to_thread(prepare_codecs, [src, out], schema_registry)
    good = orders(40)
    client = RegistryClient(schema_registry)
    json_id = client.register(
        f"reg-other-{uid}", '{"type": "object", "properties": {"a": {"type": "string"}}}', "JSON"
    )
    header = src.value_codec.encode(good[0])[:5]
    bad: dict[str, tuple[bytes, bytes]] = {  # the reason each must carry → (key, value)
        "magic byte 0x7b, expected 0x00": (b"", b'{"id": 1}'),
        "fewer than the 5-byte header": (b"", b"\0\0\1"),
        "unknown schema id 999999": (b"", b"\0" + (999999).to_bytes(4, "big") + b"\2"),
        f"schema id {json_id} is a JSON schema, not AVRO": (
            b"",
            b"\0" + json_id.to_bytes(4, "big") + b"{}",
        ),
        "bytes do not match Avro schema id": (b"", header + b"\x02"),  # truncated record
        "left over after the record": (b"", src.value_codec.encode(good[1]) + b"\0\0"),
        "key: not in the schema registry's wire format": (
            b"plain",
            src.value_codec.encode(good[2]),
        ),
    }
    keys = [src.key_codec.encode(f"k{o.id % 7}") for o in good]
    values = [src.value_codec.encode(o) for o in good]
    for key, value in bad.values():
        keys.append(key or keys[0])
        values.append(value)
    await produce(src.name, values, keys=keys, partition=0)
    await run_to_the_end(app, src.name)

    totals = await read_all(out.name)
    decoded = [(out.key_codec.decode(r.key), out.value_codec.decode(r.value)) for r in totals]
    assert sorted(decoded, key=lambda kv: kv[1].id) == [
        (f"k{o.id % 7}", Total(id=o.id, total=o.amount * 2)) for o in good
    ]
    dead = await read_all(app.dlq.name)
    reasons = {int(describe(r.headers)["streamkit.source.offset"]): r for r in dead}
    assert len(dead) == len(bad)
    for offset, (expected, (_key, value)) in enumerate(bad.items(), start=len(good)):
        record = reasons[offset]
        assert expected in describe(record.headers)["streamkit.error"], expected
        assert record.value == value  # the bytes as they came


async def test_an_incompatible_schema_fails_the_start_with_the_registrys_message(
    schema_registry: str, uid: str, workdir: Path
) -> None:
    class Reading(BaseModel):
        sensor: str
        value: float

    class Renamed(BaseModel):  # incompatible (BACKWARD): a new field with no default
        sensor: str
        celsius: float

    client = RegistryClient(schema_registry)
    topic = f"reg-compat-{uid}"
    client.register(f"{topic}-value", Avro(Reading).schema_text(), "AVRO")
    client.set_compatibility(f"{topic}-value", "BACKWARD")
    app = sk.App(f"reg-compat-{uid}", schema_registry_url=schema_registry, workdir=workdir)
    renamed = avro_schema(Renamed) | {"name": "Reading"}  # the same record, another field
    readings = app.topic(topic, value_type=Avro(Renamed, schema=renamed))

    @app.agent(readings)
    async def read(stream: sk.Stream[Renamed]) -> None:
        async for _ in stream:
            pass

    with pytest.raises(ConfigError) as refused:
        await asyncio.wait_for(Worker(app).run(install_signal_handlers=False), 60)
    text = str(refused.value)
    assert f"topic {topic}: value Avro schema Renamed" in text
    assert f"subject {topic}-value (HTTP 409)" in text
    assert "Incompatible" in text  # the registry's own words
    assert "celsius" in text

    # a compatible change (a new field with a default) registers a second version
    class Extended(BaseModel):
        sensor: str
        value: float
        unit: str = "C"

    extended = avro_schema(Extended) | {"name": "Reading"}
    codec = Avro(Extended, schema=extended, subject=f"{topic}-value")
    first = client.lookup(f"{topic}-value", Avro(Reading).schema_text(), "AVRO")
    assert codec.prepare(client) != first


async def test_without_a_registry_url_a_registry_topic_fails_at_start(uid: str) -> None:
    app = sk.App(f"reg-nourl-{uid}")
    topic = app.topic(f"reg-nourl-{uid}", value_type=Avro(Total))
    with pytest.raises(ConfigError, match="set schema_registry_url"):
        prepare_codecs([topic], None)


def test_a_lookup_of_an_unregistered_schema_says_so(schema_registry: str) -> None:
    codec = Avro(Total, subject=f"reg-none-{uuid.uuid4().hex[:8]}", register=False)
    with pytest.raises(ConfigError, match=r"HTTP 404.*register it, or declare register=True"):
        codec.prepare(RegistryClient(schema_registry))
