"""Checkpoint: make processed input offsets durable only once their outputs are.

At-least-once, every `commit_interval`, on revoke and on shutdown:

1. Snapshot each task's committable offset (the offset after its last processed event). No
   await happens between reading the offsets and step 2 taking the open batches, so every
   output of those events is in the collectors.
2. Flush every task's collector: hand open batches to the producer and wait for the broker's
   acknowledgement of all of them. A delivery failure raises here and nothing is committed.
3. Commit the snapshot to the consumer group.

A crash before step 3 replays the events since the last commit (duplicates, never loss).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition

from streamkit.runtime.task import Task

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self._lock = asyncio.Lock()  # the commit loop and a revoke never interleave
        self._committed: dict[TopicPartition, int] = {}
        self.commits = 0
        self.last_duration = 0.0

    async def commit(self, tasks: Iterable[Task]) -> None:
        async with self._lock:
            started = time.monotonic()
            tasks = list(tasks)
            # 1. snapshot committable offsets
            offsets = {}
            for task in tasks:
                tp = TopicPartition(task.topic.name, task.partition)
                if task.committable is not None and task.committable != self._committed.get(tp):
                    offsets[tp] = task.committable
            # 2. flush outputs (and dead letters) of every task
            await asyncio.gather(*(task.collector.flush() for task in tasks))
            # 3. commit the snapshot
            if offsets:
                try:
                    await self._consumer.commit(offsets)
                except CommitFailedError as exc:
                    # The group moved on: the new owners replay from the last commit.
                    log.warning("checkpoint not committed, group rebalanced: %s", exc)
                    return
                self._committed.update(offsets)
                self.commits += 1
            self.last_duration = time.monotonic() - started
            if offsets:
                log.debug("checkpoint: %d partitions in %.3fs", len(offsets), self.last_duration)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions we no longer own: another owner may commit them past our record."""
        for tp in tps:
            self._committed.pop(tp, None)
