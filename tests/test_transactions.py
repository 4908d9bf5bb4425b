"""aiokafka's transactional producer against our broker: commit is visible under
read_committed together with the consumed offsets; abort is not."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tests.kafkahelp import bootstrap, committed, create_topic, produce, read_all


async def test_commit_is_visible_and_abort_is_not(uid: str) -> None:
    source, sink, group = f"tx-in-{uid}", f"tx-out-{uid}", f"tx-group-{uid}"
    await create_topic(source, 1)
    await create_topic(sink, 1)
    await produce(source, [b"a", b"b", b"c"])

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), transactional_id=f"tx-{uid}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(sink, b"committed-1")
            await producer.send(sink, b"committed-2")
            await producer.send_offsets_to_transaction({TopicPartition(source, 0): 2}, group)

        await producer.begin_transaction()
        await producer.send(sink, b"aborted-1")
        await producer.send_offsets_to_transaction({TopicPartition(source, 0): 3}, group)
        await producer.abort_transaction()

        async with producer.transaction():
            await producer.send(sink, b"committed-3")
    finally:
        await producer.stop()

    values = [r.value for r in await read_all(sink, expect=3)]
    assert values == [b"committed-1", b"committed-2", b"committed-3"]
    # The offsets sent in the committed transaction stand; those of the aborted one do not.
    assert await committed(group, source) == {0: 2}


async def test_the_restore_fetcher_skips_aborted_transactions_and_markers(uid: str) -> None:
    """The compacted-topic reader reads what a read_committed consumer reads: committed
    records of two producers interleaved with an aborted transaction, no transaction marker."""
    from streamkit.settings import load_settings
    from streamkit.state.compacted import CompactedReader

    topic = f"tx-log-{uid}"
    await create_topic(topic, 1)
    await produce(topic, [b"plain"], keys=[b"k0"])  # not transactional
    one = AIOKafkaProducer(bootstrap_servers=bootstrap(), transactional_id=f"tx1-{uid}")
    two = AIOKafkaProducer(bootstrap_servers=bootstrap(), transactional_id=f"tx2-{uid}")
    await one.start()
    await two.start()
    try:
        async with one.transaction():
            await one.send(topic, b"c1", key=b"k1")
        await two.begin_transaction()
        await two.send(topic, b"aborted", key=b"k1")
        async with one.transaction():
            await one.send(topic, b"c2", key=b"k2")
        await two.abort_transaction()
        async with two.transaction():
            await two.send(topic, b"c3", key=b"k3")
    finally:
        await one.stop()
        await two.stop()
    reader = CompactedReader(load_settings(), f"fetch-{uid}", "test")
    tp = TopicPartition(topic, 0)
    rows: list[tuple[bytes, bytes | None]] = []

    async def wipe(tp: TopicPartition, start: int) -> None:
        raise AssertionError("nothing vanished")

    try:
        await reader.start({tp: None}, wipe)
        for _ in range(50):
            got = (await reader.fetch(wipe))[tp]
            rows += got.rows
            if reader.positions[tp] >= got.last_stable > 0:
                break
    finally:
        await reader.close()
    assert rows == [(b"k0", b"plain"), (b"k1", b"c1"), (b"k2", b"c2"), (b"k3", b"c3")]
    expected = [(r.key, r.value) for r in await read_all(topic)]
    assert rows == expected
