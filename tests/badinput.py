"""Bad input for the decode and dispatch path: records of every kind, each with the outcome it
must have (the sink or the dead-letter topic), and a harness that runs the real `Task` over
them with no broker.

A record kind is a function of a `Source` of random choices, so the same kinds are drawn by
hypothesis (which shrinks a failing mix to a small one) and by a seeded `random.Random` (the
broker test's batch). Validity comes from how a record was made, never from running the code
under test.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, cast

import orjson
from aiokafka.structs import ConsumerRecord
from hypothesis import strategies as st
from pydantic import BaseModel

import streamkit as sk
from streamkit.aiokafka_internals import router
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.dlq import describe
from streamkit.runtime.event_clock import EventClock
from streamkit.runtime.task import Task

T = TypeVar("T")
HUGE = 900 * 1024  # bytes: a big record well under the broker's 1 MB default
Headers = list[tuple[str, bytes | None]]


class Order(BaseModel):
    """Schema version 2 of an order: any other `version` is invalid."""

    version: Literal[2]
    id: int
    amount: float
    ts: float  # event time, epoch seconds


class Source(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...
    def choice(self, options: Sequence[T]) -> T: ...
    def binary(self, max_size: int) -> bytes: ...
    def text(self, max_size: int, alphabet: str = ...) -> str: ...


class RandomSource:
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def integer(self, lo: int, hi: int) -> int:
        return self.rnd.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return self.rnd.choice(options)

    def binary(self, max_size: int) -> bytes:
        return self.rnd.randbytes(self.rnd.randint(0, max_size))

    def text(self, max_size: int, alphabet: str = string.printable + "é€😀") -> str:
        return "".join(self.rnd.choice(alphabet) for _ in range(self.rnd.randint(0, max_size)))


class DrawSource:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def binary(self, max_size: int) -> bytes:
        return self.draw(st.binary(max_size=max_size))

    def text(self, max_size: int, alphabet: str = string.printable + "é€😀") -> str:
        return self.draw(st.text(alphabet=alphabet, max_size=max_size))


@dataclass
class Made:
    """One generated record and the outcome it must have."""

    kind: str
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    good: bool = True  # reaches the sink (else the DLQ)
    good_without_clock: bool | None = None  # differs when only event time makes it bad
    ident: int = 0  # the `id` of a good order

    def expected_good(self, event_time: bool) -> bool:
        if not event_time and self.good_without_clock is not None:
            return self.good_without_clock
        return self.good


def dumps(obj: Any) -> bytes:
    """JSON as any producer may write it (the standard library: integers of any size)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _order(src: Source, ident: int, **changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "version": 2,
        "id": ident,
        "amount": src.integer(-(10**6), 10**6) / 100,
        "ts": 1_700_000_000 + src.integer(0, 10**6) / 10,
    }
    order.update(changes)
    return order


LETTERS = "qxzwkj"  # never a number, `inf` or `nan` to pydantic's lax parsing


def _wrong_json(src: Source, name: str) -> Any:
    """A JSON value of a type pydantic does not coerce into the field (lax mode turns "5"
    into 5, true into 1 and 2.0 into 2, so those are left out)."""
    wrong: list[Any] = [None, [], [1, 2], {}, {"a": 1}, "q" + src.text(8, LETTERS)]
    if name in ("id", "version"):
        wrong.append(1.5)
    return src.choice(wrong)


def key_for(src: Source) -> bytes | None:
    return src.choice([None, b"", src.text(12).encode(), b"user-%d" % src.integer(0, 9)])


def odd_headers(src: Source) -> Headers:
    """Headers user code or other producers may send: duplicates, empty names and values,
    None values, non-UTF-8 values, and names that look like ours."""
    names = ["", "h", "h", "trace-id", "streamkit.error", "streamkit.source.offset",
             "streamkit.watermark", "é€", src.text(6)]  # fmt: skip
    out: Headers = []
    for _ in range(src.integer(0, 4)):
        value = src.choice([None, b"", b"\xff\xfe\x00", b"1:2:3", src.binary(16)])
        out.append((src.choice(names), value))
    return out


def _valid(src: Source, ident: int) -> Made:
    order = _order(src, ident)
    if src.integer(0, 3) == 0:
        order["note"] = src.text(20)  # unknown fields are ignored by the model
    return Made("valid", key_for(src), dumps(order), ident=ident)


def _huge_valid(src: Source, ident: int) -> Made:
    order = _order(src, ident, padding="p" * HUGE)
    return Made("huge-valid", key_for(src), dumps(order), ident=ident)


def _huge_invalid(src: Source, ident: int) -> Made:
    value = src.choice([b'"' + b"x" * HUGE + b'"', b"[" + b"1," * (HUGE // 2) + b"1]"])
    return Made("huge-invalid", key_for(src), value, good=False)


BROKER_LIMIT = 1048588  # message.max.bytes, the broker's default limit of a record batch


def near_broker_limit(key: bytes | None, headers: Headers) -> Made:
    """An invalid value the broker just accepts: its dead letter (plus headers) is bigger."""
    value = b'"' + b"x" * (BROKER_LIMIT - 200 - sum(len(v or b"") + len(k) for k, v in headers))
    return Made("near-broker-limit", key, value, headers, good=False)


def _random_bytes(src: Source, ident: int) -> Made:
    data = src.binary(64)
    return Made("random-bytes", key_for(src), b"\x00" + data, good=False)  # NUL: never JSON


def _not_utf8(src: Source, ident: int) -> Made:
    return Made("not-utf8", key_for(src), b"\xff\xfe" + src.binary(16), good=False)


def _wrong_type(src: Source, ident: int) -> Made:
    name = src.choice(["id", "amount", "ts", "version"])
    order = _order(src, ident, **{name: _wrong_json(src, name)})
    return Made(f"wrong-type-{name}", key_for(src), dumps(order), good=False)


def _missing_field(src: Source, ident: int) -> Made:
    order = _order(src, ident)
    del order[src.choice(["id", "amount", "ts", "version"])]
    return Made("missing-field", key_for(src), dumps(order), good=False)


def _wrong_version(src: Source, ident: int) -> Made:
    version = src.choice([1, 3, 0, -2, 10**20, "2", "v2", 2.5, None])
    order = _order(src, ident, version=version)
    return Made("wrong-version", key_for(src), dumps(order), good=False)


def _not_an_object(src: Source, ident: int) -> Made:
    value = src.choice([b"null", b"[]", b"42", b'"order"', b"true", b"", b"{", b"[1,2,3]"])
    return Made("not-an-object", key_for(src), value, good=False)


def _deep(src: Source, ident: int) -> Made:
    depth = src.integer(300, 5000)
    return Made("deeply-nested", key_for(src), b"[" * depth + b"]" * depth, good=False)


def _tombstone(src: Source, ident: int) -> Made:
    # None reaches the agent (a tombstone is data); the agent's `order.id` raises: DLQ
    return Made("null-value", key_for(src), None, good=False)


def _bad_key(src: Source, ident: int) -> Made:
    order = _order(src, ident)
    return Made("key-not-utf8", b"\xc3\x28" + src.binary(8), dumps(order), good=False)


def _bad_event_time(src: Source, ident: int) -> Made:
    ts = src.choice([1e300, -1e300, 10**30, 1.7e16])
    order = _order(src, ident, ts=ts)
    return Made(
        "event-time-out-of-range",
        key_for(src),
        dumps(order),
        good=False,
        good_without_clock=True,
        ident=ident,
    )


KINDS: list[Callable[[Source, int], Made]] = [
    _valid,
    _valid,
    _valid,
    _random_bytes,
    _not_utf8,
    _wrong_type,
    _missing_field,
    _wrong_version,
    _not_an_object,
    _deep,
    _tombstone,
    _bad_key,
    _bad_event_time,
]
BIG_KINDS: list[Callable[[Source, int], Made]] = [_huge_valid, _huge_invalid]


def make(src: Source, ident: int, *, big: bool = False) -> Made:
    kinds = [*KINDS, *BIG_KINDS] if big else KINDS
    made = src.choice(kinds)(src, ident)
    made.headers = odd_headers(src)
    return made


@st.composite
def batches(draw: st.DrawFn, max_size: int = 30, big: bool = False) -> list[Made]:
    src = DrawSource(draw)
    return [make(src, i, big=big) for i in range(draw(st.integers(1, max_size)))]


def random_batch(seed: int, size: int, *, big: int = 0) -> list[Made]:
    """`size` records drawn with a seeded Random, `big` of them huge, at random places, the
    huge kinds taking turns (so two or more huge records hold both kinds)."""
    src = RandomSource(random.Random(seed))
    huge = {i: n for n, i in enumerate(sorted(random.Random(seed).sample(range(size), big)))}
    made: list[Made] = []
    for i in range(size):
        if i in huge:
            m = BIG_KINDS[huge[i] % len(BIG_KINDS)](src, i)
            m.headers = odd_headers(src)
        else:
            m = make(src, i)
        made.append(m)
    return made


# -- the app and the harness --------------------------------------------------------------------


def fuzz_app(uid: str, **settings: Any) -> tuple[sk.App, sk.Topic, sk.Topic]:
    """An app whose agent reads versioned orders and writes one output per good order."""
    app = sk.App(f"fuzz-{uid}", **settings)
    orders = app.topic(f"fuzz-orders-{uid}", key_type=str, value_type=Order, partitions=3,
                       timestamp="ts")  # fmt: skip
    out = app.topic(f"fuzz-out-{uid}", partitions=3)

    @app.agent(orders, sink=out)
    async def check(stream: sk.Stream[Order]) -> AsyncIterator[dict[str, Any]]:
        async for order in stream:
            yield {"id": order.id, "amount": order.amount}  # None (tombstone): AttributeError

    return app, orders, out


@dataclass
class Appended:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


class ListCollector:
    """Stands in for RecordCollector: keeps what the task appends."""

    def __init__(self) -> None:
        self.records: list[Appended] = []

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> bool:
        self.records.append(Appended(topic, key, value, list(headers or [])))
        return False

    def add(
        self,
        tp: tuple[str, int],
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp_ms: int | None,
    ) -> bool:
        return self.append(tp[0], key, value, headers=headers, partition=tp[1])

    def keyed(self, topic: str) -> Callable[..., bool]:
        def keyed(
            key: bytes | None, value: bytes | None, timestamp_ms: int | None, headers: Any = None
        ) -> bool:
            return self.append(topic, key, value, headers=headers, timestamp_ms=timestamp_ms)

        return keyed

    def keyed_router(
        self,
        tps: list[tuple[str, int]],
        known: dict[bytes, int],
        place: Callable[[bytes], int],
        keyless: Callable[[bytes | None, int | None, Any], bool],
    ) -> Callable[..., bool]:
        return router(self.add, tps, known, place, keyless)  # the Python one: `add` is ours

    async def submit(self) -> None:
        return None

    async def submit_full(self) -> None:
        return None


def consumer_record(topic: str, offset: int, made: Made) -> Any:
    return ConsumerRecord(
        topic, 0, offset, 1_700_000_000_000 + offset, 0, made.key, made.value, None,
        len(made.key or b""), len(made.value or b""), tuple(made.headers),
    )  # fmt: skip


async def run_task(
    app: sk.App, orders: sk.Topic, made: list[Made], *, event_time: bool
) -> tuple[Task, ListCollector]:
    """Run the app's real Task over `made` (partition 0) until every record is processed."""
    (stage,) = app.stages
    collector = ListCollector()
    clock = None
    if event_time:
        clock = EventClock(
            {orders.name: (orders.timestamp_policy, 0)}, 0, [], app.settings.idle_timeout
        )
    task = Task(
        stage,
        0,
        cast(RecordCollector, collector),
        dlq_topic=app.dlq.name,
        on_agent_error="dlq",
        on_room=lambda: None,
        clock=clock,
    )
    task.start()
    for _ in range(100):
        if task.accepting:
            break
        await asyncio.sleep(0)
    records = [consumer_record(orders.name, i, m) for i, m in enumerate(made)]
    assert task.put(records)
    for _ in range(100_000):
        if task.committable == len(made) or (task.runner is not None and task.runner.done()):
            break
        await asyncio.sleep(0)
    return task, collector


def check_outcomes(
    made: list[Made],
    outputs: list[bytes | None],
    dead: list[tuple[bytes | None, bytes | None, Headers]],
    *,
    topic: str,
    event_time: bool,
    partition_of: Callable[[int], int] = lambda i: 0,
    offset_of: Callable[[int], int] = lambda i: i,
) -> None:
    """in = out + DLQ exactly: each good record once in the outputs (by id), each bad one once
    in the DLQ with its original bytes and headers, a reason and its coordinates."""
    expected_good = {m.ident for m in made if m.expected_good(event_time)}
    got_ids = [orjson.loads(value or b"null")["id"] for value in outputs]
    assert sorted(got_ids) == sorted(expected_good), "sink ids differ from the good records"
    bad = {
        (partition_of(i), offset_of(i)): m
        for i, m in enumerate(made)
        if not m.expected_good(event_time)
    }
    seen: set[tuple[int, int]] = set()
    for key, value, headers in dead:
        info = describe(headers)
        where = (int(info["streamkit.source.partition"]), int(info["streamkit.source.offset"]))
        assert where in bad, f"a DLQ record for {where}, which was good or unknown"
        assert where not in seen, f"{where} dead-lettered twice"
        seen.add(where)
        m = bad[where]
        assert info["streamkit.source.topic"] == topic
        assert info["streamkit.error"] and info["streamkit.error.type"], info
        assert (key, value) == (m.key, m.value), f"{m.kind}: the DLQ changed the bytes"
        assert headers[: len(m.headers)] == m.headers, f"{m.kind}: original headers lost"
    missing = {w: bad[w].kind for w in bad if w not in seen}
    assert not missing, f"bad records missing from the DLQ: {missing}"
    assert len(outputs) + len(dead) == len(made)
