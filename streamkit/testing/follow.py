"""The testing kit's side of tables read from topics: what was written to their topics is
applied as a worker's `global` and `sources` background tasks would (before each hand-over of
records to the tasks, so a record written before another is seen before it)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from aiokafka.structs import TopicPartition

from streamkit.state.source_tables import applied_offset, source_of
from streamkit.testing.memory import MemoryLog


def follow_global(app: Any, log: MemoryLog, positions: dict[TopicPartition, int]) -> bool:
    """Global tables read what was written to their topics since `positions` (moved on)."""
    moved = False
    for gt in app.global_tables.values():
        for p in range(gt.source.partitions or 1):
            tp = TopicPartition(gt.source.name, p)
            records = log.read(tp.topic, p, positions.get(tp, 0))
            if records:
                gt.apply([(r.key, r.value) for r in records])
                positions[tp] = records[-1].offset + 1
                moved = True
    return moved


def follow_sources(tasks: Iterable[Any], log: MemoryLog) -> bool:
    """Tables read from a topic (`source=`, and versioned tables fed from one) apply what was
    written to it since the offset their partition reflects. They are then read to their
    end before any record is handed over: a task never holds a record for them."""
    moved = False
    for task in tasks:
        for part in task.tables.values():
            topic = source_of(part)
            if topic is None:
                continue
            records = log.read(topic, part.partition, applied_offset(part) + 1)
            if records:
                last = records[-1].offset
                if part.table.versioned is not None:
                    rows = [(r.key, r.value) for r in records]
                    times = [r.timestamp for r in records]
                    part.table.versioned.partition(part).apply_source(rows, times, last)
                else:
                    part.apply_source([(r.key, r.value) for r in records], last)
                moved = True
            if part.follow is not None:
                part.follow.caught_up_at = math.inf
    return moved
