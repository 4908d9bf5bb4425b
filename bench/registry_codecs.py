"""What a record costs to encode and decode with the schema-registry codecs, beside the plain
JSON model codec: one order of six fields (a nested list of two lines), on this machine.

    python -m bench.registry_codecs [--n 20000]

The codecs are prepared against a real registry (STREAMKIT_SCHEMA_REGISTRY_URL, else a local
Apicurio started for the run); the timing itself never calls it. Best of 5 runs of n calls."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from streamkit import localregistry
from streamkit.registry import Avro, JsonSchema, Protobuf, RegistryClient, SchemaCodec
from streamkit.serde import codec_for
from tests.protohelp import shop_messages


class Line(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    id: int
    amount: float
    at: dt.datetime
    customer: str
    note: str | None = None
    lines: list[Line] = []


def best_us(fn: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


@contextlib.contextmanager
def registry_url() -> Iterator[str]:
    given = os.environ.get("STREAMKIT_SCHEMA_REGISTRY_URL")
    if given:
        yield given
        return
    with localregistry.start_registry() as registry:
        yield registry.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    n = parser.parse_args().n
    order = Order(
        id=12345,
        amount=99.5,
        at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        customer="c-42",
        lines=[Line(sku="a", qty=1), Line(sku="b", qty=3)],
    )
    proto_order = shop_messages("bench")["Order"]
    proto = proto_order(id=12345, amount=99.5, color=1, card="c-42")
    proto.lines.add(sku="a", qty=1)
    proto.lines.add(sku="b", qty=3)
    run = uuid.uuid4().hex[:8]
    with registry_url() as url:
        client = RegistryClient(url)
        codecs: list[tuple[str, Any, Any]] = [("JSON, pydantic model", codec_for(Order), order)]
        for name, codec, value in (
            ("Avro (fastavro)", Avro(Order), order),
            ("Protobuf (upb)", Protobuf(proto_order), proto),
            ("JSON Schema, pydantic model", JsonSchema(Order), order),
        ):
            assert isinstance(codec, SchemaCodec)
            codec.subject = f"bench-{run}-{name.split()[0].lower()}"
            codec.prepare(client)
            codecs.append((name, codec, value))
    print(f"{'codec':30} {'bytes':>6} {'encode µs':>10} {'decode µs':>10}")
    for name, codec, value in codecs:
        data = codec.encode(value)
        assert codec.decode(data) == value
        encode = best_us(functools.partial(codec.encode, value), n)
        decode = best_us(functools.partial(codec.loads, data), n)
        print(f"{name:30} {len(data):6} {encode:10.2f} {decode:10.2f}")


if __name__ == "__main__":
    main()
