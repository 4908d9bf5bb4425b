"""Declared types: whatever pydantic can validate is validated on decode and encoded through the
same adapter; a type it cannot validate is refused at declaration; keys are str unless declared.
Broker-free, except the last test (a real worker and broker: invalid values in the DLQ)."""

from __future__ import annotations

import datetime
import enum
import sys
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired

import orjson
import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict  # typing.TypedDict: pydantic needs 3.12+

import streamkit as sk
from streamkit.runtime.dlq import describe
from streamkit.serde import (
    JSON,
    RAW,
    STR,
    DecodeError,
    ModelCodec,
    TypedCodec,
    codec_for,
    decode_problem,
)
from tests.badinput import Made, consumer_record, run_task
from tests.kafkahelp import committed, produce, read_all, running

# -- the declared types --------------------------------------------------------------------------


@dataclass
class Line:
    sku: str
    qty: int


@dataclass
class Order:
    id: int
    amount: float
    lines: list[Line] = field(default_factory=list)


class Click(TypedDict):
    user: str
    page: str
    ms: NotRequired[int]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    city: str
    zip: str


class Customer(BaseModel):
    name: str
    addresses: list[Address]
    favourite: Color | None = None


@dataclass
class Receipt:
    order: int
    key: str
    total: float


class Opaque:
    """A plain class: pydantic has no schema for it."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


def decode(declared: Any, data: bytes) -> Any:
    return codec_for(declared).decode(data)


def refusal(declared: Any) -> str:
    """The ConfigError message for a topic declared with `declared` as its value type."""
    with pytest.raises(sk.ConfigError) as caught:
        sk.App("types").topic("t", value_type=declared)
    return str(caught.value)


# -- validated on decode -------------------------------------------------------------------------


def test_a_dataclass_value_is_validated_and_nonsense_is_a_decode_error() -> None:
    codec = codec_for(Order)
    assert isinstance(codec, TypedCodec)
    got = codec.decode(b'{"id": 7, "amount": "2.5", "lines": [{"sku": "a", "qty": 2}]}')
    assert got == Order(7, 2.5, [Line("a", 2)])
    assert isinstance(got.lines[0], Line)  # nested dataclasses are built too, not left dicts
    with pytest.raises(DecodeError) as caught:
        codec.decode(b'{"nonsense": true}')
    assert str(caught.value) == "invalid Order: id: Field required; amount: Field required"


def test_a_typeddict_value_is_validated() -> None:
    assert decode(Click, b'{"user": "u1", "page": "/"}') == {"user": "u1", "page": "/"}
    assert decode(Click, b'{"user": "u1", "page": "/", "ms": 5}')["ms"] == 5
    with pytest.raises(DecodeError, match=r"invalid Click: page: Field required"):
        decode(Click, b'{"user": "u1"}')
    with pytest.raises(DecodeError, match=r"invalid Click: ms: Input should be a valid integer"):
        decode(Click, b'{"user": "u1", "page": "/", "ms": "soon"}')


def test_containers_unions_and_scalars_are_validated() -> None:
    assert decode(list[int], b"[1, 2, 3]") == [1, 2, 3]
    with pytest.raises(DecodeError, match=r"invalid list\[int\]: \[1\]: Input should be a valid"):
        decode(list[int], b'[1, "two", 3]')
    with pytest.raises(DecodeError, match=r"invalid list\[int\]: value: Input should be a valid"):
        decode(list[int], b'{"a": 1}')
    assert decode(dict[str, float], b'{"a": 1, "b": 2.5}') == {"a": 1.0, "b": 2.5}
    with pytest.raises(DecodeError, match=r"invalid dict\[str, float\]: b: Input should be"):
        decode(dict[str, float], b'{"a": 1, "b": "x"}')
    assert decode(int | str, b'"x"') == "x"
    with pytest.raises(DecodeError, match=r"invalid int \| str"):
        decode(int | str, b"[]")
    assert decode(int, b"42") == 42
    with pytest.raises(DecodeError, match=r"invalid int: value: Input should be a valid integer"):
        decode(int, b"4.5")
    assert decode(float, b"1") == 1.0
    when = decode(datetime.datetime, b'"2026-11-30T12:00:00Z"')
    assert when == datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)
    with pytest.raises(DecodeError, match=r"invalid datetime"):
        decode(datetime.datetime, b'"yesterday"')
    assert decode(Color, b'"red"') is Color.RED
    assert decode(Literal["a", "b"], b'"b"') == "b"
    assert decode(dict, b'{"a": 1}') == {"a": 1}
    with pytest.raises(DecodeError, match=r"invalid dict: value: Input should be an object"):
        decode(dict, b"[1]")  # a bare dict is validated too: a JSON object


def test_a_nested_model_is_validated_down_to_the_leaf() -> None:
    good = b'{"name": "A", "addresses": [{"city": "X", "zip": "1"}], "favourite": "blue"}'
    customer = decode(Customer, good)
    assert isinstance(customer.addresses[0], Address) and customer.favourite is Color.BLUE
    assert isinstance(codec_for(Customer), ModelCodec)  # models keep their own fast path
    bad = b'{"name": "A", "addresses": [{"city": "X", "zip": "1"}, {"city": 5}], "favourite": 3}'
    with pytest.raises(DecodeError) as caught:
        decode(Customer, bad)
    message = str(caught.value)
    assert message.startswith("invalid Customer: ")
    assert "addresses[1].city: Input should be a valid string (got 5)" in message
    assert "addresses[1].zip: Field required" in message
    assert "favourite: Input should be 'red' or 'blue' (got 3)" in message


def test_decode_messages_stay_short_and_say_how_many_more() -> None:
    many = orjson.dumps(["x"] * 9)
    with pytest.raises(DecodeError) as caught:
        decode(list[int], many)
    message = str(caught.value)
    assert message.count("Input should be a valid integer") == 5 and message.endswith("and 4 more")
    long = orjson.dumps({"id": "y" * 500, "amount": 1})
    with pytest.raises(DecodeError) as caught:
        decode(Order, long)
    assert len(str(caught.value)) < 200 and "(got 'yyyy" in str(caught.value)
    with pytest.raises(DecodeError, match=r"invalid Order: value: Invalid JSON"):
        decode(Order, b"\x00not json")


# -- encode through the same adapter -------------------------------------------------------------

ROUND_TRIPS: list[tuple[Any, Any]] = [
    (Order, Order(1, 9.5, [Line("a", 1), Line("b", 2)])),
    (Click, {"user": "u", "page": "/p"}),
    (list[int], [3, 1, 2]),
    (dict[str, float], {"a": 1.5}),
    (int | None, 5),
    (datetime.datetime, datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
    (Color, Color.BLUE),
    (tuple[int, str], (1, "a")),
    (Customer, Customer(name="A", addresses=[Address(city="X", zip="1")])),
    (int, 7),
]


@pytest.mark.parametrize(("declared", "value"), ROUND_TRIPS, ids=lambda x: str(x)[:30])
def test_values_round_trip(declared: Any, value: Any) -> None:
    codec = codec_for(declared)
    data = codec.encode(value)
    assert isinstance(data, bytes)
    assert codec.decode(data) == value
    assert codec.loads(data) == value  # the hot path's function gives the same


def test_a_dataclass_encodes_as_json_and_a_dict_for_it_is_written_as_is() -> None:
    codec = codec_for(Order)
    assert orjson.loads(codec.encode(Order(1, 2.0))) == {"id": 1, "amount": 2.0, "lines": []}
    # Another shape (a dict for a dataclass topic) is written without a warning; readers validate.
    assert orjson.loads(codec.encode({"id": 1, "amount": 2.0})) == {"id": 1, "amount": 2.0}


def test_the_adapter_is_built_once_per_codec_not_per_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = codec_for(Order)
    loads = codec.loads

    def no_more_adapters(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a TypeAdapter was built on the record path")

    monkeypatch.setattr("streamkit.serde.TypeAdapter", no_more_adapters)
    data = codec.encode(Order(1, 2.0))
    for _ in range(100):
        assert loads(data) == codec.decode(data) == Order(1, 2.0)
        assert codec.encode(Order(1, 2.0)) == data


def test_str_bytes_plain_json_and_models_keep_their_fast_paths() -> None:
    assert codec_for(bytes) is RAW and codec_for(str) is STR
    assert codec_for(None) is JSON and codec_for(Any) is JSON and codec_for(object) is JSON
    assert JSON.loads is orjson.loads  # no validation for plain JSON
    model = codec_for(Customer)
    assert isinstance(model, ModelCodec) and model.loads == Customer.model_validate_json


# -- refused at declaration ----------------------------------------------------------------------


def test_a_type_pydantic_cannot_validate_is_refused_when_the_topic_is_declared() -> None:
    message = refusal(Opaque)
    assert message.startswith("topic t: value_type Opaque cannot be validated")
    assert "pydantic model, a dataclass or a TypedDict" in message and "bytes" in message
    message = refusal(Iterator[int])
    assert message.startswith("topic t: value_type Iterator[int] cannot be validated")
    message = refusal(Callable[[int], int])
    assert message.startswith("topic t: value_type Callable[[int], int] cannot come from JSON")
    message = refusal(list[Opaque])
    assert message.startswith("topic t: value_type list[Opaque] cannot be validated")

    @dataclass
    class HasOpaque:
        blob: Opaque

    assert refusal(HasOpaque).startswith("topic t: value_type HasOpaque cannot be validated")
    message = refusal("Undefined")
    assert message.startswith("topic t: value_type 'Undefined' cannot be validated")
    assert "define every type it uses at module level" in message
    with pytest.raises(sk.ConfigError, match=r"topic t: key_type Opaque cannot be validated"):
        sk.App("types").topic("t", key_type=Opaque)


def test_a_type_that_refers_to_a_class_local_to_a_function_is_refused_with_the_fix() -> None:
    @dataclass
    class Inner:
        x: int

    @dataclass
    class Outer:
        inner: Inner  # a string under `from __future__ import annotations`: not resolvable

    message = refusal(Outer)
    assert message == (
        "topic t: value_type Outer cannot be validated: it refers to a type that is not defined "
        "where it is declared (a name in quotes, or a class defined inside a function); define "
        "every type it uses at module level, before the declaration"
    )


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="pydantic takes typing.TypedDict on 3.12+")
def test_typing_typeddict_before_python_3_12_is_refused_with_the_fix() -> None:
    class Old(typing.TypedDict):
        a: int

    message = refusal(Old)
    assert message.startswith("topic t: value_type Old cannot be validated")
    assert "typing_extensions.TypedDict" in message


def test_a_refused_table_type_names_the_type_too() -> None:
    with pytest.raises(sk.ConfigError, match=r"Opaque cannot be validated.*pydantic model"):
        sk.App("types").table("t", value_type=Opaque)


# -- keys: str unless declared -------------------------------------------------------------------


def test_keys_are_str_unless_declared() -> None:
    app = sk.App("types")
    assert app.topic("plain").key_codec is STR
    assert app.topic("raw", key_type=bytes).key_codec is RAW
    plain, numbered = app.topic("plain"), app.topic("numbered", key_type=int)
    assert isinstance(numbered.key_codec, TypedCodec)
    assert plain.encode_key("u1") == b"u1"
    assert plain.encode_key(b"u1") == b"u1"  # bytes pass through, not "b'u1'"
    assert numbered.encode_key(12) == b"12"
    assert numbered.key_codec.decode(b"12") == 12


def test_a_key_that_is_not_utf8_is_a_decode_problem_that_names_the_key() -> None:
    topic = sk.App("types").topic("t", value_type=Order)
    rec = consumer_record("t", 0, Made("bad key", b"\xff\xfe", b'{"id": 1, "amount": 1}'))
    problem = decode_problem(topic.key_codec, topic.value_codec, rec)
    assert problem.startswith("key: not UTF-8")
    assert "key_type=bytes" in problem
    rec = consumer_record("t", 0, Made("bad value", b"k", b'{"nonsense": true}'))
    assert decode_problem(topic.key_codec, topic.value_codec, rec) == (
        "invalid Order: id: Field required; amount: Field required"
    )


# -- through the runtime: the real Task without a broker, then a real worker and broker ----------


def dataclass_app(uid: str, **settings: Any) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """Orders (a dataclass) in, receipts (a dataclass) out; the key is the default, str."""
    app = sk.App(f"types-{uid}", **settings)
    orders = app.topic(f"types-orders-{uid}", value_type=Order, partitions=1)
    receipts = app.topic(f"types-receipts-{uid}", value_type=Receipt, partitions=1)

    @app.agent(orders, sink=receipts)
    async def receipt(stream: sk.Stream[Order]) -> AsyncIterator[Receipt]:
        async for order in stream:
            assert isinstance(order, Order) and all(isinstance(x, Line) for x in order.lines)
            key = stream.event.key
            assert isinstance(key, str)
            yield Receipt(order.id, key, order.amount + sum(x.qty for x in order.lines))

    return app, orders, receipts


GOOD = [
    (b"k0", b'{"id": 0, "amount": 1.5}'),
    (b"k2", b'{"id": 2, "amount": "2", "lines": [{"sku": "a", "qty": 3}]}'),
    (b"k5", b'{"id": 5, "amount": 0}'),
]
BAD = [  # (key, value, words of the reason)
    (b"k1", b'{"nonsense": true}', "invalid Order: id: Field required"),
    (b"k3", b'{"id": 3, "amount": 1, "lines": [{"sku": "a"}]}', "lines[0].qty: Field required"),
    (b"k4", b"[1, 2]", "invalid Order: value: Input should be an object"),
    (b"\xff\xfe", b'{"id": 6, "amount": 1}', "key: not UTF-8"),
]
MIXED = [GOOD[0], BAD[0][:2], GOOD[1], BAD[1][:2], BAD[2][:2], GOOD[2], BAD[3][:2]]


def expected_receipts() -> list[Receipt]:
    return [Receipt(0, "k0", 1.5), Receipt(2, "k2", 5.0), Receipt(5, "k5", 0.0)]


def check_dead(dead: list[tuple[bytes | None, bytes | None, Any]], topic: str) -> None:
    assert [(key, value) for key, value, _ in dead] == [(k, v) for k, v, _ in BAD]
    for (_, _, headers), (_, _, words) in zip(dead, BAD, strict=True):
        info = describe(headers)
        assert info["streamkit.error.type"] == "DecodeError"
        assert words in info["streamkit.error"], info["streamkit.error"]
        assert info["streamkit.source.topic"] == topic


async def test_a_task_sends_invalid_dataclass_values_to_the_dlq_with_the_reason() -> None:
    app, orders, receipts = dataclass_app("pure")
    made = [Made("mixed", key, value) for key, value in MIXED]
    task, collector = await run_task(app, orders, made, event_time=False)
    try:
        assert task.runner is not None and not task.runner.done(), "the task stopped"
        assert task.committable == len(MIXED)
        out = [r for r in collector.records if r.topic == receipts.name]
        assert [receipts.value_codec.decode(r.value) for r in out if r.value] == (
            expected_receipts()
        )
        dead = [(r.key, r.value, r.headers) for r in collector.records if r.topic == app.dlq.name]
        check_dead(dead, orders.name)
    finally:
        await task.close(1.0)


async def test_a_worker_puts_invalid_dataclass_values_in_the_dlq_and_processes_the_rest(
    uid: str, workdir: Path
) -> None:
    app, orders, receipts = dataclass_app(uid, workdir=workdir, commit_interval=0.2)
    async with running(app):
        await produce(orders.name, [v for _, v in MIXED], keys=[k for k, _ in MIXED])
        out = await read_all(receipts.name, expect=len(GOOD))
        dead = await read_all(app.dlq.name, expect=len(BAD))
    assert [receipts.value_codec.decode(r.value) for r in out] == expected_receipts()
    assert [r.key for r in out] == [b"k0", b"k2", b"k5"]  # the input's key bytes, as they came
    check_dead([(r.key, r.value, list(r.headers)) for r in dead], orders.name)
    assert await committed(app.id, orders.name) == {0: len(MIXED)}


def test_an_output_keeps_the_input_key_bytes_only_where_its_codec_writes_the_same() -> None:
    from streamkit.serde import codec_for, same_bytes

    text, raw, json = codec_for(str), codec_for(bytes), codec_for(None)
    ints, other_ints = codec_for(list[int]), codec_for(list[int])
    assert same_bytes(text, raw) and same_bytes(raw, text)  # the same bytes
    assert same_bytes(json, codec_for(None))
    assert same_bytes(ints, other_ints)  # JSON validated into the same type
    assert not same_bytes(text, json)  # "k" against "\"k\""
    assert not same_bytes(ints, codec_for(list[str]))
    assert text.encode("k") != json.encode("k")
