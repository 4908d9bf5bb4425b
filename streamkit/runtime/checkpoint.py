"""Checkpoint: make processed input offsets durable only once their outputs are.

At-least-once, every `commit_interval`, on revoke and on shutdown:

1. Snapshot each task's committable offset (the offset after its last processed event; with
   map_async calls in flight, of its first unfinished event) with its partition time (event
   time, a source topic: the commit metadata `t=`) and take its tables' dirty keys.
   No await separates the two, so the snapshot is consistent.
2. Append the dirty keys to their changelog partitions (the task's collector). Every output
   of the snapshot's events is already in the collectors. Sinks beyond Kafka write their
   rows with the offsets they reach, each in one transaction of its destination
   (`runtime/sinks.py`): a destination may get ahead of the group's offsets, never behind.
3. Flush every task's collector: hand open batches to the producer and wait for the broker's
   acknowledgement of all of them. A delivery failure raises here and nothing is committed.
4. Commit the snapshot's offsets to the consumer group.
5. Per task, when its store is due (`state_write_interval` since its last write, its
   unwritten rows at the cache's bound, or the task's last checkpoint): write every change
   its store lacks to it in one SQLite transaction, with the changelog offsets they reflect
   and the input offset. Until then the changes wait in memory, where reads find them; a
   join's buffered rows and a time window's wait past the interval too (`state/deferred.py`).

A crash before step 4 replays the events since the last commit (duplicates, never loss); a
crash between 4 and 5, or between two writes of a store, costs a changelog replay at restore,
nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition

from streamkit.runtime import faults
from streamkit.runtime.sinks import flush_sinks
from streamkit.runtime.task import Task, TaskState

log = logging.getLogger(__name__)


def partition_times(task: Task) -> dict[TopicPartition, str]:
    """The commit metadata of the task's inputs, taken with its offsets (a task stopped at an
    event boundary): each source partition's time, as far as the events before its offset
    go (`EventClock.partition_time`). None while map_async calls are in flight: events past
    the offset have been seen then."""
    clock = task.clock
    if clock is None or (task.calls is not None and task.calls.outstanding):
        return {}
    return {itp: clock.partition_time(itp.topic) for itp in task.inputs}


class Checkpointer:
    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self._lock = asyncio.Lock()  # the commit loop and a revoke never interleave
        self._committed: dict[TopicPartition, int] = {}
        self.commits = 0
        self.checkpoints = 0
        self.total_duration = 0.0  # seconds spent in checkpoints (benchmarks read it)
        self.last_duration = 0.0
        self.last_at: float | None = None  # wall-clock time of the last checkpoint
        self.commit_failures = 0
        self.on_checkpoint: Callable[[float], None] | None = None  # metrics: the duration
        self.last_written: dict[tuple[str, int], int] = {}  # the last checkpoint's, per partition

    def between_checkpoints(self) -> asyncio.Lock:
        """Held while a checkpoint runs: `async with` it to act between two checkpoints."""
        return self._lock

    async def commit(self, tasks: Iterable[Task]) -> None:
        async with self._lock:
            await self.commit_held(tasks)

    async def commit_held(self, tasks: Iterable[Task]) -> None:
        """`commit`, the caller holding `between_checkpoints()`."""
        started = time.monotonic()
        tasks = list(tasks)
        # 1. snapshot committable offsets and dirty state; 2. changelog records
        offsets = {}
        times: dict[TopicPartition, str] = {}
        changes = {}
        for task in tasks:
            tp = TopicPartition(task.topic.name, task.partition)
            for itp, offset in task.offsets().items():
                if offset != self._committed.get(itp):
                    offsets[itp] = offset
            times.update(partition_times(task))
            if task.state is not None and task.tables:
                changes[tp] = task.state.snapshot(task.collector)
        await flush_sinks(tasks)  # their refused rows' dead letters join the flush below
        # 3. flush outputs, dead letters and changelog records of every task
        written = await asyncio.gather(*(task.collector.flush() for task in tasks))
        self.last_written = {tp: at for w in written for tp, at in w.items()}
        # 4. commit the snapshot's offsets
        faults.reached("crash-before-commit")
        if offsets:
            try:
                await self._consumer.commit(
                    {tp: (at, times.get(tp, "")) for tp, at in offsets.items()}
                )
                self._committed.update(offsets)
                self.commits += 1
            except CommitFailedError as exc:
                self.commit_failures += 1
                # The group moved on: the new owners replay from the last commit.
                log.warning("checkpoint not committed, group rebalanced: %s", exc)
        # 5. the store, when due: the changes it lacks with the offsets they reflect, one
        # SQLite transaction per task
        for task, last in zip(tasks, written, strict=True):
            if task.state is None:
                continue
            tp = TopicPartition(task.topic.name, task.partition)
            if tp in changes:
                task.state.record(last, (tp.topic, tp.partition, task.committable or 0))
            if task.state.due(final=task.status is TaskState.CLOSED):
                await task.state.write()
        self.last_duration = time.monotonic() - started
        self.checkpoints += 1
        self.total_duration += self.last_duration
        self.last_at = time.time()
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.last_duration)
        if offsets:
            log.debug("checkpoint: %d partitions in %.3fs", len(offsets), self.last_duration)

    @property
    def committed(self) -> dict[TopicPartition, int]:
        """The input offsets this worker's checkpoints committed, per partition it owns."""
        return dict(self._committed)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions we no longer own: another owner may commit them past our record."""
        for tp in tps:
            self._committed.pop(tp, None)
