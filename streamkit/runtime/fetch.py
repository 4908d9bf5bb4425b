"""The fetch loop: batched `getmany` for the partitions whose tasks have room, then dispatch.

Backpressure without pause/resume calls: a partition whose task holds
`max_buffered_per_partition` unprocessed records is simply left out of the next `getmany`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from streamkit.runtime.task_manager import TaskManager
from streamkit.settings import Settings

FETCH_TIMEOUT_MS = 100
ROOM_WAIT = 0.5


async def fetch_loop(consumer: Any, tasks: TaskManager, settings: Settings) -> None:
    limit = settings.max_buffered_per_partition
    max_records = settings.max_poll_records
    while True:
        if not tasks.tasks:
            # Nothing assigned (yet): keep polling so the group sees us alive.
            batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=max_records)
            _rewind(consumer, tasks.dispatch(batches))
            continue
        ready = tasks.partitions_with_room(limit)
        if not ready:
            tasks.room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tasks.room.wait(), ROOM_WAIT)
            continue
        batches = await consumer.getmany(
            *ready, timeout_ms=FETCH_TIMEOUT_MS, max_records=max_records
        )
        _rewind(consumer, tasks.dispatch(batches))
        await _note_ends(consumer, tasks, ready)


async def _note_ends(consumer: Any, tasks: TaskManager, tps: list[TopicPartition]) -> None:
    """For the tasks that keep event time: whether each fetched partition is read to its end
    (the position reached the last stable offset of the last fetch response). A partition
    whose fetch lags (a starved process, a slow broker) is then never taken for an idle one:
    its watermark is not left out while its records are on their way."""
    by_input = tasks.by_input
    for tp in tps:
        task = by_input.get(tp)
        clock = None if task is None else task.clock
        if clock is None:
            continue
        end = consumer.last_stable_offset(tp)
        try:
            position = await consumer.position(tp)
        except IllegalStateError:  # revoked meanwhile
            continue
        clock.note_end(tp.topic, end is not None and position >= end)


def _rewind(consumer: Any, positions: dict[TopicPartition, int]) -> None:
    for tp, offset in positions.items():
        with contextlib.suppress(IllegalStateError):  # no longer assigned: nothing to keep
            consumer.seek(tp, offset)
