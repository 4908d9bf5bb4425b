"""What a task does beyond its record loop (`runtime/task.py`): opening the stage's state and
sinks before the first record (tables, window tables and timers, the table sync, the joins,
sinks beyond Kafka), the per-input decoders and pushes the loop runs, the event clock's part
of a record (control records, event time), its look at timers and the watermark every so many
events, and pushing the results of its joins on after the record in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.context import TaskScope
from streamkit.graph import Stage
from streamkit.runtime.agent_run import Agents
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.event_clock import fire_processing_timers, open_event_state
from streamkit.runtime.failures import FATAL
from streamkit.runtime.joins import Joined, JoinHost, open_joins
from streamkit.runtime.sinks import TaskSinks
from streamkit.runtime.table_sync import TableSync
from streamkit.serde import Codec
from streamkit.state.changelog import Restorer
from streamkit.state.table import TablePartition
from streamkit.state.task_tables import TaskTables
from streamkit.state.window_table import WindowPartition

if TYPE_CHECKING:
    from streamkit.runtime.async_map import AsyncCalls
    from streamkit.runtime.event_clock import EventClock
    from streamkit.state.timers import TimerPartition
    from streamkit.state.window_table import Windows


@dataclass(slots=True)
class Input:
    """One input topic of the stage, as the loop uses it."""

    key_codec: Codec[Any]
    value_codec: Codec[Any]
    push: Callable[[Any], None]  # the compiled operators (`operators.py`)
    loads_key: Callable[[bytes], Any]  # the codecs' `loads`, looked up once
    loads_value: Callable[[bytes], Any]


def stage_inputs(stage: Stage, pushes: dict[str, Callable[[Any], None]]) -> dict[str, Input]:
    """Input topic name → how the loop decodes and pushes its records."""
    return {
        t.name: Input(
            t.key_codec, t.value_codec, pushes[t.name], t.key_codec.loads, t.value_codec.loads
        )
        for t in stage.topics
    }


class Letters(Protocol):
    record: Any
    event_ts: int | None

    def dead_letter(self, rec: Any, reason: str, error_type: str) -> None: ...


def control_record(task: Letters, clock: EventClock, rec: Any) -> bool:
    """A watermark control record (consumed; a bad one is a dead letter): True."""
    try:
        return clock.on_control(rec.topic, rec.headers)
    except ValueError as exc:
        task.dead_letter(rec, str(exc), "ControlRecordError")
        return True


def stamped(task: Letters, clock: EventClock, rec: Any, value: Any) -> bool:
    """The event time of the record being processed (False: it has none, a dead letter)."""
    try:
        task.event_ts = clock.on_data(rec, value)
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        task.record = None
        task.dead_letter(rec, f"no event time: {type(exc).__name__}: {exc}", "TimestampError")
        return False
    return True


class Checked(Protocol):
    timers: dict[str, TimerPartition]
    clock: EventClock | None
    calls: AsyncCalls | None
    collector: RecordCollector


def every_check(task: Checked) -> None:
    """Every so many events (the task loop's BROADCAST_CHECK): due processing-time timers
    fire, the watermark goes downstream."""
    if task.timers:
        fire_processing_timers(task.timers.values())
    if task.clock is not None:
        if task.calls is None:
            task.clock.broadcast(task.collector)
        else:  # never ahead of events whose calls are in flight
            task.calls.broadcast(task.clock)


class Opening(JoinHost, TaskScope, Protocol):
    """What `open_stage` reads and sets of its task."""

    stage: Stage
    state: TaskTables | None
    clock: EventClock | None
    sinks: TaskSinks | None
    tables: dict[str, TablePartition]
    windows: dict[str, Windows]
    timers: dict[str, TimerPartition]
    sync: TableSync | None
    sync_wait: float


async def open_stage(task: Opening, reader: Restorer | None) -> None:
    """Before the first record: restore the task's tables (`state` and `reader`), open its
    window tables, timers, table sync and joins, then its sinks beyond Kafka."""
    if task.state is not None:
        assert reader is not None
        await task.state.open(reader)
        task.tables = tables = task.state.partitions
        task.windows, task.timers = open_event_state(task, task.stage, tables, task.clock)
        task.sync = TableSync.of(tables, task.sync_wait)
        task.joins = open_joins(task, task.stage, tables, task.clock)
        # rows the watermark makes final reach SQLite only when they must (`state/deferred.py`)
        for part in task.joins.values():
            task.state.defer(part.join.table.name, part)
        for window in task.windows.values():
            if type(window) is WindowPartition:  # tumbling, hopping
                task.state.defer(window.wt.table.name, window)
    if task.sinks is not None:
        await task.sinks.open()


class JoinedHost(Protocol):
    record: Any
    full: bool
    collector: RecordCollector
    agents: Agents
    joined: deque[Joined]

    def back_to(self, here: tuple[Any, Any, Any, int | None]) -> None: ...

    def on_branch_error(self, exc: Exception, agent: str | None = None) -> None: ...


async def drain_joins(task: JoinedHost) -> None:
    """Push each queued join result through the operators after its join as an event of its
    own (`runtime/joins.py`): its record, key and event time are what those operators and
    agents see while it passes."""
    joined, agents = task.joined, task.agents
    while joined:
        push, joiner, rec, key, left, right = joined.popleft()
        task.back_to((rec, key, None, rec.timestamp))
        try:
            value = joiner(left, right)
            task.back_to((rec, key, value, rec.timestamp))
            push(value)
        except FATAL:
            raise
        except Exception as exc:
            task.on_branch_error(exc)
        if agents.pending:
            await agents.feed()
        if task.full:
            task.full = False
            await task.collector.submit_full()
    task.record = None
