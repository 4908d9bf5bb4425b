"""Task: one stage running over one partition of its inputs, in offset order.

The fetch loop `put`s raw records into the task's buffer. One long-lived coroutine per task
takes them one at a time: decode (what fails to decode becomes a dead letter), event time,
then one depth-first pass through the stage's operators (`operators.py`): inline steps,
exchanges and sinks append to the task's collector, and each agent of the stage gets the
values queued for it, fed to its body right after the pass (`agent_run.py`). Only when every
branch has finished the record does its offset become committable: `offsets()` is exactly
what the checkpoint commits. No task per event, no queue hop, no thread. (A relay stage's
records are routed in batches, undecoded, when sure: `relay.py`.)

The task is also what state code sees (`context.TaskScope`): tables, window tables and timers
of the stage resolve their partition from it wherever they are called from.

Between two records the task parks; `pause` (the exactly-once checkpoint's first step) stops
it at the next record boundary until `resume` (`pass_control.py`). Opening the stage's state
and sinks and pushing join results on are in `stage_hooks.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka.structs import TopicPartition

from streamkit.agents import Agent
from streamkit.context import CURRENT_COLLECTOR, CURRENT_TASK
from streamkit.events import Event
from streamkit.graph import Stage
from streamkit.runtime.agent_run import NEED, Agents
from streamkit.runtime.async_map import AsyncCalls
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.dlq import dead_letter
from streamkit.runtime.event_clock import fire_processing_timers
from streamkit.runtime.failures import FATAL, AgentStopped
from streamkit.runtime.joins import Joined
from streamkit.runtime.operators import Compiler
from streamkit.runtime.pass_control import PassControl
from streamkit.runtime.relay import relay_for
from streamkit.runtime.sinks import TaskSinks
from streamkit.runtime.stage_hooks import (
    Input,
    control_record,
    drain_joins,
    every_check,
    open_stage,
    stage_inputs,
    stamped,
)
from streamkit.runtime.table_sync import TableSync
from streamkit.runtime.task_state import ALLOWED, TaskState
from streamkit.serde import decode_problem
from streamkit.state.changelog import Restorer
from streamkit.state.table import TablePartition
from streamkit.state.task_tables import TaskTables
from streamkit.streams import AsyncMapNode

if TYPE_CHECKING:
    from streamkit.runtime.event_clock import EventClock
    from streamkit.state.stream_join import JoinPartition
    from streamkit.state.timers import TimerPartition
    from streamkit.state.window_table import Windows

BROADCAST_CHECK = 1024  # records between two looks at the watermark and processing timers

log = logging.getLogger(__name__)

__all__ = ["AgentStopped", "Task", "TaskState"]


class _Closed(Exception):
    """The task is closing: its loop ends."""


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
        positions: dict[str, int] | None = None,
        clock: EventClock | None = None,
        sync_wait: float = 0.0,
        sinks: Callable[[Task], TaskSinks] | None = None,
    ) -> None:
        self.stage = stage
        self.stage_name = stage.name
        self.topic = stage.source  # the first input: it names the task
        self.partition = partition
        self.partitions = stage.partitions or 1
        self.inputs = [
            TopicPartition(t.name, partition)
            for t in stage.topics
            if t.partitions is None or partition < t.partitions
        ]
        self.collector = collector
        self.dlq_topic = dlq_topic
        self.on_agent_error = on_agent_error
        self._on_room = on_room
        self.status = TaskState.CREATED
        self.state = state  # the tables of this task (None for a stateless stage)
        self.tables: dict[str, TablePartition] = {}
        self.windows: dict[str, Windows] = {}
        self.timers: dict[str, TimerPartition] = {}
        self.joins: dict[str, JoinPartition] = {}
        self.joined: deque[Joined] = deque()  # join results, pushed on after the record
        self.clock = clock  # event time and watermarks (stages that use event time)
        self._reader = reader
        self._records: deque[Any] = deque()
        self.control = PassControl()  # parking between records, the checkpoint's pause
        positions = positions or {}
        self.position: dict[str, int | None] = {
            tp.topic: positions.get(tp.topic) for tp in self.inputs
        }
        self._put: dict[str, int] = {}  # offset after the last record buffered, per input
        self._taken: Any = None  # the record `_process` took last (a control record too)
        # offset after the last record every branch finished; None until one is (a task that
        # is still restoring has nothing to commit, and its store is not written)
        self._done: dict[str, int | None] = {tp.topic: None for tp in self.inputs}
        self.done_offsets = self._done  # the same, live, for the sinks (runtime/sinks.py)
        self.record: Any = None  # the raw record being processed (ConsumerRecord)
        self._key: Any = None
        self._value: Any = None
        self.event_ts: int | None = None
        self._event: Event | None = None
        self.full = False  # a batch filled up during the pass: submit before the next record
        self.cut_short = False  # cancelled mid-event by `close`: its checkpoint must abort
        self.events_in = 0
        self.dead_letters = 0
        self.agents = Agents(self, stage.agents, self.on_branch_error)
        if clock is not None:
            clock.pending = self._pending
        self._runner: asyncio.Task[None] | None = None
        self.sync: TableSync | None = None  # holds records until followed tables caught up
        self.sync_wait = sync_wait
        self.sinks = None if sinks is None else sinks(self)  # beyond Kafka (runtime/sinks.py)
        async_steps = any(isinstance(n, AsyncMapNode) for n in stage.nodes)
        self.calls = AsyncCalls(self) if async_steps else None  # map_async (async_map.py)

    def __repr__(self) -> str:
        return f"Task({self.stage.name}[{self.partition}], {self.status.value})"

    def _set_status(self, new: TaskState) -> None:
        if new not in ALLOWED[self.status]:
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
        """Buffer fetched records of one input partition, skipping any already seen (a
        re-fetch after a rebalance). False when the task takes none yet (restoring): the
        caller rewinds the partition."""
        if self.status is not TaskState.RUNNING:
            return False
        topic = records[0].topic
        position = self.position.get(topic)
        if position is not None and records[0].offset < position:
            records = [r for r in records if r.offset >= position]
            if not records:
                return True
        self._records.extend(records)
        self.position[topic] = self._put[topic] = records[-1].offset + 1
        if self.sync is not None:
            self.sync.arrived(topic, records[-1].offset)
        if self.clock is not None:
            self.clock.note_input(topic)
        self.control.wake()
        return True

    def _pending(self, topic: str) -> bool:
        """Records of input `topic` are buffered behind the one being processed (the event
        clock does not count such an input idle, however long ago they arrived)."""
        put = self._put.get(topic)
        if put is None:
            return False
        taken = self._taken
        if taken is not None and taken.topic == topic:
            return bool(taken.offset + 1 < put)
        done = self._done.get(topic)
        return done is None or done < put

    # -- what the checkpoint commits ---------------------------------------------------------

    def offsets(self) -> dict[TopicPartition, int]:
        """Per input partition, the offset after the last record every branch has finished."""
        return {
            TopicPartition(topic, self.partition): done
            for topic, done in self._done.items()
            if done is not None
        }

    @property
    def committable(self) -> int | None:
        """The first input's committable offset (status pages)."""
        return self._done.get(self.topic.name)

    # -- the scope state code sees (context.TaskScope) ---------------------------------------

    @property
    def current(self) -> Event | None:
        """The event being processed, built on first use (the hot path never needs it)."""
        rec = self.record
        if rec is None:
            return None
        event = self._event
        if event is None:
            event = self._event = Event(
                rec.topic, rec.partition, rec.offset, self._key, self._value,
                rec.timestamp, rec.headers, rec.key, rec.value,
            )  # fmt: skip
        return event

    def event_key(self) -> bytes | None:
        return None if self.record is None else self.record.key

    def event_time(self) -> int:
        """Epoch ms of the event being processed (its event time when the stage uses event
        time, else its record timestamp)."""
        if self.record is None:
            raise RuntimeError("no event is being processed")
        if self.event_ts is not None:
            return self.event_ts
        return int(self.record.timestamp)

    def route_late(self, topic: str, reason: str) -> None:
        """The event being processed is late for a window table: to the late topic."""
        if self.record is None:
            raise RuntimeError("a late event outside of event processing")
        rec, name = self.record, self.stage.name
        dead_letter(self.collector, topic, rec, agent=name, reason=reason, error_type="LateEvent")

    # -- one record ----------------------------------------------------------------------------

    def agent_input(self, agent: Agent) -> Callable[[Any], None]:
        """The last operator before an agent: queue the value for its body."""
        return self.agents.input(agent)

    def on_branch_error(self, exc: Exception, agent: str | None = None) -> None:
        """An operator (or the body of `agent`) raised on the record being processed, in one
        branch: a dead letter that names the agent (else the stage), or the worker stops."""
        rec = self.record
        where = f"agent {agent}" if agent is not None else f"stage {self.stage.name}"
        if self.on_agent_error == "stop":
            raise AgentStopped(
                f"{where} raised on {rec.topic}[{rec.partition}]@{rec.offset}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.dead_letter(rec, str(exc), type(exc).__name__, agent)

    # -- the task's coroutine ------------------------------------------------------------------

    def start(self) -> None:
        self._set_status(TaskState.RESTORING)
        self._runner = asyncio.create_task(
            self._run(), name=f"streamkit-task-{self.stage.name}-{self.partition}"
        )

    @property
    def runner(self) -> asyncio.Task[None] | None:
        return self._runner

    async def _run(self) -> None:
        CURRENT_COLLECTOR.set(self.collector)
        CURRENT_TASK.set(self)
        await open_stage(self, self._reader)
        if self._closing_early():
            return
        self._set_status(TaskState.RUNNING)
        compiler = Compiler(self, self.stage, self.calls)
        if self.calls is not None:
            self.calls.bind(self._done)
        inputs = stage_inputs(self.stage, compiler.inputs())
        relay = relay_for(self, inputs, compiler, self._records, BROADCAST_CHECK)
        await self.agents.start()
        with contextlib.suppress(_Closed):
            await self._loop(inputs, relay)
        if self.clock is not None:  # the last watermark joins the final checkpoint: the next
            self.clock.broadcast(self.collector, force=True)  # owner may start knowing none
        await self.agents.stop()

    async def _loop(self, inputs: dict[str, Input], relay: Callable[[], Any] | None) -> None:
        """Take the buffered records one at a time: decode (what fails to decode is a dead
        letter), event time, the pass through the operators, the agents' bodies, the join
        results; then the record's offset is done (or waits for its map_async calls). A relay
        stage's `relay` takes the records it is sure of first, in batches."""
        records, done, control = self._records, self._done, self.control
        agents = self.agents
        pending, single = agents.pending, agents.single
        collector, clock, sync, sinks = self.collector, self.clock, self.sync, self.sinks
        calls, joined = self.calls, self.joined
        while True:
            if not records or control.pausing or (calls is not None and calls.blocked):
                await self._wait()
                continue
            if sync is not None and (hold := sync.hold(records[0])):
                await self._wait(hold)  # until its tables caught up (`table_sync.py`)
                continue
            if relay is not None and (last := relay()) is not None:
                self._taken = last  # a batch routed, its offsets done
                if self.full:
                    self.full = False
                    await collector.submit_full()
                if not self.events_in % BROADCAST_CHECK:
                    every_check(self)
                continue
            rec = self._taken = records.popleft()
            if clock is not None and rec.headers and control_record(self, clock, rec):
                pass  # a watermark control record: consumed (an upstream's, not an event)
            else:
                if clock is not None and clock.said_idle:  # first event after an idle spell
                    clock.unidle(collector)
                inp = inputs[rec.topic]
                raw_key, raw_value = rec.key, rec.value
                try:
                    key = None if raw_key is None else inp.loads_key(raw_key)
                    value = None if raw_value is None else inp.loads_value(raw_value)
                except FATAL:  # the schema registry unreachable: not the record's fault
                    raise
                except Exception:  # ValueError mostly; a model's validator may raise anything
                    problem = decode_problem(inp.key_codec, inp.value_codec, rec)
                    self.dead_letter(rec, problem, "DecodeError")
                else:
                    self.record, self._key, self._value, self._event = rec, key, value, None
                    if clock is None or stamped(self, clock, rec, value):
                        self.events_in += 1
                        try:
                            inp.push(value)
                        except FATAL:
                            raise
                        except Exception as exc:
                            self.on_branch_error(exc)
            if pending:
                if single is not None and len(pending) == 1 and single.running:
                    # the common case, inline: one agent, one value, a body that only computes
                    try:
                        awaited = single.coro.send(pending.pop())
                    except StopIteration:
                        single.running = False  # it returned: `feed` restarts it next time
                    except FATAL:
                        raise
                    except Exception as exc:
                        single.running = False
                        await agents.failed(single, exc)
                    else:
                        if awaited is not NEED:  # a real await of the body's: the loop's
                            try:
                                await single.carry(awaited)
                            except FATAL:
                                raise
                            except Exception as exc:
                                await agents.failed(single, exc)
                else:
                    await agents.feed()
            if joined:
                await drain_joins(self)
            if calls is None:
                done[rec.topic] = rec.offset + 1
            else:  # map_async: the offset waits for its calls
                calls.passed(rec)
            self.record = self._event = None
            if sinks is not None and sinks.mark():
                await sinks.flush()  # a batch is due: the task waits for it (backpressure)
            if self.full:
                self.full = False
                await collector.submit_full()
            if not self.events_in % BROADCAST_CHECK:
                every_check(self)

    async def _wait(self, hold: float | None = None) -> None:
        """Wait for records (or, `hold` seconds at most, for a held record's tables)."""
        if self.calls is not None and self.calls.outstanding:
            await self.calls.wait(self)  # map_async calls in flight (async_map.py)
            return
        if self.status is not TaskState.RUNNING:
            raise _Closed
        pausing = self.control.pausing
        if self.joined and not pausing:  # results of a watermark moved from outside
            await drain_joins(self)
            return
        if not pausing:
            await self.collector.submit()
            if self._closing():  # closed while submitting: nobody will wake us
                raise _Closed
            self._on_room()
            if self._records and not self.control.pausing and hold is None:
                return
        clock = self.clock
        timeout = hold
        if clock is not None:
            again = clock.broadcast(self.collector)  # (a change held back: look again then)
            if clock.outputs:  # wake up now and then to say we are idle
                timeout = min(timeout or math.inf, clock.idle_timeout / 2, again or math.inf)
        if self.timers:
            due = fire_processing_timers(self.timers.values())
            if due is not None:
                timeout = due if timeout is None else min(timeout, due)
        await self.control.park(timeout)
        if self.status is not TaskState.RUNNING:
            raise _Closed

    def here(self) -> tuple[Any, Any, Any, int | None]:
        """Where the pass is (record, key, value, event time): a map_async call resumes it."""
        return self.record, self._key, self._value, self.event_ts

    def back_to(self, here: tuple[Any, Any, Any, int | None]) -> None:
        self.record, self._key, self._value, self.event_ts = here
        self._event = None

    @property
    def idle(self) -> bool:
        """Blocked between two records, with nothing about to wake it."""
        return self.control.idle

    def wake(self) -> None:
        """Let a waiting task look again (due processing-time timers fire in `_wait`)."""
        self.control.wake()

    def pause_now(self) -> Awaitable[None] | None:
        """Exactly-once step 1: what to await, if anything (`PassControl.pause_now`)."""
        return self.control.pause_now(self)

    def resume(self) -> None:
        self.control.resume(bool(self._records) or self._closing())

    def dead_letter(self, rec: Any, reason: str, error_type: str, agent: str | None = None) -> None:
        """`rec` to the dead-letter topic, said to come from `agent` (else the stage)."""
        name = self.stage.name if agent is None else agent
        dead_letter(
            self.collector, self.dlq_topic, rec, agent=name, reason=reason, error_type=error_type
        )
        self.dead_letters += 1
        log.warning(
            "dead letter from %s[%d]@%d: %s: %s",
            rec.topic, rec.partition, rec.offset, error_type, reason,
        )  # fmt: skip

    async def close(self, grace: float) -> None:
        """Stop after the record in flight: drop what is buffered, let the agents finish.

        Records dropped here were never processed, so their offsets are never committed and
        the next owner of the partition reads them again. A record still in flight after
        `grace` is cancelled: the task is `cut_short`, and under exactly-once nothing it did
        since its last checkpoint commits (`exactly_once.py`)."""
        if self.status is TaskState.CLOSED:
            return
        if self.status is TaskState.CREATED:
            self._set_status(TaskState.CLOSED)
            return
        self._set_status(TaskState.CLOSING)
        self._records.clear()
        self.control.wake_always()
        runner = self._runner
        if runner is not None and not runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(runner), grace)
            except TimeoutError:  # cut short: nothing of its uncommitted work may commit
                self.cut_short = True  # (the checkpoint aborts it like a crash's)
                log.error("%r: agent did not finish its event in %.0fs; cancelled, its "
                          "uncommitted work dropped", self, grace)  # fmt: skip
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
        if self.sinks is not None:
            self.sinks.close()
        self.tables = {}
