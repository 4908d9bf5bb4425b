"""`OpenBatch` fills a real aiokafka batch through its C record builder: what aiokafka's
reader reads back is what was appended, the count is where aiokafka reads it, and a full batch
refuses the record that does not fit. The collector's `add` and keyed routes in C write what
their Python reference writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.aiokafka_internals import NATIVE_BATCHES, OpenBatch
from streamkit.aiokafka_internals.batches import _SLOTS, BUILT
from streamkit.runtime.collector import RecordCollector

if BUILT:
    import streamkit.aiokafka_internals._batches as _batches


async def test_what_an_open_batch_holds_reads_back_from_the_built_batch() -> None:
    producer = AIOKafkaProducer(max_batch_size=1024)  # never started: batches only
    batch = OpenBatch(producer.create_batch())
    appended = []
    while True:
        n = batch.count
        record = (1_700_000_000_000 + n, b"k%d" % n, b"v" * 40 + b"%d" % n, [("h", b"%d" % n)])
        if batch.append(n, *record) is None:
            break
        batch.count += 1
        appended.append(record)
    assert 5 < len(appended) < 30  # 1 KiB holds some, not all
    built = batch.closed()
    assert built.record_count() == len(appended)
    assert built.append(timestamp=None, key=b"x", value=b"y", headers=[]) is None  # closed
    records = MemoryRecords(bytes(built._build()))
    read = []
    while records.has_next():
        for rec in records.next_batch():
            read.append((rec.timestamp, rec.key, rec.value, list(rec.headers)))
            assert rec.offset == len(read) - 1
    assert read == appended


async def test_another_producers_batch_is_filled_through_its_own_append() -> None:
    class Batch:
        def __init__(self) -> None:
            self.records: list[tuple[object, ...]] = []

        def append(
            self, *, timestamp: object, key: object, value: object, headers: object
        ) -> object:
            if len(self.records) == 2:
                return None
            self.records.append((timestamp, key, value, headers))
            return True

    batch = OpenBatch(Batch())
    assert batch.append(0, 1, b"a", b"1", []) is not None
    assert batch.append(1, 2, b"b", b"2", []) is not None
    assert batch.append(2, 3, b"c", b"3", []) is None
    assert batch.closed().records == [(1, b"a", b"1", []), (2, b"b", b"2", [])]


# -- the collector's per-record calls: C (`_batches.c`) against the Python reference ----------

_KEYS = st.sampled_from([b"a", b"b", b"user-1", b"user-22", b"\x00\xff", b""])
_HEADERS = st.sampled_from([None, [], (), [("h", b"1")], (("h", b"2"), ("g", b""))])
_VALUES = st.one_of(st.none(), st.binary(max_size=120))
_STEP = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), _KEYS, _VALUES, _HEADERS, st.integers(0, 99)),
    st.tuples(st.just("keyed"), st.just(0), st.one_of(st.none(), _KEYS), _VALUES, _HEADERS,
              st.integers(0, 99)),  # (None: the builder's clock, not comparable)
    st.tuples(st.just("submit"), st.just(0), st.none(), st.none(), st.none(), st.just(0)),
)  # fmt: skip


async def _run_steps(steps: list[tuple[Any, ...]], native: bool) -> tuple[list[Any], list[Any]]:
    producer = AIOKafkaProducer(max_batch_size=512)  # never started: batches only
    sent: list[tuple[str, int, list[Any]]] = []

    async def send_batch(builder: Any, topic: str, partition: int) -> Any:
        records = MemoryRecords(bytes(builder._build()))
        read = []
        while records.has_next():
            for rec in records.next_batch():
                read.append((rec.offset, rec.timestamp, rec.key, rec.value, list(rec.headers)))
        sent.append((topic, partition, read))
        return asyncio.get_running_loop().create_future()

    producer.send_batch = send_batch
    collector = RecordCollector(producer, {"t": 4})
    if not native:
        collector.add = collector._add  # the Python reference
    assert (type(collector.add) is _batches.Adder) == native
    keyed = collector.keyed("t")
    answers: list[Any] = []
    for kind, partition, key, value, headers, ts in steps:
        if kind == "add":
            answers.append(collector.add(("t", partition), key, value, headers, ts))
        elif kind == "keyed":
            answers.append(keyed(key, value, ts, headers))
        else:
            await collector.submit()
    await collector.submit()
    return answers, sent


@pytest.mark.skipif(not NATIVE_BATCHES, reason="the C extension is not built (or turned off)")
@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=60))
def test_native_adder_and_router_write_what_the_python_ones_write(
    steps: list[tuple[Any, ...]],
) -> None:
    """Same steps, both ways: the same answers (a batch filled up or not), the same batches
    handed to the producer, record for record (offsets, times, keys, values, headers)."""
    native = asyncio.run(_run_steps(steps, native=True))
    reference = asyncio.run(_run_steps(steps, native=False))
    assert native == reference


def test_the_native_calls_refuse_what_they_cannot_take() -> None:
    if not BUILT:
        pytest.skip("the C extension is not built")
    with pytest.raises(ValueError, match="two slot offsets"):
        _batches.Adder({}, bool, OpenBatch, (0,))
    with pytest.raises(ValueError, match="outside the instance"):
        _batches.Adder({}, bool, OpenBatch, (10_000, 16))
    add = _batches.Adder({}, lambda *a: a == a, OpenBatch, _SLOTS or (16, 24))
    with pytest.raises(TypeError, match="five positional"):
        add(("t", 0), b"k", b"v", None)  # type: ignore[call-arg]
    route = _batches.Router(add, [("t", 0)], {b"k": 5}, lambda key: 0, bool)
    with pytest.raises(IndexError, match="partition 5 of 1"):
        route(b"k", b"v", 1)
