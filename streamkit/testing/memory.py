"""In-memory Kafka for the testing kit: topic logs, a producer, a consumer group's commits, a
changelog restorer, and a virtual wall clock. Each is the smallest stand-in for what the
runtime talks to (aiokafka's producer and consumer, the ChangelogReader, the system clock), so
the runtime's own tasks, collectors and checkpointer run unchanged on top of them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka.structs import ConsumerRecord, RecordMetadata, TopicPartition

from streamkit.state.store import PartitionStore

CREATE_TIME = 0  # the record timestamp type the producer sets

Headers = Sequence[tuple[str, bytes]]


class VirtualClock:
    """Processing time that moves only when told (`advance`). `time()` starts at
    `start` epoch seconds; `monotonic()` at 0."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.elapsed = 0.0

    def time(self) -> float:
        return self.start + self.elapsed

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time never goes back: advance by {seconds} s")
        self.elapsed += seconds

    def now_ms(self) -> int:
        return round(self.time() * 1000)


class MemoryLog:
    """Topics as lists of records per partition, plus every topic's records in the order
    they were written (across partitions)."""

    def __init__(self) -> None:
        self._partitions: dict[str, list[list[ConsumerRecord[bytes, bytes]]]] = {}
        self._written: dict[str, list[ConsumerRecord[bytes, bytes]]] = {}

    def create(self, topic: str, partitions: int) -> None:
        if topic not in self._partitions:
            self._partitions[topic] = [[] for _ in range(partitions)]
            self._written[topic] = []

    def partitions(self, topic: str) -> int:
        return len(self._logs(topic))

    def _logs(self, topic: str) -> list[list[ConsumerRecord[bytes, bytes]]]:
        logs = self._partitions.get(topic)
        if logs is None:
            raise KeyError(f"topic {topic} does not exist in the test driver")
        return logs

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        headers: Headers,
    ) -> ConsumerRecord[bytes, bytes]:
        logs = self._logs(topic)
        if not 0 <= partition < len(logs):
            raise ValueError(f"topic {topic} has {len(logs)} partitions, not {partition + 1}")
        log = logs[partition]
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic,
            partition,
            len(log),
            timestamp_ms,
            CREATE_TIME,
            key,
            value,
            None,
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            tuple(headers),
        )
        log.append(record)
        self._written[topic].append(record)
        return record

    def read(self, topic: str, partition: int, start: int) -> list[ConsumerRecord[bytes, bytes]]:
        return self._logs(topic)[partition][start:]

    def end(self, topic: str, partition: int) -> int:
        return len(self._logs(topic)[partition])

    def written(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of `topic`, in the order they were written."""
        self._logs(topic)
        return self._written[topic]

    def topics(self) -> list[str]:
        return list(self._partitions)


class MemoryBatch:
    """What the collector appends to (in place of aiokafka's BatchBuilder); never full."""

    def __init__(self) -> None:
        self.records: list[tuple[int | None, bytes | None, bytes | None, Headers]] = []

    def append(
        self, *, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Headers
    ) -> bool:
        self.records.append((timestamp, key, value, headers))
        return True

    def record_count(self) -> int:
        return len(self.records)


class MemoryProducer:
    """The producer calls a RecordCollector makes: `create_batch`, `send_batch` and `flush`. A
    batch is written at once; its delivery future is already done. Records without a
    timestamp get the clock's time, as a producer stamps them with its own."""

    def __init__(self, log: MemoryLog, clock: VirtualClock) -> None:
        self._log = log
        self._clock = clock
        self.batches = 0
        self.append_time: set[str] = set()  # topics stamped on arrival (LogAppendTime)

    def create_batch(self) -> MemoryBatch:
        return MemoryBatch()

    async def send_batch(
        self, batch: MemoryBatch, topic: str, *, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        now = self._clock.now_ms()
        first = self._log.end(topic, partition)
        for timestamp, key, value, headers in batch.records:
            stamp = now if timestamp is None or topic in self.append_time else timestamp
            self._log.append(topic, partition, key, value, stamp, headers)
        self.batches += 1
        done: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        tp = TopicPartition(topic, partition)
        done.set_result(RecordMetadata(topic, partition, tp, first, None, CREATE_TIME, 0))
        return done

    async def flush(self) -> None:
        """Nothing is ever in flight."""


class MemoryGroup:
    """The consumer group's committed offsets (what the checkpointer commits to)."""

    def __init__(self) -> None:
        self.offsets: dict[TopicPartition, int] = {}
        self.metadata: dict[TopicPartition, str] = {}  # committed with them: partition times
        self.commits = 0

    async def commit(self, offsets: Mapping[TopicPartition, int | tuple[int, str]]) -> None:
        for tp, at in offsets.items():
            self.offsets[tp], self.metadata[tp] = at if isinstance(at, tuple) else (at, "")
        self.commits += 1


class MemoryRestorer:
    """Restores a task's store from the in-memory changelogs, from the offset after the one
    the store reflects (the whole changelog for a new store), as the ChangelogReader does
    from Kafka."""

    def __init__(self, log: MemoryLog) -> None:
        self._log = log
        self.replayed = 0

    async def restore(self, store: PartitionStore, sources: dict[str, TopicPartition]) -> int:
        stored = store.offsets()
        changes: dict[str, dict[bytes, bytes | None]] = {}
        reached: dict[tuple[str, int], int] = {}
        count = 0
        for table, tp in sources.items():
            start = stored.get((tp.topic, tp.partition), -1) + 1
            records = self._log.read(tp.topic, tp.partition, start)
            if not records:
                continue
            rows = changes.setdefault(table, {})
            for record in records:
                if record.key is not None:
                    rows[record.key] = record.value  # the last value of a key wins
            reached[(tp.topic, tp.partition)] = records[-1].offset
            count += len(records)
        if count:
            await asyncio.to_thread(store.apply, changes, reached)
        self.replayed += count
        return count
