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
