"""streamkit's own transactional producer (`aiokafka_internals/txn_producer.py`), under
transaction versions 2 and 1 (its requests' codecs: `test_codecs.py`).

Against the real broker: many transactions over many partitions, several batches a partition
in one transaction (sequence numbers carried from batch to batch and transaction to
transaction), read back exactly once and in order; an aborted transaction never shows; a
second producer with the same transactional id fences the first (its commit fails, its
records never show); the group coordinator refuses the offsets of an old generation and of a
member without one, and takes the current member's. Without a broker: the start's feature
probe asks another broker when one is down."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaError, NodeNotReadyError, ProducerFenced
from aiokafka.structs import TopicPartition

from streamkit import aiokafka_internals as internals
from streamkit.aiokafka_internals import (
    GroupFenced,
    GroupMetadata,
    group_metadata,
    produce_queue,
    txn_producer,
)
from streamkit.aiokafka_internals.produce import ProduceBatches
from streamkit.aiokafka_internals.txn_coordinator import TxnCoordinator
from streamkit.aiokafka_internals.txn_producer import TransactionalProducer
from tests.kafkahelp import bootstrap, committed, create_topic, read_all, wait_until
from tests.test_aiokafka_internals import joined, member

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


async def test_a_batch_handed_over_as_the_transaction_fails_is_refused_not_stranded(
    uid: str, v2: bool
) -> None:
    """A batch whose topic the producer has no metadata for yet waits for it; if the
    transaction fails meanwhile (here: offsets refused, a zombie's), the batch is refused, and
    the abort does not wait for a batch that will never be sent (it did: 5 s, the abort's
    timeout, twice per fenced checkpoint)."""
    sink, group = f"txr-{uid}", f"txr-{uid}"
    producer = _producer(f"txr-{uid}", lambda: GroupMetadata(group, -1, "", None), v2=v2)
    await producer.start()
    try:
        await create_topic(sink, 1)  # after the start: not in the producer's metadata
        await producer.begin_transaction()
        batch = producer.create_batch()
        batch.append(timestamp=None, key=None, value=b"late")
        sending = asyncio.create_task(producer.send_batch(batch, sink, partition=0))
        await asyncio.sleep(0)  # it is waiting for the topic's metadata now
        with pytest.raises(GroupFenced):
            await producer.send_offsets_to_transaction({TopicPartition(sink, 0): 1}, group)
        # refused, or (transaction version 1: the metadata may come while AddOffsetsToTxn is
        # answered, before the refusal) queued and then failed with the transaction
        with pytest.raises(GroupFenced):
            await asyncio.wait_for(await sending, 2.0)
        await asyncio.wait_for(producer.abort_transaction(), 2.0)
    finally:
        await producer.stop()
    assert await read_all(sink) == []


async def test_a_checkpoints_batches_go_in_requests_of_a_bounded_size(uid: str) -> None:
    """Hundreds of partitions' batches handed over at once (`send_batches`) go in several
    Produce requests of about `MAX_REQUEST_BYTES` each, a few in flight at a time, never one
    request of every batch (tens of megabytes at hundreds of partitions, beyond the broker's
    `socket.request.max.bytes` at more); all of them land, once."""
    sink, partitions = f"txq-{uid}", 40
    await create_topic(sink, partitions)
    producer = TransactionalProducer(
        {"bootstrap_servers": bootstrap()},
        client_id=f"test-txq-{uid}",
        transactional_id=f"txq-{uid}",
        transaction_timeout_ms=10_000,
        max_batch_size=256 * 1024,
        retry_backoff_ms=20,
        group_metadata=lambda: GroupMetadata("none", -1, "", None),
    )
    await producer.start()
    sizes: list[int] = []
    in_flight = most = 0
    send = producer._client.send

    async def counting(node: int, request: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, most
        if isinstance(request, ProduceBatches):
            sizes.append(len(request.build(None).encode()))  # type: ignore[arg-type]
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await send(node, request, **kwargs)
            finally:
                in_flight -= 1
        return await send(node, request, **kwargs)

    producer._client.send = counting
    try:
        await producer.begin_transaction()
        batches = []
        for p in range(partitions):
            batch = producer.create_batch()
            for i in range(200):  # ~200 KB a partition: ~8 MB in all
                assert batch.append(
                    timestamp=None, key=None, value=b"%d:%d:" % (p, i) + bytes(1000)
                )
            batches.append((sink, p, batch))
        futures = await producer.send_batches(batches)
        await asyncio.gather(*futures)
        await producer.commit_transaction()
    finally:
        await producer.stop()
    limit = produce_queue.MAX_REQUEST_BYTES
    assert len(sizes) >= 8 * 1024 * 1024 // (2 * limit)  # split, not one request of ~8 MB
    assert max(sizes) < limit + 300 * 1024  # a request stops at the batch that reaches it
    assert 1 < most <= produce_queue.MAX_IN_FLIGHT
    records = await read_all(sink, expect=partitions * 200)  # (the markers land after the commit)
    assert len(records) == partitions * 200
    assert len({r.value for r in records}) == partitions * 200


async def test_a_hand_over_waits_while_the_buffer_is_full(
    uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches handed over and not yet delivered count against `BUFFER_BYTES`: past it the
    next hand-over waits until deliveries make room (under a backlog the tasks go at the
    broker's pace, and a checkpoint waits for a bounded amount)."""
    monkeypatch.setattr(txn_producer, "BUFFER_BYTES", 1)  # one batch fills it
    sink = f"txb-{uid}"
    await create_topic(sink, 2)
    producer = _producer(f"txb-{uid}")
    await producer.start()
    try:
        await producer.begin_transaction()
        first = producer.create_batch()
        first.append(timestamp=None, key=None, value=b"first")
        (delivered,) = await producer.send_batches([(sink, 0, first)])
        second = producer.create_batch()
        second.append(timestamp=None, key=None, value=b"second")
        waiting = asyncio.create_task(producer.send_batches([(sink, 1, second)]))
        await asyncio.sleep(0)  # the sender has not even sent the first batch yet
        assert not waiting.done() and not delivered.done()
        await delivered
        (later,) = await asyncio.wait_for(waiting, 10)
        await later
        await producer.commit_transaction()
    finally:
        await producer.stop()
    records = await read_all(sink, expect=2)
    assert sorted(r.value for r in records) == [b"first", b"second"]


# -- without a broker ------------------------------------------------------------------------------


class _Versions:
    def __init__(self) -> None:
        self.features = {"transaction.version": 2}

    def supports(self, api_key: int, version: int) -> bool:
        return True


class _Answer:
    versions = _Versions()


class _Broker:
    def __init__(self, node: int) -> None:
        self.nodeId = node


class _ClusterWithADeadNode:
    """Three brokers in the metadata, node 3 just killed: it refuses every request."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.cluster = self

    def brokers(self) -> set[_Broker]:
        return {_Broker(1), _Broker(2), _Broker(3)}

    async def send(self, node: int, request: Any, **kwargs: Any) -> Any:
        self.asked.append(node)
        if node == 3:
            raise NodeNotReadyError(f"node {node} is not ready")
        return _Answer()

    def force_metadata_update(self) -> None:
        pass


async def test_the_feature_probe_asks_another_broker_when_one_is_down() -> None:
    """The producer's start asks a broker for the cluster's features: one killed a moment
    ago, still in the metadata, does not fail the start (it did: a worker assigned
    partitions while the three-broker chaos run had a node down stopped with
    NodeNotReadyError)."""
    for _ in range(20):  # whatever order the brokers are tried in
        client = _ClusterWithADeadNode()
        coordinator = TxnCoordinator(
            client,
            "t",
            transaction_timeout_ms=10_000,
            backoff=0.01,
            deadline=1.0,
            group_metadata=lambda: GroupMetadata("g", -1, "", None),
            newer_generation=False,
        )
        await coordinator.probe()
        assert coordinator.v2
        assert client.asked[-1] != 3 and client.asked.count(3) <= 1
