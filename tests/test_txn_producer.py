"""streamkit's own transactional producer (`aiokafka_internals/txn_producer.py`).

Without a broker: the hand-written Produce v7 request is byte for byte what aiokafka's generic
encoder writes, and its response is read as aiokafka's decoder reads it.

Against the real broker: many transactions over many partitions, several batches a partition
in one transaction (sequence numbers carried from batch to batch and transaction to
transaction), read back exactly once and in order; an aborted transaction never shows; a
second producer with the same transactional id fences the first (its commit fails, its
records never show); the group coordinator refuses the offsets of an old generation and of a
member without one, and takes the current member's."""

from __future__ import annotations

import asyncio
from io import BytesIO
from typing import Any

import pytest
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.protocol.produce import ProduceRequest_v7, ProduceResponse_v7
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
)
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit import aiokafka_internals as internals
from streamkit.aiokafka_internals import GroupFenced, GroupMetadata, group_metadata
from streamkit.aiokafka_internals.api_versions import ApiVersionsV3
from streamkit.aiokafka_internals.produce import (
    FlexibleProduceBatches,
    FlexibleProduceResult,
    ProduceBatches,
    ProduceResult,
    uvarint,
)
from streamkit.aiokafka_internals.txn_producer import TransactionalProducer
from tests.kafkahelp import bootstrap, committed, create_topic, read_all, wait_until
from tests.test_aiokafka_internals import joined, member

# -- the Produce request and response, without a broker -----------------------------------------

_topics = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 2**31 - 1), st.binary(max_size=64)), max_size=5),
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(
    txn_id=st.one_of(st.none(), st.text(max_size=30)),
    timeout=st.integers(0, 2**31 - 1),
    topics=_topics,
)
def test_the_produce_request_is_what_aiokafkas_encoder_writes(
    txn_id: str | None, timeout: int, topics: dict[str, list[tuple[int, bytes]]]
) -> None:
    ours = ProduceBatches(txn_id, timeout, topics).build(None).encode()  # type: ignore[arg-type]
    theirs = ProduceRequest_v7(txn_id, -1, timeout, list(topics.items())).encode()
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(
    answers=st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.lists(
            st.tuples(
                st.integers(0, 2**31 - 1),
                st.integers(-(2**15), 2**15 - 1),
                st.integers(-1, 2**63 - 1),
                st.integers(-1, 2**40),
                st.integers(-1, 2**40),
            ),
            max_size=5,
        ),
        max_size=5,
    ),
    throttle=st.integers(0, 10_000),
)
def test_the_produce_response_is_read_as_aiokafka_reads_it(
    answers: dict[str, list[tuple[int, int, int, int, int]]], throttle: int
) -> None:
    body = ProduceResponse_v7(list(answers.items()), throttle).encode()
    frame = BytesIO(b"\x00\x00\x00\x07" + body)  # as the connection hands it over:
    frame.read(4)  # the response header (correlation id) already read
    read = ProduceResult.decode(frame)
    expected = [
        (t, p, code, offset) for t, parts in answers.items() for p, code, offset, _, _ in parts
    ]
    assert read.partitions == expected


class _Tags:
    """Tagged fields as Kafka writes them: count, then each tag, size and bytes (aiokafka's
    `TaggedFields.encode` leaves the sizes out, so it cannot make them)."""

    @classmethod
    def encode(cls, value: dict[int, bytes]) -> bytes:
        out = uvarint(len(value))
        for tag, data in sorted(value.items()):
            out += uvarint(tag) + uvarint(len(data)) + data
        return out


_TAGS = ("tags", _Tags)
# Produce v12 as Kafka's message spec has it, in aiokafka's generic flexible types
_PRODUCE_V12 = Schema(
    ("transactional_id", CompactString("utf-8")),
    ("acks", Int16),
    ("timeout", Int32),
    (
        "topics",
        CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(("index", Int32), ("records", CompactBytes), _TAGS)),
            _TAGS,
        ),
    ),
    _TAGS,
)
_PRODUCE_RESPONSE_V12 = Schema(
    (
        "responses",
        CompactArray(
            ("name", CompactString("utf-8")),
            (
                "partitions",
                CompactArray(
                    ("index", Int32),
                    ("error_code", Int16),
                    ("base_offset", Int64),
                    ("log_append_time_ms", Int64),
                    ("log_start_offset", Int64),
                    (
                        "record_errors",
                        CompactArray(
                            ("batch_index", Int32), ("message", CompactString("utf-8")), _TAGS
                        ),
                    ),
                    ("error_message", CompactString("utf-8")),
                    _TAGS,
                ),
            ),
            _TAGS,
        ),
    ),
    ("throttle_time_ms", Int32),
    _TAGS,
)


@settings(max_examples=200, deadline=None)
@given(
    txn_id=st.one_of(st.none(), st.text(max_size=200)),
    timeout=st.integers(0, 2**31 - 1),
    topics=st.dictionaries(
        st.text(min_size=1, max_size=200),
        st.lists(st.tuples(st.integers(0, 2**31 - 1), st.binary(max_size=300)), max_size=5),
        max_size=5,
    ),
)
def test_the_flexible_produce_request_is_kafkas_v12(
    txn_id: str | None, timeout: int, topics: dict[str, list[tuple[int, bytes]]]
) -> None:
    ours = FlexibleProduceBatches(txn_id, timeout, topics).build(None).encode()  # type: ignore[arg-type]
    theirs = _PRODUCE_V12.encode(
        [
            txn_id,
            -1,
            timeout,
            [(t, [(p, r, {}) for p, r in parts], {}) for t, parts in topics.items()],
            {},
        ]
    )
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(
    answers=st.dictionaries(
        st.text(min_size=1, max_size=200),
        st.lists(
            st.tuples(
                st.integers(0, 2**31 - 1),
                st.integers(-(2**15), 2**15 - 1),
                st.integers(-1, 2**63 - 1),
                st.lists(
                    st.tuples(st.integers(0, 100), st.one_of(st.none(), st.text(max_size=200))),
                    max_size=3,
                ),
                st.one_of(st.none(), st.text(max_size=200)),
                st.dictionaries(st.integers(0, 300), st.binary(max_size=200), max_size=2),
            ),
            max_size=5,
        ),
        max_size=5,
    ),
    tags=st.dictionaries(st.integers(0, 300), st.binary(max_size=200), max_size=2),
)
def test_the_flexible_produce_response_is_read_past_what_it_does_not_need(
    answers: dict[str, list[tuple[int, int, int, list[tuple[int, str | None]], str | None, Any]]],
    tags: dict[int, bytes],
) -> None:
    body = _PRODUCE_RESPONSE_V12.encode(
        [
            [
                (
                    t,
                    [
                        (p, code, off, 0, 0, [(i, m, {}) for i, m in errs], msg, ptags)
                        for p, code, off, errs, msg, ptags in parts
                    ],
                    tags,
                )
                for t, parts in answers.items()
            ],
            7,
            tags,
        ]
    )
    read = FlexibleProduceResult.decode(body)
    expected = [(t, p, code, off) for t, parts in answers.items() for p, code, off, *_ in parts]
    assert read.partitions == expected


_API_VERSIONS_V3 = Schema(
    ("error_code", Int16),
    ("api_keys", CompactArray(("key", Int16), ("min", Int16), ("max", Int16), _TAGS)),
    ("throttle_time_ms", Int32),
    _TAGS,
)
_FEATURES = CompactArray(("name", CompactString("utf-8")), ("max", Int16), ("min", Int16), _TAGS)


@settings(max_examples=100, deadline=None)
@given(
    apis=st.dictionaries(st.integers(0, 80), st.tuples(st.integers(0, 5), st.integers(0, 20))),
    features=st.dictionaries(st.text(min_size=1, max_size=30), st.integers(0, 30), max_size=5),
    other=st.dictionaries(st.sampled_from([0, 1, 3, 200]), st.binary(max_size=50), max_size=3),
)
def test_api_versions_v3_yields_the_ranges_and_the_finalized_features(
    apis: dict[int, tuple[int, int]], features: dict[str, int], other: dict[int, bytes]
) -> None:
    tags = dict(other)
    if features:
        tags[2] = _FEATURES.encode([(name, level, 1, {}) for name, level in features.items()])
    body = _API_VERSIONS_V3.encode([0, [(k, a, b, {}) for k, (a, b) in apis.items()], 0, tags])
    struct = ApiVersionsV3().build(None)  # type: ignore[arg-type]
    read = struct.RESPONSE_TYPE.decode(body).versions
    assert read.apis == apis and read.features == features and read.error_code == 0


# -- against the broker ---------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["txn-v2", "txn-v1"])
def v2(request: pytest.FixtureRequest) -> bool:
    """Each broker test under transaction version 2 (the broker's default) and under 1."""
    return bool(request.param)


def _producer(
    txn_id: str, metadata: Any = None, *, newer: bool = False, v2: bool = True
) -> TransactionalProducer:
    return TransactionalProducer(
        {"bootstrap_servers": bootstrap()},
        client_id=f"test-{txn_id}",
        transactional_id=txn_id,
        transaction_timeout_ms=10_000,
        max_batch_size=1024,  # small: several batches a partition in one transaction
        retry_backoff_ms=20,
        group_metadata=metadata or (lambda: GroupMetadata("none", -1, "", None)),
        newer_generation=newer,
        delivery_timeout_ms=30_000,
        transaction_v2=v2,
    )


async def _send(
    producer: TransactionalProducer, topic: str, partition: int, values: list[bytes]
) -> list[Any]:
    """Fill batches for one partition (new ones as each fills up); the delivery futures."""
    futures = []
    batch = producer.create_batch()
    for value in values:
        if batch.append(timestamp=None, key=None, value=value) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            assert batch.append(timestamp=None, key=None, value=value) is not None
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def test_transactions_over_many_partitions_show_exactly_once_and_in_order(
    uid: str, v2: bool
) -> None:
    sink, partitions, rounds = f"txp-{uid}", 24, 6
    await create_topic(sink, partitions)
    producer = _producer(f"txp-{uid}", v2=v2)
    await producer.start()
    assert producer.transaction_v2 == v2  # this broker has transaction version 2 finalized
    try:
        for r in range(rounds):
            await producer.begin_transaction()
            futures = []
            for p in range(partitions):
                values = [f"{r}:{p}:{i}:".encode() + bytes(40) for i in range(60)]
                futures += await _send(producer, sink, p, values)
            delivered = await asyncio.gather(*futures)
            assert all(d.offset is not None and d.offset >= 0 for d in delivered)
            assert len(futures) > partitions  # several batches a partition
            if r == 2:  # one aborted transaction in the middle
                await producer.abort_transaction()
                producer = await _restarted(producer, f"txp-{uid}", v2)
            else:
                await producer.commit_transaction()
    finally:
        await producer.stop()
    records = await read_all(sink)
    by_partition: dict[int, list[list[bytes]]] = {}
    for rec in records:
        by_partition.setdefault(rec.partition, []).append(rec.value.split(b":")[0:3])
    for p in range(partitions):
        expected = [
            [str(r).encode(), str(p).encode(), str(i).encode()]
            for r in range(rounds)
            if r != 2
            for i in range(60)
        ]
        assert by_partition[p] == expected, f"partition {p}"


async def _restarted(
    producer: TransactionalProducer, txn_id: str, v2: bool
) -> TransactionalProducer:
    """An aborted transaction leaves the producer failed: the worker replaces it (same id)."""
    await producer.stop()
    again = _producer(txn_id, v2=v2)
    await again.start()
    return again


async def test_a_second_producer_with_the_id_fences_the_first(uid: str, v2: bool) -> None:
    sink = f"txf-{uid}"
    await create_topic(sink, 2)
    first = _producer(f"txf-{uid}", v2=v2)
    await first.start()
    second = _producer(f"txf-{uid}", v2=v2)
    try:
        await first.begin_transaction()
        for future in await _send(first, sink, 0, [b"first"]):
            await future
        await second.start()  # InitProducerId: a new epoch; the first's transaction aborts
        with pytest.raises(ProducerFenced):
            await _deliver_and_commit(first, sink, 1, b"first again")
        with pytest.raises(KafkaError):
            await first.send_batch(first.create_batch(), sink, partition=0)
        await first.abort_transaction()  # fenced: no EndTxn, nothing raised
        await second.begin_transaction()
        for future in await _send(second, sink, 0, [b"second"]):
            await future
        await second.commit_transaction()
    finally:
        await first.stop()
        await second.stop()
    assert [r.value for r in await read_all(sink)] == [b"second"]


async def _deliver_and_commit(
    producer: TransactionalProducer, topic: str, partition: int, value: bytes
) -> None:
    for future in await _send(producer, topic, partition, [value]):
        await future
    await producer.commit_transaction()


async def _commit(
    producer: TransactionalProducer,
    sink: str,
    value: bytes,
    offsets: dict[TopicPartition, int],
    group: str,
) -> None:
    await producer.begin_transaction()
    try:
        for future in await _send(producer, sink, 0, [value]):
            await future
        await producer.send_offsets_to_transaction(offsets, group)
        await producer.commit_transaction()
    except BaseException:
        await producer.abort_transaction()
        raise


async def test_the_group_coordinator_refuses_an_old_generation_and_a_member_without_one(
    uid: str, v2: bool
) -> None:
    source, sink, group = f"txg-in-{uid}", f"txg-out-{uid}", f"txg-{uid}"
    await create_topic(source, 2)
    await create_topic(sink, 1)
    tp0 = TopicPartition(source, 0)
    async with member(source, group) as a:
        await joined(a, 2)
        current = group_metadata(a)
        producer = _producer(f"txg-a-{uid}", lambda: group_metadata(a), v2=v2)
        await producer.start()
        try:
            await _commit(producer, sink, b"current", {tp0: 5}, group)
        finally:
            await producer.stop()

        async def at(offset: int) -> bool:
            return await committed(group, source) == {0: offset}

        await wait_until(lambda: at(5), within=10, what="the committed offset")
        async with member(source, group) as b:  # a second member: a new generation
            await wait_until(
                lambda: group_metadata(a).generation_id > current.generation_id,
                within=60,
                what="a rebalance to a new generation",
            )
            await joined(b)
            for stale in (current, GroupMetadata(group, -1, "", None)):
                zombie = _producer(f"txg-z-{uid}", lambda s=stale: s, v2=v2)
                await zombie.start()
                try:
                    with pytest.raises(GroupFenced) as refused:
                        await _commit(zombie, sink, b"stale", {tp0: 9}, group)
                finally:
                    await zombie.stop()
                assert refused.value.code in internals.GROUP_FENCING_ERRORS
            # a cooperative member's request built just before the group moved on is retried
            # with the generation the same member holds by then
            built: list[GroupMetadata] = []

            def first_stale() -> GroupMetadata:
                built.append(current if not built else group_metadata(a))
                return built[-1]

            producer = _producer(f"txg-c-{uid}", first_stale, newer=True, v2=v2)
            await producer.start()
            try:
                await _commit(producer, sink, b"retried", {tp0: 6}, group)
            finally:
                await producer.stop()
            assert built[0] == current and built[-1].generation_id > current.generation_id
            await wait_until(lambda: at(6), within=10, what="the retried commit")
    # the refused transactions' records never show (their ids registered again abort them)
    again = _producer(f"txg-z-{uid}", v2=v2)
    await again.start()
    await again.stop()
    assert [r.value for r in await read_all(sink)] == [b"current", b"retried"]
