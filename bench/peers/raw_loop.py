"""The raw loops' one relay: a plain aiokafka consume → produce loop, no durability beyond
at-least-once. `getmany`, a per-record function (decode, whatever state, encode), the key's
partition (murmur2, memoized), one `BatchBuilder` per output partition per fetch, and every
BENCH_COMMIT_INTERVAL: wait for the sends, then commit the consumer's offsets."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

env = os.environ
PARTITIONS = 4

# a record's value → (output key, output value)
Step = Callable[[bytes], tuple[bytes, bytes]]


def consumer(topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=env["BENCH_BOOTSTRAP"],
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


def producer() -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=env["BENCH_BOOTSTRAP"], acks="all", linger_ms=5, max_batch_size=256 * 1024
    )


async def relay(
    source: AIOKafkaConsumer, sink: AIOKafkaProducer, output: str, step: Step, stop: asyncio.Event
) -> None:
    """Consume, apply `step`, produce to `output` by key, commit every commit interval."""
    every = float(env["BENCH_COMMIT_INTERVAL"])
    last = time.monotonic()
    pending: list[Any] = []
    partition_of: dict[bytes, int] = {}
    try:
        while not stop.is_set():
            batches = await source.getmany(timeout_ms=100, max_records=2000)
            builders: dict[int, Any] = {}
            for records in batches.values():
                for rec in records:
                    key, value = step(rec.value)
                    partition = partition_of.get(key, -1)
                    if partition < 0:
                        partition = partition_of[key] = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
                    builder = builders.get(partition) or builders.setdefault(
                        partition, sink.create_batch()
                    )
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        pending.append(await sink.send_batch(builder, output, partition=partition))
                        builders[partition] = builder = sink.create_batch()
                        builder.append(key=key, value=value, timestamp=None)
            for partition, builder in builders.items():
                pending.append(await sink.send_batch(builder, output, partition=partition))
            if time.monotonic() - last >= every:
                await asyncio.gather(*pending)
                pending = []
                await source.commit()
                last = time.monotonic()
    finally:
        await asyncio.gather(*pending)
        await source.commit()
