"""The raw ceiling: a plain aiokafka consume → produce loop (our virtualenv) with the running
sums in a dict, no repartition hop and no durable state: `getmany`, orjson decode/encode, the
key's partition (murmur2, memoized), one `BatchBuilder` per output partition per fetch, flush +
commit every BENCH_COMMIT_INTERVAL. At-least-once only."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

env = os.environ


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        env["BENCH_INPUT"],
        bootstrap_servers=env["BENCH_BOOTSTRAP"],
        group_id=env["BENCH_GROUP"],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=env["BENCH_BOOTSTRAP"], acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    output, every = env["BENCH_OUTPUT"], float(env["BENCH_COMMIT_INTERVAL"])
    last = time.monotonic()
    pending: list[Any] = []
    totals: dict[str, float] = {}
    partition_of: dict[bytes, int] = {}
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            builders: dict[int, Any] = {}
            for records in batches.values():
                for rec in records:
                    p = orjson.loads(rec.value)
                    user = p["user_id"]
                    key = user.encode()
                    partition = partition_of.get(key, -1)
                    if partition < 0:
                        partition = partition_of[key] = (murmur2(key) & 0x7FFFFFFF) % 4
                    total = totals[user] = totals.get(user, 0.0) + p["amount"]
                    builder = builders.get(partition) or builders.setdefault(
                        partition, producer.create_batch()
                    )
                    value = orjson.dumps({"user_id": user, "total": total})
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        pending.append(
                            await producer.send_batch(builder, output, partition=partition)
                        )
                        builders[partition] = builder = producer.create_batch()
                        builder.append(key=key, value=value, timestamp=None)
            for partition, builder in builders.items():
                pending.append(await producer.send_batch(builder, output, partition=partition))
            if time.monotonic() - last >= every:
                await asyncio.gather(*pending)
                pending = []
                await consumer.commit()
                last = time.monotonic()
    finally:
        await asyncio.gather(*pending)
        await consumer.commit()
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
