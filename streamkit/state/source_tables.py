"""Tables read from a topic: `app.table("products", source=catalog)`, co-partitioned and read-only.

The topic (compacted, written by someone else) is the table's changelog: no extra topic. The
task of partition p restores from topic partition p like any table (to its end, before the
agent runs), then this module's background task (`sources`, one per worker) keeps following:
every `interval` it fetches what is new in the source partitions of the running tasks (through
the one reader of compacted topics, `CompactedReader`, as a restore) and applies it to their
tables. A vanished offset is handled as every reader does: the partition's rows are deleted
(tombstones into the table, written at the next checkpoint) and read again from the log start.
Rows become visible to the agent at once; they reach SQLite, with the source offset they
reflect, at the task's next checkpoint (`TaskTables.write`), so a restart replays only what was
not written.

Used by a stage whose input is co-partitioned with the topic: the same partition count (checked
at start) and the same key partitioning (a `key_by` on the topic's key; Kafka's murmur2 on both
sides), so partition p of the stage holds the keys of partition p of the table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from streamkit.settings import Settings
from streamkit.state.compacted import CompactedReader
from streamkit.state.table import TablePartition


class _Task(Protocol):
    @property
    def tables(self) -> Mapping[str, TablePartition]: ...


class RunningTasks(Protocol):
    """The worker's running tasks (`runtime.task_manager.TaskManager`; state/ imports nothing
    from runtime/)."""

    @property
    def tasks(self) -> Mapping[Any, _Task]: ...


log = logging.getLogger(__name__)


def following(tasks: RunningTasks) -> dict[TopicPartition, list[TablePartition]]:
    """The source partitions the running tasks read, and the table partitions they feed."""
    wanted: dict[TopicPartition, list[TablePartition]] = {}
    for task in list(tasks.tasks.values()):
        for part in task.tables.values():
            if part.table.source:
                tp = TopicPartition(part.table.changelog.name, part.partition)
                wanted.setdefault(tp, []).append(part)
    return wanted


async def follow_source_tables(
    tasks: RunningTasks, settings: Settings, client_id: str, interval: float = 0.2
) -> None:
    """The `sources` background task: apply new source records to the running tasks' tables."""
    reader = CompactedReader(settings, client_id, "source table")
    wanted: dict[TopicPartition, list[TablePartition]] = {}

    async def wipe(tp: TopicPartition, start: int) -> None:
        for part in wanted.get(tp, []):
            forget(part, start - 1)

    try:
        while True:
            wanted = following(tasks)
            reader.positions = {
                tp: min(p.source_offset for p in ps) + 1 for tp, ps in wanted.items()
            }
            if not wanted:
                await asyncio.sleep(interval)
                continue
            before = dict(reader.positions)
            fetched = await reader.fetch(wipe)
            applied = 0
            for tp, got in fetched.items():
                if got.next_offset <= before[tp]:
                    continue
                for part in wanted.get(tp, []):
                    if part.source_offset < got.next_offset - 1:
                        part.apply_source(got.rows, got.next_offset - 1)
                applied += len(got.rows)
            if not applied:
                await asyncio.sleep(interval)
    finally:
        await reader.close()


def forget(part: TablePartition, offset: int) -> None:
    """Every row of a source table's partition deleted (as tombstones of the source: the next
    checkpoint writes them with `offset`), before it is read again from the log start."""
    keys = {key for key, _ in part.store.scan(part.name)} | set(part.flushing)
    part.apply_source([(key, None) for key in keys], offset)
