"""The testing kit's side of tables read from topics: what was written to their topics is
applied as a worker's `global` and `sources` background tasks would (before each hand-over of
records to the tasks, so a record written before another is seen before it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.structs import TopicPartition

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
    """Tables read from a topic (`source=`) apply what was written to it since the offset
    their partition reflects."""
    moved = False
    for task in tasks:
        for part in task.tables.values():
            if not part.table.source:
                continue
            records = log.read(part.table.changelog.name, part.partition, part.source_offset + 1)
            if records:
                part.apply_source([(r.key, r.value) for r in records], records[-1].offset)
                moved = True
    return moved
