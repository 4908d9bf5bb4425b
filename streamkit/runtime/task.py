"""Task: one stage of an agent running over one input partition, in offset order.

The fetch loop `put`s raw records into the task's buffer; the agent's stream pulls them through
`next_event` (decoding on the way; what fails to decode becomes a dead letter) and blocks in
`wait` when the buffer is empty. One long-lived coroutine per task runs the agent: no task per
event, no queue hop. `committable` is the offset after the last fully processed record: the
checkpoint commits exactly that.

`pause` (the exactly-once checkpoint's first step) stops the task at the next event boundary:
the event in flight finishes, then the stream hands out nothing until `resume`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamkit.context import CURRENT_TASK
from streamkit.events import Event, Record
from streamkit.runtime.collector import CURRENT_COLLECTOR, ProduceFailed, RecordCollector
from streamkit.runtime.dlq import dead_letter
from streamkit.runtime.event_clock import fire_processing_timers, open_event_state
from streamkit.runtime.exchange import Router
from streamkit.serde import decode_problem
from streamkit.stages import Stage
from streamkit.state.changelog import Restorer
from streamkit.state.table import TableNotBound, TablePartition
from streamkit.state.task_tables import TaskTables
from streamkit.streams import NOTHING, Exchange, Op, Stream, segment

if TYPE_CHECKING:
    from streamkit.runtime.event_clock import EventClock
    from streamkit.state.timers import TimerPartition
    from streamkit.state.window_table import Windows

BROADCAST_CHECK = 1024  # relayed events between two looks at the watermark to broadcast

log = logging.getLogger(__name__)


class TaskState(enum.Enum):
    CREATED = "created"
    RESTORING = "restoring"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED = {
    TaskState.CREATED: {TaskState.RESTORING, TaskState.CLOSED},
    TaskState.RESTORING: {TaskState.RUNNING, TaskState.CLOSING, TaskState.CLOSED},
    TaskState.RUNNING: {TaskState.CLOSING, TaskState.CLOSED},
    TaskState.CLOSING: {TaskState.CLOSED},
    TaskState.CLOSED: set(),
}


def current_event() -> Event | None:
    """The event being processed by the calling agent code (also inside map/filter/key_by
    functions), or None outside a task."""
    task = CURRENT_TASK.get(None)
    return None if task is None else task.current


class AgentStopped(Exception):
    """Agent code raised and `on_agent_error="stop"`: the worker must stop."""


class Task:
    def __init__(
        self,
        stage: Stage,
        partition: int,
        collector: RecordCollector,
        *,
        dlq_topic: str,
        on_agent_error: str,
        on_room: Callable[[], None],
        state: TaskTables | None = None,
        reader: Restorer | None = None,
        position: int | None = None,
        clock: EventClock | None = None,
    ) -> None:
        self.stage = stage
        self.agent = stage.agent
        self.topic = stage.source
        self._loads_key = stage.source.key_codec.loads
        self._loads_value = stage.source.value_codec.loads
        self.partition = partition
        self.collector = collector
        self.dlq_topic = dlq_topic
        self.on_agent_error = on_agent_error
        self._on_room = on_room
        self.status = TaskState.CREATED
        self.state = state  # the tables of this task (None for a stateless stage)
        self.tables: dict[str, TablePartition] = {}
        self.windows: dict[str, Windows] = {}
        self.timers: dict[str, TimerPartition] = {}
        self.clock = clock  # event time and watermarks (agents with window tables)
        self._event_ts: int | None = None
        self._reader = reader
        self._records: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.position = position  # next offset we expect from the fetcher
        self.committable: int | None = None  # offset after the last processed record
        self._rec: Any = None  # the raw record being processed (ConsumerRecord)
        self._key: Any = None
        self._value: Any = None
        self._event: Event | None = None
        self.events_in = 0
        self.dead_letters = 0
        self._runner: asyncio.Task[None] | None = None
        self._pausing = False  # a checkpoint asked this task to stop at an event boundary
        self._parked: asyncio.Future[None] | None = None  # resolved once it has stopped
        self._idle = False  # blocked in `wait`: between two events

    def __repr__(self) -> str:
        return f"Task({self.stage.name}, {self.topic.name}[{self.partition}], {self.status.value})"

    def _set_status(self, new: TaskState) -> None:
        if new not in _ALLOWED[self.status]:
            raise RuntimeError(f"{self!r}: illegal transition to {new.value}")
        self.status = new

    # -- fed by the fetch loop ---------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._records)

    @property
    def accepting(self) -> bool:
        return self.status is TaskState.RUNNING

    def put(self, records: list[Any]) -> bool:
        """Buffer fetched records, skipping any already seen (a re-fetch after a rebalance).
        False when the task takes none yet (restoring): the caller rewinds the partition."""
        if self.status is not TaskState.RUNNING:
            return False
        if self.position is not None and records[0].offset < self.position:
            records = [r for r in records if r.offset >= self.position]
            if not records:
                return True
        self._records.extend(records)
        self.position = records[-1].offset + 1
        if self.clock is not None:
            self.clock.note_input()
        waiter = self._waiter
        if waiter is not None and not waiter.done() and not self._pausing:
            waiter.set_result(None)
        return True

    # -- pulled by the agent's stream (StreamSource) -----------------------------------------

    def bind(self, ops: tuple[Op, ...]) -> tuple[Op, ...]:
        exchanges = sum(isinstance(op, Exchange) for op in ops)
        expected = len(self.agent.stages) - 1
        if exchanges != expected:
            raise RuntimeError(
                f"agent {self.agent.name} built a chain with {exchanges} exchanges at run time "
                f"but {expected} when it was declared: keep the operator chain fixed"
            )
        return segment(ops, self.stage.index)

    @property
    def current(self) -> Event | None:
        """The event being processed, built on first use (the hot path never needs it)."""
        rec = self._rec
        if rec is None:
            return None
        event = self._event
        if event is None:
            event = self._event = Event(
                rec.topic,
                rec.partition,
                rec.offset,
                self._key,
                self._value,
                rec.timestamp,
                rec.headers,
                rec.key,
                rec.value,
            )
        return event

    def next_value(self) -> Any:
        rec = self._rec
        if rec is not None:
            self.committable = rec.offset + 1
            self._rec = self._event = None
        if self._pausing:
            return NOTHING  # the stream calls `wait`, which parks the task
        records = self._records
        loads_key, loads_value = self._loads_key, self._loads_value
        clock = self.clock
        while records:
            rec = records.popleft()
            if clock is not None and rec.headers:
                try:
                    if clock.on_control(rec.headers):
                        self.committable = rec.offset + 1  # a watermark control record: consumed
                        continue
                except ValueError as exc:
                    self._dead_letter(rec, str(exc), "ControlRecordError")
                    continue
            raw_key, raw_value = rec.key, rec.value
            try:
                key = None if raw_key is None else loads_key(raw_key)
                value = None if raw_value is None else loads_value(raw_value)
            except Exception:  # ValueError mostly; a model's own validator may raise anything
                problem = decode_problem(self.topic.key_codec, self.topic.value_codec, rec)
                self._dead_letter(rec, problem, "DecodeError")
                continue
            if clock is not None:
                try:
                    self._event_ts = clock.on_data(rec, value)
                except (ValueError, KeyError, AttributeError, TypeError) as exc:
                    reason = f"no event time: {type(exc).__name__}: {exc}"
                    self._dead_letter(rec, reason, "TimestampError")
                    continue
            self.events_in += 1
            if self.timers and not self.events_in % BROADCAST_CHECK:  # busy: no `wait` calls
                fire_processing_timers(self.timers.values())
            self._rec, self._key, self._value = rec, key, value
            return value
        return NOTHING

    async def wait(self) -> None:
        if self.status is not TaskState.RUNNING:
            raise StopAsyncIteration
        if not self._pausing:
            await self.collector.submit()
            if self._closing():  # closed while submitting: nobody will wake us
                raise StopAsyncIteration
            self._on_room()
            if self._records and not self._pausing:
                return
        clock = self.clock
        timeout = None
        if clock is not None:
            clock.broadcast(self.collector)
            if clock.output is not None:  # wake up now and then to say we are idle
                timeout = clock.idle_timeout / 2
        if self.timers:
            due = fire_processing_timers(self.timers.values())
            if due is not None:
                timeout = due if timeout is None else min(timeout, due)
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._idle = True
        parked = self._parked
        if parked is not None and not parked.done():
            parked.set_result(None)
        try:
            if timeout is None:
                await waiter
            else:
                await asyncio.wait((waiter,), timeout=timeout)
        finally:
            self._waiter = None
            self._idle = False
        if self.status is not TaskState.RUNNING:
            raise StopAsyncIteration

    @property
    def idle(self) -> bool:
        """Blocked in `wait` between two events, with nothing about to wake it."""
        waiter = self._waiter
        return self._idle and waiter is not None and not waiter.done()

    def wake(self) -> None:
        """Let a waiting task look again (due processing-time timers fire in `wait`)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and not self._pausing:
            waiter.set_result(None)

    # -- event time --------------------------------------------------------------------------

    def event_time(self) -> int:
        """Epoch ms of the event being processed (its event time when the agent uses event
        time, else its record timestamp)."""
        if self._event_ts is not None and self._rec is not None:
            return self._event_ts
        if self._rec is not None:
            return int(self._rec.timestamp)
        raise RuntimeError("no event is being processed")

    def route_late(self, topic: str, reason: str) -> None:
        """The event being processed is late for a window table: to the late topic."""
        if self._rec is None:
            raise RuntimeError("a late event outside of event processing")
        dead_letter(
            self.collector,
            topic,
            self._rec,
            agent=self.agent.name,
            reason=reason,
            error_type="LateEvent",
        )

    # -- driven by the exactly-once checkpoint -----------------------------------------------

    async def pause(self) -> None:
        """Return once the task is between two events (at once if it is idle or not running)
        and keep it there until `resume`."""
        runner = self._runner
        if self.status is not TaskState.RUNNING or runner is None or runner.done():
            return
        self._pausing = True
        if self._idle:
            return
        parked = self._parked = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait((parked, runner), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._parked = None

    def resume(self) -> None:
        self._pausing = False
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (self._records or self._closing()):
            waiter.set_result(None)

    def _dead_letter(self, rec: Any, reason: str, error_type: str) -> None:
        dead_letter(
            self.collector,
            self.dlq_topic,
            rec,
            agent=self.agent.name,
            reason=reason,
            error_type=error_type,
        )
        self.dead_letters += 1
        self.committable = rec.offset + 1
        log.warning(
            "dead letter from %s[%d]@%d: %s: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            error_type,
            reason,
        )

    # -- the agent's coroutine ---------------------------------------------------------------

    def start(self) -> None:
        self._set_status(TaskState.RESTORING)
        self._runner = asyncio.create_task(
            self._run(), name=f"streamkit-task-{self.topic.name}-{self.partition}"
        )

    @property
    def runner(self) -> asyncio.Task[None] | None:
        return self._runner

    async def _run(self) -> None:
        CURRENT_COLLECTOR.set(self.collector)
        CURRENT_TASK.set(self)
        if self.state is not None:
            assert self._reader is not None
            await self.state.open(self._reader)
            self.tables = self.state.partitions
            open_event_state(self)
        if self._closing_early():
            return
        self._set_status(TaskState.RUNNING)
        stage = self.stage
        if stage.runs_body:
            stream: Stream[Any] = Stream(self)
            run_once = self._run_agent_once
        else:
            stream = Stream(self, self.agent.ops)
            run_once = self._relay
        while True:
            try:
                await run_once(stream)
                if self.status is not TaskState.RUNNING:
                    return
                log.warning("%r: agent returned before its stream ended; restarting it", self)
            except (ProduceFailed, TableNotBound):
                raise  # not the event's fault: the worker stops, the event is read again
            except Exception as exc:
                failed = self.current
                if failed is None:
                    raise  # raised outside any event: a bug in the agent body
                self._rec = self._event = None
                if self.on_agent_error == "stop":
                    raise AgentStopped(
                        f"agent {self.agent.name} raised on {failed.topic}[{failed.partition}]"
                        f"@{failed.offset}: {type(exc).__name__}: {exc}"
                    ) from exc
                self._dead_letter(_AsRecord(failed), str(exc), type(exc).__name__)

    async def _relay(self, stream: Stream[Any]) -> None:
        """A stage before an exchange: its steps, then route each value to the next topic
        (with the event's time as the record timestamp)."""
        exchange, output = self.stage.exchange, self.stage.output
        assert exchange is not None and output is not None
        router = Router(exchange, output, self.partition)
        collector = self.collector
        clock = self.clock
        count = 0
        async for value in stream:
            full = router.route(value, self._rec, collector, self._event_ts)
            if clock is not None:
                count += 1
                if count % BROADCAST_CHECK == 0:
                    clock.broadcast(collector)
            if full:
                await collector.submit_full()

    async def _run_agent_once(self, stream: Stream[Any]) -> None:
        if not self.agent.is_generator:
            await self.agent.fn(stream)
            return
        sinks = self.agent.sinks
        plain = [(sink.name, sink.value_codec.encode) for sink in sinks]
        append = self.collector.append
        async for out in self.agent.fn(stream):
            rec = self._rec
            full = False
            if type(out) is Record:
                ts = out.timestamp_ms
                if ts is None and rec is not None:
                    ts = rec.timestamp
                for sink in sinks:
                    full |= append(
                        sink.name,
                        sink.encode_key(out.key),
                        sink.encode_value(out.value),
                        headers=out.headers,
                        timestamp_ms=ts,
                    )
            elif rec is not None:  # the common case: keep the input's key and time
                key, ts = rec.key, rec.timestamp
                for name, encode in plain:
                    full |= append(name, key, None if out is None else encode(out), timestamp_ms=ts)
            else:
                for name, encode in plain:
                    full |= append(name, None, None if out is None else encode(out))
            if full:
                await self.collector.submit_full()

    async def close(self, grace: float) -> None:
        """Stop after the in-flight event: drop what is buffered, let the agent finish.

        Records dropped here were never processed, so their offsets are never committed and
        the next owner of the partition reads them again."""
        if self.status is TaskState.CLOSED:
            return
        if self.status is TaskState.CREATED:
            self._set_status(TaskState.CLOSED)
            return
        self._set_status(TaskState.CLOSING)
        self._records.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        runner = self._runner
        if runner is not None and not runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(runner), grace)
            except TimeoutError:
                log.error("%r: agent did not finish its event in %.0fs; cancelling", self, grace)
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            except Exception:
                pass  # the worker's supervisor reports a failed runner
        self._set_status(TaskState.CLOSED)

    def _closing(self) -> bool:
        return self.status is not TaskState.RUNNING

    def _closing_early(self) -> bool:
        """Closed while restoring (a read of `status` after an await: mypy narrows it)."""
        return self.status is not TaskState.RESTORING

    def close_state(self) -> None:
        """After the final checkpoint of this task: release its store."""
        if self.state is not None:
            self.state.close()
        self.tables = {}


class _AsRecord:
    """An Event seen as the raw record it came from (for the dead-letter writer)."""

    def __init__(self, event: Event) -> None:
        self.topic = event.topic
        self.partition = event.partition
        self.offset = event.offset
        self.timestamp = event.timestamp_ms
        self.key = event.raw_key
        self.value = event.raw_value
        self.headers = event.headers
