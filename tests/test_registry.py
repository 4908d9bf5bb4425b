"""Schema Registry codecs against a real registry (the `schema_registry` fixture: Apicurio, or
STREAMKIT_SCHEMA_REGISTRY_URL) and the broker: keys and values round-trip through a worker in
the wire format, a schema the registry refuses fails the start with its message, and every
kind of undecodable record reaches the dead-letter topic with a precise reason."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import streamkit as sk
from streamkit.localkafka import free_ports
from streamkit.records_commands import describe_record, read
from streamkit.registry import (
    Avro,
    JsonSchema,
    Protobuf,
    RegistryClient,
    RegistryUnavailable,
    SchemaCodec,
    avro_schema,
    prepare_codecs,
)
from streamkit.registry import codec as codec_module
from streamkit.registry.codec import check_state_codecs
from streamkit.runtime.dlq import describe
from streamkit.runtime.worker import Worker
from streamkit.settings import ConfigError
from tests.badinput import Made, run_task
from tests.kafkahelp import (
    committed,
    create_topic,
    end_offsets,
    produce,
    read_all,
    running,
    wait_until,
)
from tests.protohelp import shop_messages


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
    uid: str, url: str, workdir: Path, key: Any, value: Any, out_value: Any, total: Any
) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """in (key, value) → an agent → out (the same key, `total(order)`), exactly-once."""
    app = sk.App(
        f"reg-{uid}",
        schema_registry_url=url,
        workdir=workdir,
        processing_guarantee="exactly_once",
    )
    src = app.topic(f"reg-in-{uid}", key_type=key, value_type=value, partitions=1)
    out = app.topic(f"reg-out-{uid}", key_type=key, value_type=out_value, partitions=2)

    @app.agent(src, sink=out)
    async def totals(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for order in stream:
            yield total(order)

    return app, src, out


async def run_to_the_end(app: sk.App, topic: str) -> None:
    async with running(app):
        ends = await end_offsets(topic)

        async def all_committed() -> bool:
            return await committed(app.id, topic) == ends

        await wait_until(all_committed, within=60, what="every input offset committed")


async def check_round_trip_and_dlq(
    app: sk.App,
    src: sk.Topic,
    out: sk.Topic,
    pairs: list[tuple[Any, Any]],
    expected: list[tuple[Any, Any]],
    bad: dict[str, tuple[bytes | None, bytes]],
    fresh: tuple[Any, Any],
) -> None:
    """Produce the good (key, value) pairs through the codecs, then the bad records (reason →
    raw key or None for a good one, raw value); run a worker to the end; the outputs decode to
    `expected` and each bad record is a dead letter, its bytes intact, with its reason; a new
    app with `fresh` (unprepared) codecs for `out`, as `streamkit tail` loads it, reads it."""
    keys = [src.key_codec.encode(k) for k, _ in pairs]
    values = [src.value_codec.encode(v) for _, v in pairs]
    for key, value in bad.values():
        keys.append(keys[0] if key is None else key)
        values.append(value)
    await produce(src.name, values, keys=keys, partition=0)
    await run_to_the_end(app, src.name)
    outputs = [
        (out.key_codec.decode(r.key), out.value_codec.decode(r.value))
        for r in await read_all(out.name)
    ]
    assert sorted(outputs, key=repr) == sorted(expected, key=repr)
    dead = await read_all(app.dlq.name)
    by_offset = {int(describe(r.headers)["streamkit.source.offset"]): r for r in dead}
    assert len(dead) == len(bad)
    for offset, (reason, (_key, value)) in enumerate(bad.items(), start=len(pairs)):
        record = by_offset[offset]
        assert reason in describe(record.headers)["streamkit.error"], reason
        assert record.value == value  # the bytes as they came
    # `streamkit tail` of the output: a fresh app (as the CLI loads it) decodes the records
    # with schemas fetched by id, registering nothing
    tool = sk.App(app.id, schema_registry_url=app.settings.schema_registry_url)
    tool.topic(out.name, key_type=fresh[0], value_type=fresh[1])
    records = read(tool, out.name, from_beginning=True, follow=False)
    shown = [describe_record(tool, r) async for r in records]
    assert sorted(((row["key"], row["value"]) for row in shown), key=repr) == sorted(
        expected, key=repr
    )


async def test_avro_keys_and_values_round_trip_and_bad_records_go_to_the_dlq(
    schema_registry: str, uid: str, workdir: Path
) -> None:
    app, src, out = registry_app(
        uid, schema_registry, workdir, Avro(str), Avro(Order), Avro(Total),
        lambda o: Total(id=o.id, total=o.amount * 2),
    )  # fmt: skip
    await create_topic(src.name, 1)
    await asyncio.to_thread(prepare_codecs, [src, out], schema_registry)
    good = orders(40)
    client = RegistryClient(schema_registry)
    json_id = client.register(
        f"reg-other-{uid}", '{"type": "object", "properties": {"a": {"type": "string"}}}', "JSON"
    )
    other = '{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}'
    other_id = client.register(f"reg-other-avro-{uid}", other, "AVRO")
    header = src.value_codec.encode(good[0])[:5]
    bad: dict[str, tuple[bytes | None, bytes]] = {
        "the writer's record Other does not resolve to the declared record Order": (
            None,
            b"\0" + other_id.to_bytes(4, "big") + b"\x02",
        ),
        "magic byte 0x7b, expected 0x00": (None, b'{"id": 1}'),
        "fewer than the 5-byte header": (None, b"\0\0\1"),
        "unknown schema id 999999": (None, b"\0" + (999999).to_bytes(4, "big") + b"\2"),
        f"schema id {json_id} is registered as JSON, not AVRO": (
            None,
            b"\0" + json_id.to_bytes(4, "big") + b"{}",
        ),
        "bytes do not match Avro schema id": (None, header + b"\x02"),  # truncated record
        "left over after the record": (None, src.value_codec.encode(good[1]) + b"\0\0"),
        "key: not in the schema registry's wire format": (
            b"plain",
            src.value_codec.encode(good[2]),
        ),
    }
    pairs = [(f"k{o.id % 7}", o) for o in good]
    expected = [(k, Total(id=o.id, total=o.amount * 2)) for k, o in pairs]
    fresh = (Avro(str), Avro(Total))
    await check_round_trip_and_dlq(app, src, out, pairs, expected, bad, fresh)


async def test_avro_values_cross_a_key_by_through_their_own_subject(
    schema_registry: str, uid: str, workdir: Path
) -> None:
    """The repartition topic of a key_by after an Avro topic carries Avro too, its schema
    registered under `{repartition topic}-value` at start."""
    app = sk.App(f"reg-kb-{uid}", schema_registry_url=schema_registry, workdir=workdir)
    src = app.topic(f"reg-kb-in-{uid}", value_type=Avro(Order), partitions=1)
    out = app.topic(f"reg-kb-out-{uid}", value_type=Avro(Total), partitions=1)
    by_color = app.stream(src).key_by(lambda o: o.color.value, partitions=2, name="by-color")
    by_color.map(lambda o: Total(id=o.id, total=o.amount)).to(out)
    await create_topic(src.name, 1)
    await asyncio.to_thread(prepare_codecs, [src, out], schema_registry)
    good = orders(20)
    await produce(src.name, [src.value_codec.encode(o) for o in good], partition=0)
    async with running(app):
        totals = await read_all(out.name, expect=len(good), within=60)
    assert sorted(
        ((r.key.decode(), out.value_codec.decode(r.value)) for r in totals), key=repr
    ) == sorted(((o.color.value, Total(id=o.id, total=o.amount)) for o in good), key=repr)
    subjects = RegistryClient(schema_registry).subjects()
    assert f"{app.id}-by-color-repartition-value" in subjects


async def test_an_output_with_another_key_codec_gets_the_key_encoded_with_its_own(
    schema_registry: str, uid: str, workdir: Path
) -> None:
    """Avro keys in, text keys out (an agent's yield and a `to()`): the output keys are the
    keys encoded with the output topics' codecs, not the input's Avro frames passed on."""
    app = sk.App(f"reg-rekey-{uid}", schema_registry_url=schema_registry, workdir=workdir)
    src = app.topic(f"reg-rekey-in-{uid}", key_type=Avro(str), value_type=Avro(Order))
    by_agent = app.topic(f"reg-rekey-agent-{uid}", partitions=1)  # str keys, JSON values
    by_to = app.topic(f"reg-rekey-to-{uid}", key_type=bytes, partitions=1)
    same = app.topic(f"reg-rekey-same-{uid}", key_type=Avro(str), partitions=1)

    @app.agent(src, sink=[by_agent, same])
    async def ids(stream: sk.Stream[Order]) -> AsyncIterator[int]:
        async for order in stream:
            yield order.id

    app.stream(src).map(lambda o: o.id).to(by_to)
    await create_topic(src.name, 1)
    await asyncio.to_thread(prepare_codecs, [src], schema_registry)
    good = orders(10)
    keys = [src.encode_key(f"k{o.id}") for o in good]
    await produce(src.name, [src.value_codec.encode(o) for o in good], keys=keys, partition=0)
    async with running(app):
        agent_out = await read_all(by_agent.name, expect=len(good), within=60)
        to_out = await read_all(by_to.name, expect=len(good), within=60)
        same_out = await read_all(same.name, expect=len(good), within=60)
    want = sorted(f"k{o.id}".encode() for o in good)
    assert sorted(r.key for r in agent_out) == want
    assert sorted(r.key for r in to_out) == want
    assert sorted(same.key_codec.decode(r.key) for r in same_out) == sorted(
        w.decode() for w in want
    )


async def test_protobuf_keys_and_values_round_trip_and_bad_records_go_to_the_dlq(
    schema_registry: str, uid: str, workdir: Path
) -> None:
    messages = shop_messages(f"reg{uid}")
    Key, Order, Total = messages["Key"], messages["Order"], messages["Total"]
    app, src, out = registry_app(
        uid, schema_registry, workdir, Protobuf(Key), Protobuf(Order), Protobuf(Total),
        lambda o: Total(id=o.id, total=o.amount * 2 + sum(line.qty for line in o.lines)),
    )  # fmt: skip
    await create_topic(src.name, 1)
    await asyncio.to_thread(prepare_codecs, [src, out], schema_registry)
    pairs = []
    for i in range(30):
        order = Order(id=i, amount=i / 2, color=i % 2, card=f"c{i}")
        order.lines.add(sku="x", qty=i % 4)
        order.tags["t"] = i
        pairs.append((Key(customer=f"k{i % 5}"), order))
    avro_id = RegistryClient(schema_registry).register(f"reg-avro-{uid}", '"string"', "AVRO")
    header = src.value_codec.encode(pairs[0][1])[:5]  # id; Order's index list is b"\x02\x02"
    bad: dict[str, tuple[bytes | None, bytes]] = {
        f"message indexes [2] name another message than reg{uid}.Order": (
            None,
            header + b"\x02\x04" + pairs[1][1].SerializeToString(),
        ),
        "no valid message-index list after the header": (None, header + b"\x80"),
        "bytes do not match Protobuf schema id": (None, header + b"\x02\x02\xff\xff\xff"),
        f"schema id {avro_id} is registered as AVRO, not PROTOBUF": (
            None,
            b"\0" + avro_id.to_bytes(4, "big") + b"\0",
        ),
        "key: not in the schema registry's wire format": (
            b"k",
            src.value_codec.encode(pairs[2][1]),
        ),
    }
    expected = [(k, Total(id=o.id, total=o.amount * 2 + o.lines[0].qty)) for k, o in pairs]
    fresh = (Protobuf(Key), Protobuf(Total))
    await check_round_trip_and_dlq(app, src, out, pairs, expected, bad, fresh)


async def test_json_schema_keys_and_values_round_trip_and_bad_records_go_to_the_dlq(
    schema_registry: str, uid: str, workdir: Path
) -> None:
    app, src, out = registry_app(
        uid, schema_registry, workdir, JsonSchema(int), JsonSchema(Order), JsonSchema(Total),
        lambda o: Total(id=o.id, total=o.amount * 2),
    )  # fmt: skip
    await create_topic(src.name, 1)
    await asyncio.to_thread(prepare_codecs, [src, out], schema_registry)
    good = orders(30)
    header = src.value_codec.encode(good[0])[:5]
    bad: dict[str, tuple[bytes | None, bytes]] = {
        "invalid Order: id: Input should be a valid integer": (
            None,
            header + b'{"id": "x", "amount": 1, "at": "2026-01-01T00:00:00Z"}',
        ),
        "invalid Order: value: Invalid JSON": (None, header + b"{not json"),
        "magic byte 0x7b, expected 0x00": (None, b'{"id": 1}'),
        "key: invalid int: value: Input should be a valid integer": (
            src.key_codec.encode(0)[:5] + b'"seven"',
            src.value_codec.encode(good[1]),
        ),
    }
    pairs = [(o.id % 6, o) for o in good]
    expected = [(k, Total(id=o.id, total=o.amount * 2)) for k, o in pairs]
    fresh = (JsonSchema(int), JsonSchema(Total))
    await check_round_trip_and_dlq(app, src, out, pairs, expected, bad, fresh)


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
    # a record written with version 1 is read through schema resolution: the default fills in
    old = Avro(Reading, subject=f"{topic}-value")
    old.prepare(client)
    assert codec.decode(old.encode(Reading(sensor="s", value=1.5))) == Extended(
        sensor="s", value=1.5, unit="C"
    )


async def test_without_a_registry_url_a_registry_topic_fails_at_start(uid: str) -> None:
    app = sk.App(f"reg-nourl-{uid}")
    topic = app.topic(f"reg-nourl-{uid}", value_type=Avro(Total))
    with pytest.raises(ConfigError, match="set schema_registry_url"):
        prepare_codecs([topic], None)


def test_a_registry_codec_on_a_table_is_refused_unless_it_is_its_topics(uid: str) -> None:
    app = sk.App(f"reg-table-{uid}", schema_registry_url="http://127.0.0.1:9/x")
    totals = app.topic(f"reg-table-{uid}", value_type=Avro(Total))
    app.table("by-source", source=totals)  # shares the topic's codec: fine
    check_state_codecs(app)
    app.table("own", value_type=Avro(Total))
    with pytest.raises(ConfigError, match=r"table own: value_type Avro\(Total\) is for topics"):
        check_state_codecs(app)


def test_an_unreachable_registry_at_start_is_tried_again_then_fails_the_start(
    uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec_module, "START_RETRIES", (0.01, 0.01))
    url = f"http://127.0.0.1:{free_ports(1)[0]}/apis/ccompat/v7"  # nobody listens
    app = sk.App(f"reg-start-{uid}", schema_registry_url=url)
    topic = app.topic(f"reg-start-{uid}", value_type=Avro(Total))
    with pytest.raises(ConfigError, match=r"unreachable.*check schema_registry_url"):
        prepare_codecs([topic], url)


def test_the_start_steps_read_the_same_in_the_code_and_in_the_docs() -> None:
    def steps(text: str) -> str:
        start = text.index("1. every topic's")
        return " ".join(text[start : text.index("the codec writes.", start)].split())

    docs = (Path(__file__).resolve().parent.parent / "docs" / "registry.md").read_text()
    assert codec_module.__doc__ is not None
    assert steps(codec_module.__doc__) == steps(docs)


def test_a_lookup_of_an_unregistered_schema_says_so(schema_registry: str) -> None:
    codec = Avro(Total, subject=f"reg-none-{uuid.uuid4().hex[:8]}", register=False)
    with pytest.raises(ConfigError, match=r"HTTP 404.*register it, or declare register=True"):
        codec.prepare(RegistryClient(schema_registry))


async def test_an_unreachable_registry_stops_the_task_and_dead_letters_nothing(
    schema_registry: str, uid: str
) -> None:
    """A record whose schema id is new while the registry is down is not the record's fault:
    the task fails (the worker stops; the next owner reads the record again), no dead letter."""
    app = sk.App(f"reg-down-{uid}", schema_registry_url=schema_registry)
    src = app.topic(f"reg-down-{uid}", value_type=Avro(Total))
    out = app.topic(f"reg-down-out-{uid}")

    @app.agent(src, sink=out)
    async def ids(stream: sk.Stream[Total]) -> AsyncIterator[int]:
        async for total in stream:
            yield total.id

    prepare_codecs([src], schema_registry)
    codec = src.value_codec
    assert isinstance(codec, SchemaCodec)
    codec.client = RegistryClient(f"http://127.0.0.1:{free_ports(1)[0]}")  # nobody listens
    good = codec.encode(Total(id=1, total=2.0))
    made = [
        Made("valid", None, good),
        Made("new-id", None, b"\0" + (424242).to_bytes(4, "big") + good[5:], good=False),
    ]
    task, collector = await run_task(app, src, made, event_time=False)
    try:
        assert task.runner is not None and task.runner.done()
        with pytest.raises(RegistryUnavailable, match="unreachable"):
            task.runner.result()
        assert task.committable == 1  # the good record only
        assert not [r for r in collector.records if r.topic == app.dlq.name]
    finally:
        await task.close(1.0)


def test_the_testing_kit_registers_the_codecs_and_runs_them(schema_registry: str, uid: str) -> None:
    from streamkit.testing import TestDriver

    app = sk.App(f"reg-kit-{uid}", schema_registry_url=schema_registry)
    src = app.topic(f"reg-kit-in-{uid}", key_type=Avro(str), value_type=Avro(Order))
    out = app.topic(f"reg-kit-out-{uid}", value_type=JsonSchema(Total))

    @app.agent(src, sink=out)
    async def totals(stream: sk.Stream[Order]) -> AsyncIterator[Total]:
        async for order in stream:
            yield Total(id=order.id, total=order.amount * 2)

    good = orders(5)
    with TestDriver(app) as driver:
        for order in good:
            driver.send(src, order, key=f"k{order.id}")
        driver.send_raw(src, b"not avro", key=src.key_codec.encode("bad"))  # to the DLQ
        assert driver.read_values(out) == [Total(id=o.id, total=o.amount * 2) for o in good]
        (dead,) = driver.read(app.dlq)
        assert "magic byte 0x6e, expected 0x00" in (dead.header("streamkit.error") or b"").decode()


def test_streamkit_runs_without_the_registry_extra() -> None:
    """fastavro, protobuf and jsonschema are the `registry` extra: without them streamkit
    imports, and declaring a registry codec says what to install."""
    script = (
        "import sys\n"
        "for name in ('fastavro', 'google', 'google.protobuf', 'jsonschema'):\n"
        "    sys.modules[name] = None  # import fails, as when not installed\n"
        "import streamkit.cli, streamkit.runtime.worker, streamkit.testing\n"
        "from streamkit.registry import Avro, JsonSchema, Protobuf\n"
        "for codec in (Avro, JsonSchema, Protobuf):\n"
        "    try:\n"
        "        codec(int)\n"
        "    except Exception as exc:\n"
        "        print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{name} needs the registry extra: pip install 'streamkit[registry]'"
        for name in ("Avro", "JsonSchema", "Protobuf")
    ]


def test_a_value_that_does_not_fit_its_schema_is_refused_when_written(
    schema_registry: str, uid: str
) -> None:
    app = sk.App(f"reg-write-{uid}", schema_registry_url=schema_registry)
    topic = app.topic(f"reg-write-{uid}", value_type=Avro(Total))
    prepare_codecs([topic], schema_registry)
    with pytest.raises(ValueError, match=r"value: dict value does not fit Avro schema Total: no"):
        topic.encode_value({"id": 1})
    with pytest.raises(ValueError, match="an integer is required on field id"):
        topic.encode_value({"id": "x", "total": 1.0})
