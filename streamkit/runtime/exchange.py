"""Routing at a stage's exit: where key_by, shuffle and rebalance send each value.

A router is per task (per producing partition), so rebalance's round-robin counter and
shuffle's random generator are the task's own: rebalance counts differ by at most one per task.
"""

from __future__ import annotations

import random
from typing import Any

from streamkit.keys import partition_for_key
from streamkit.runtime.collector import RecordCollector
from streamkit.streams import ExchangeNode
from streamkit.topics import Topic


class Router:
    def __init__(self, exchange: ExchangeNode, output: Topic, producer_partition: int) -> None:
        self.exchange = exchange
        self.output = output
        self.topic = output.name
        self._count = output.partitions or 1
        self._next = producer_partition % self._count  # tasks start at different partitions
        seed = exchange.seed
        self._random = random.Random(
            None if seed is None else seed * 1_000_003 + producer_partition
        )
        self._key = exchange.key
        self._kind = exchange.kind

    def route(
        self, value: Any, rec: Any, collector: RecordCollector, event_ts: int | None = None
    ) -> bool:
        """Append `value` (from the consumed record `rec`) for its next partition, stamped
        with the event time if known (else `rec`'s timestamp); True when a batch filled up."""
        output = self.output
        key: bytes | None
        if self._kind == "key_by":
            assert self._key is not None
            key = output.key_codec.encode(self._key(value))
            partition = partition_for_key(key, self._count)
        elif self._kind == "rebalance":
            key = rec.key
            partition = self._next
            self._next = (partition + 1) % self._count
        else:  # shuffle
            key = rec.key
            partition = self._random.randrange(self._count)
        return collector.append(
            self.topic,
            key,
            output.encode_value(value),
            headers=rec.headers,
            timestamp_ms=rec.timestamp if event_ts is None else event_ts,
            partition=partition,
        )
