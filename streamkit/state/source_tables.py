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
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from streamkit.context import WALL_CLOCK
from streamkit.settings import Settings
from streamkit.state.compacted import CompactedReader, Fetched
from streamkit.state.table import Table, TablePartition


class _Task(Protocol):
    @property
    def tables(self) -> Mapping[str, TablePartition]: ...

    def wake(self) -> None: ...


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
            topic = source_of(part)
            if topic is not None:
                wanted.setdefault(TopicPartition(topic, part.partition), []).append(part)
    return wanted


def source_of(part: TablePartition) -> str | None:
    """The topic a table partition follows: a source table's, or a versioned table's feed."""
    return followed_topic(part.table)


def followed_topic(table: Table[Any, Any]) -> str | None:
    if table.source:
        return table.changelog.name
    versioned = table.versioned
    if versioned is not None and versioned.source is not None:
        return str(versioned.source.name)
    return None


def is_followed(table: Table[Any, Any]) -> bool:
    """Whether the worker's `sources` task follows a topic for `table`."""
    return followed_topic(table) is not None


def applied_offset(part: TablePartition) -> int:
    """The last offset of its topic a followed table partition reflects."""
    versioned = part.table.versioned
    if versioned is not None:
        return int(versioned.partition(part).source_offset)
    return part.source_offset


def apply(part: TablePartition, got: Fetched) -> None:
    """What one fetch read, into a followed table partition, unless it reflects it already
    (a partition restored past another one's position reads rows again: applying a row
    twice, in order, leaves what applying it once does)."""
    last = got.next_offset - 1
    if applied_offset(part) >= last:
        return
    versioned = part.table.versioned
    if versioned is not None:
        versioned.partition(part).apply_source(got.rows, got.times or [], last)
    else:
        part.apply_source(got.rows, last)


async def follow_source_tables(
    tasks: RunningTasks, settings: Settings, client_id: str, interval: float = 0.2
) -> None:
    """The `sources` background task: apply new source records to the running tasks' tables.

    Each round reads once from every followed partition, then notes in each table
    partition's `FollowStatus` the newest record time read, when rows last came, and, when
    the fetch reached the partition's end, the time the fetch started; tasks are woken (a
    task holding a record back until its tables caught up looks again). A task that holds a
    record sets `poke`: the next round starts at once instead of after `interval`."""
    reader = CompactedReader(settings, client_id, "source table")
    wanted: dict[TopicPartition, list[TablePartition]] = {}
    poke = asyncio.Event()
    clock = WALL_CLOCK.get()
    known: set[TopicPartition] = set()  # the partitions followed in the last round

    async def wipe(tp: TopicPartition, start: int) -> None:
        for part in wanted.get(tp, []):
            forget(part, start - 1)

    try:
        while True:
            wanted = following(tasks)
            reader.positions = {
                tp: min(applied_offset(p) for p in ps) + 1 for tp, ps in wanted.items()
            }
            reader.timed = {tp for tp, ps in wanted.items() if any(p.table.versioned for p in ps)}
            if not wanted:
                await _nap(poke, interval)
                continue
            for parts in wanted.values():
                for part in parts:
                    if part.follow is not None:
                        part.follow.poke = poke
            # a task holds a record until this round's answer (it poked, or its tables are
            # new here: it could not poke before their first round)
            asked = poke.is_set() or not set(wanted) <= known
            known = set(wanted)
            poke.clear()
            started = clock.monotonic()
            before = dict(reader.positions)
            fetched = await reader.fetch(wipe)
            applied = _note(wanted, fetched, before, started, clock.monotonic())
            if asked or applied:
                for task in list(tasks.tasks.values()):
                    task.wake()
            if not applied:
                await _nap(poke, interval)
    finally:
        await reader.close()


def _note(
    wanted: dict[TopicPartition, list[TablePartition]],
    fetched: Mapping[TopicPartition, Fetched],
    before: dict[TopicPartition, int],
    started: float,
    now: float,
) -> int:
    """Apply one round's fetches and note how far each table partition got; rows applied."""
    applied = 0
    for tp, got in fetched.items():
        new = got.next_offset > before[tp]
        for part in wanted.get(tp, []):
            status = part.follow
            if new:
                apply(part, got)
            if status is None:
                continue
            if got.rows:
                status.progressed_at = now
            if got.max_timestamp >= 0 and (
                status.table_time is None or got.max_timestamp > status.table_time
            ):
                status.table_time = got.max_timestamp
            if got.next_offset >= got.last_stable:
                status.caught_up_at = started
        applied += len(got.rows)
    return applied


async def _nap(poke: asyncio.Event, interval: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(poke.wait(), interval)


def forget(part: TablePartition, offset: int) -> None:
    """Every row of a source table's partition deleted (as tombstones of the source: the next
    checkpoint writes them with `offset`), before it is read again from the log start. A
    versioned table keeps its versions (reading them again changes nothing): only its
    position goes back."""
    versioned = part.table.versioned
    if versioned is not None:
        versioned.partition(part).source_offset = offset
        return
    keys = {key for key, _ in part.store.scan(part.name)} | set(part.flushing)
    part.apply_source([(key, None) for key in keys], offset)
