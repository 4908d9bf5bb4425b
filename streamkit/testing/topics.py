"""The in-memory topics of an app under the testing driver: created as a new broker would
create them, and written as a Java producer would write them."""

from __future__ import annotations

from typing import Any

from streamkit.app import App
from streamkit.events import Headers, Record
from streamkit.eventtime import to_ms
from streamkit.keys import partition_for_key
from streamkit.partitioning import resolve_partitions
from streamkit.testing.memory import MemoryLog, MemoryProducer, VirtualClock
from streamkit.testing.views import Output
from streamkit.topics import Topic


class MemoryTopics:
    def __init__(self, log: MemoryLog, producer: MemoryProducer, clock: VirtualClock) -> None:
        self.log = log
        self.producer = producer
        self.clock = clock
        self._round_robin: dict[str, int] = {}

    def create(self, app: App) -> None:
        """Every topic of the app, with its declared partition count or 1 (internal topics:
        their stage's count, co-partitioning checked as at a worker's start)."""
        stages = app.stages  # binds tables (and declares late topics) first
        outputs = {out.name for st in stages for out in st.outputs}
        outputs |= {t.changelog.name for st in stages for t in st.tables}
        for topic in app.topics.values():  # as a new broker would: the declared count, or 1
            if topic.name not in outputs and topic.partitions is None:
                topic.partitions = topic.declared_partitions or 1
        resolve_partitions(stages)
        for topic in app.topics.values():
            if topic.partitions is None:
                topic.partitions = topic.declared_partitions or 1
            self.log.create(topic.name, topic.partitions)
            if topic.config.get("message.timestamp.type") == "LogAppendTime":
                self.producer.append_time.add(topic.name)  # as the broker stamps them

    def append(
        self,
        topic: Topic,
        key: bytes | None,
        value: bytes | None,
        timestamp: Any,
        partition: int | None,
        headers: Headers | None = None,
    ) -> Output:
        """Write one record: partition by murmur2 of the key, round-robin without one;
        timestamp in epoch seconds or a datetime (default: the virtual clock)."""
        count = self.log.partitions(topic.name)
        if partition is None:
            if key is not None:
                partition = partition_for_key(key, count)
            else:
                partition = self._round_robin.get(topic.name, 0)
                self._round_robin[topic.name] = (partition + 1) % count
        ts = self.clock.now_ms() if timestamp is None else to_ms(timestamp)
        written = self.log.append(topic.name, partition, key, value, ts, headers or ())
        return Output.of(written, topic)

    def append_item(self, topic: Topic, item: Any) -> Output:
        """Write a value, or an `sk.Record(value, key=, headers=, timestamp_ms=)`, with the
        topic's codecs."""
        if not isinstance(item, Record):
            return self.append(topic, None, topic.encode_value(item), None, None)
        ts = None if item.timestamp_ms is None else item.timestamp_ms / 1000
        key, value = topic.encode_key(item.key), topic.encode_value(item.value)
        return self.append(topic, key, value, ts, None, item.headers)
