"""The raw fetch path of input partitions (`runtime/fetch.py`, `RawClient.fetch_input`) against
the real broker: it reads what a read_committed aiokafka consumer reads, record for record
(aborted transactions and their markers skipped, compressed batches, headers, timestamps), and
a worker on either fetch path whose committed offset is past the log's end starts again where
the reset policy says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

import streamkit as sk
from streamkit.aiokafka_internals import FetchSession, RawClient, input_records, records
from tests.kafkahelp import bootstrap, create_topic, end_offsets, produce, read_all, running

FIELDS = ("topic", "partition", "offset", "timestamp", "timestamp_type", "key", "value", "headers")


async def _write(topic: str) -> None:
    """Plain records, a committed and an aborted transaction, then gzip-compressed records."""
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap())
    txn = AIOKafkaProducer(bootstrap_servers=bootstrap(), transactional_id=f"{topic}-txn")
    gzip = AIOKafkaProducer(bootstrap_servers=bootstrap(), compression_type="gzip", linger_ms=50)
    for p in (plain, txn, gzip):
        await p.start()
    try:
        for i in range(3):
            await plain.send_and_wait(topic, b"plain%d" % i, key=b"k%d" % i, partition=0)
        async with txn.transaction():
            for i in range(4):
                headers = [("h", b"%d" % i), ("empty", b"")]
                await txn.send(topic, b"kept%d" % i, partition=0, headers=headers)
        await txn.begin_transaction()
        for i in range(3):
            await txn.send(topic, b"aborted%d" % i, partition=0)
        await txn.abort_transaction()
        futures = [await gzip.send(topic, None, key=b"z%d" % i, partition=0) for i in range(5)]
        for future in futures:
            await future
    finally:
        for p in (plain, txn, gzip):
            await p.stop()


async def _consumed(topic: str, end: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(),
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    records: list[Any] = []
    try:
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            records.extend(batch.get(tp, []))
    finally:
        await consumer.stop()
    return records


@pytest.mark.parametrize("reader", ["native", "reference"])
async def test_the_raw_fetch_reads_what_a_read_committed_consumer_reads(
    uid: str, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(`reader`: the batches read by `_records.c`, or all by aiokafka's reader.)"""
    if reader == "native" and not records.BUILT:
        pytest.skip("the extension was not built")
    monkeypatch.setattr(records, "NATIVE", reader == "native")
    topic = f"raw-{uid}"
    await create_topic(topic, 1)
    await _write(topic)
    end = (await end_offsets(topic))[0]
    expected = await _consumed(topic, end)
    assert len(expected) == 3 + 4 + 5
    tp = TopicPartition(topic, 0)
    client = RawClient({"bootstrap_servers": bootstrap()}, f"raw-{uid}")
    session = FetchSession()
    sizes = (1 << 20, 1 << 22)
    try:
        got: list[Any] = []
        position, last_stable = 0, -1
        while position < end:  # (a response may stop short of the end)
            ((node, _),) = (await client.leaders([tp])).items()
            answer = await client.fetch_input(node, session, {tp: position}, 500, 1, *sizes)
            assert answer is not None and session.id
            fetched = answer[tp]
            assert not fetched.out_of_range and not fetched.retry
            while fetched.batches:  # read a few at a time, as the fetch loop hands them over
                got += input_records(topic, 0, fetched.batches, fetched.start, 2)
            position, last_stable = fetched.next_offset, fetched.last_stable
        # the session: nothing new, the partition is left out; a new record, it is back
        assert await client.fetch_input(node, session, {tp: end}, 100, 1, *sizes) == {}
        await produce(topic, [b"more"], partition=0)
        answer = await client.fetch_input(node, session, {tp: end}, 5000, 1, *sizes)
        assert answer is not None
        more = input_records(topic, 0, answer[tp].batches, end, 10)
        assert [(r.offset, r.value) for r in more] == [(end, b"more")]
        answer = await client.fetch_input(node, FetchSession(), {tp: end + 5}, 500, 1, *sizes)
        assert answer is not None and answer[tp].out_of_range
    finally:
        await client.close()
    # past the aborted transaction's records and the markers: the end, the last stable offset
    assert position == end == last_stable
    as_tuples = [tuple(getattr(r, f) for f in FIELDS) for r in got]
    assert as_tuples == [tuple(getattr(r, f) for f in FIELDS) for r in expected]
    assert [r.headers for r in got[3:5]] == [
        (("h", b"0"), ("empty", b"")),
        (("h", b"1"), ("empty", b"")),
    ]


@pytest.mark.parametrize("fetch_path", ["raw", "consumer"])
async def test_a_committed_offset_past_the_end_starts_again_from_the_reset_policy(
    uid: str, tmp_path: Path, fetch_path: str
) -> None:
    app = sk.App(f"t-{uid}", workdir=tmp_path, commit_interval=0.2, fetch_path=fetch_path)
    src = app.topic(f"in-{uid}", partitions=2)
    out = app.topic(f"out-{uid}", partitions=1)

    @app.agent(src, sink=out)
    async def copy(stream: sk.Stream[dict[str, int]]) -> AsyncIterator[Any]:
        async for value in stream:
            yield value

    await create_topic(src.name, 2)
    await produce(src.name, [orjson.dumps({"n": n}) for n in range(20)], partition=0)
    await produce(src.name, [orjson.dumps({"n": n}) for n in range(20, 30)], partition=1)
    group = AIOKafkaConsumer(bootstrap_servers=bootstrap(), group_id=app.id)
    await group.start()
    try:  # partition 0 committed far past its end (a topic recreated, say), 1 at 5
        group.assign([TopicPartition(src.name, p) for p in (0, 1)])
        await group.commit(
            {
                TopicPartition(src.name, 0): OffsetAndMetadata(1000, ""),
                TopicPartition(src.name, 1): OffsetAndMetadata(5, ""),
            }
        )
    finally:
        await group.stop()
    async with running(app):
        records = await read_all(out.name, expect=20 + 5, within=60)
    assert sorted(orjson.loads(r.value)["n"] for r in records) == [*range(20), *range(25, 30)]
