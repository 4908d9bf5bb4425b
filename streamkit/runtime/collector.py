"""RecordCollector: one task's outputs, batched per destination partition, handed to a producer.

`append` is synchronous and cheap (encode is done by the caller, the record goes into an
aiokafka `BatchBuilder`); `submit` hands open batches to the producer without waiting for the
broker; `flush` submits and then waits for every delivery, raising the first failure. A task
owns one collector, so under exactly-once its outputs can be bound to its own transaction.
"""

from __future__ import annotations

import asyncio
import itertools
from contextvars import ContextVar
from typing import Any

from aiokafka.partitioner import murmur2

from streamkit.events import Headers

# The collector of the task whose agent code is running (set once per task coroutine).
CURRENT_COLLECTOR: ContextVar[RecordCollector] = ContextVar("streamkit_collector")


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: `toPositive(murmur2(key)) % partitions`, as in Java."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class RecordCollector:
    def __init__(self, producer: Any, partition_counts: dict[str, int]) -> None:
        self._producer = producer
        self._partition_counts = partition_counts
        self._open: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[str, int, Any]] = []
        self._in_flight: list[tuple[int, asyncio.Future[Any]]] = []  # (records, future)
        self._round_robin: dict[str, itertools.cycle[int]] = {}
        self._submit_lock = asyncio.Lock()  # one submitter at a time keeps partition order
        self.records_out = 0

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Add one encoded record to the open batch of its destination partition."""
        if partition is None:
            partition = self._choose_partition(topic, key)
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self._producer.create_batch()
        meta = builder.append(timestamp=timestamp_ms, key=key, value=value, headers=headers or [])
        if meta is None:  # batch full: queue it, start another
            self._full.append((topic, partition, builder))
            builder = self._open[tp] = self._producer.create_batch()
            meta = builder.append(
                timestamp=timestamp_ms, key=key, value=value, headers=headers or []
            )
            if meta is None:
                raise ValueError(f"record for {topic} is larger than max_batch_size")
        self.records_out += 1

    def _choose_partition(self, topic: str, key: bytes | None) -> int:
        count = self._partition_counts[topic]
        if key is not None:
            return partition_for_key(key, count)
        cycle = self._round_robin.get(topic)
        if cycle is None:
            cycle = self._round_robin[topic] = itertools.cycle(range(count))
        return next(cycle)

    @property
    def has_full_batches(self) -> bool:
        return bool(self._full)

    async def submit_full(self) -> None:
        """Hand the batches that filled up to the producer."""
        async with self._submit_lock:
            while self._full:
                topic, partition, builder = self._full.pop(0)
                count = builder.record_count()
                fut = await self._producer.send_batch(builder, topic, partition=partition)
                self._in_flight.append((count, fut))

    async def submit(self) -> None:
        """Hand every batch, full or not, to the producer (no waiting for the broker)."""
        self._full.extend((t, p, b) for (t, p), b in self._open.items())
        self._open = {}
        await self.submit_full()

    async def flush(self) -> dict[tuple[str, int], int]:
        """Submit everything and wait until the broker acknowledged it all. Returns the offset
        of the last record written to each partition (the changelog offsets state reflects)."""
        await self.submit()
        in_flight, self._in_flight = self._in_flight, []
        last: dict[tuple[str, int], int] = {}
        if in_flight:
            metas = await asyncio.gather(*(fut for _, fut in in_flight))
            for (count, _), meta in zip(in_flight, metas, strict=True):
                if meta is not None and meta.offset is not None:
                    tp = (meta.topic, meta.partition)
                    last[tp] = max(last.get(tp, -1), meta.offset + count - 1)
        return last

    def discard(self) -> None:
        """Drop what was not submitted yet (a fenced or failed task's outputs)."""
        self._open = {}
        self._full = []
        self._in_flight = []
