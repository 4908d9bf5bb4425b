"""map_async in one task: key-ordered async calls, with offsets and outputs as if sequential.

A stage's pass (`operators.py`) reaches a `map_async` step synchronously: the step only notes
a *job* (the value, its key, where the pass was) and returns. When the pass is over, the task
hands the record's jobs here (`passed`): the record's offset is held back (`Frontier`) until
each of its jobs has finished, and every job goes to its step's *lane*.

A lane runs `concurrency` long-lived worker coroutines (no asyncio task per event). A job
starts only when no earlier job of its key is in flight (`KeyGate`); a worker that finishes
a job runs the next job of that key itself. An attempt that raises or outlives `timeout` is
retried after a backoff; one that keeps failing becomes a `CallFailed`. A finished job waits
in `finished` for the task's coroutine, which picks it up between two records (`deliver`):
the pass resumes where the job left it (same record, key, value, event time), the operators
after the step and the agents they feed run, and the record's slot counts one job less. A job
of one key finishes after the job before it, so its key's outputs leave in offset order.

Backpressure: the task takes no new record while `capacity` jobs are unfinished, or while
finished ones wait to be delivered. Watermarks: the task's periodic watermark for the next
stage waits until no job is in flight (`broadcast`), the task taking no record meanwhile.
Checkpoints: under exactly-once the task's `pause` drains every job first (the task stops
taking records, delivers each job as it finishes, and parks only when none is left), so a
checkpoint's offsets and outputs match as in sequential code. At-least-once commits
`Frontier.committable`, never past an unfinished event. A task that closes delivers its
jobs before its final checkpoint.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.asyncmap import AsyncOptions, worst_case
from streamkit.runtime.agent_run import Agents
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.failures import FATAL
from streamkit.runtime.frontier import Frontier, KeyGate, Slot
from streamkit.runtime.pass_control import PassControl
from streamkit.settings import ConfigError, Settings
from streamkit.streams import AsyncMapNode

if TYPE_CHECKING:
    from streamkit.graph import Stage
    from streamkit.runtime.event_clock import EventClock

Push = Callable[[Any], None]
NOWHERE: tuple[Any, Any, Any, int | None] = (None, None, None, None)
SUBMIT_AFTER = 0.005  # seconds delivered outputs may wait for more before they are submitted


class CallFailed(Exception):
    """A map_async call that failed on every attempt: its event goes to the dead-letter topic."""


class CallHost(Protocol):
    """What the calls use of their task (`runtime/task.py`)."""

    record: Any
    full: bool
    collector: RecordCollector
    agents: Agents
    control: PassControl  # its `waiter`: what the task awaits (records, a close) resolves it

    def here(self) -> tuple[Any, Any, Any, int | None]: ...

    def back_to(self, here: tuple[Any, Any, Any, int | None]) -> None: ...

    def on_branch_error(self, exc: Exception, agent: str | None = None) -> None: ...


class Job:
    """One value on its way through one map_async step."""

    __slots__ = ("here", "key", "lane", "ok", "out", "slot", "value")

    def __init__(self, lane: Lane, key: Hashable, value: Any, here: tuple[Any, ...]) -> None:
        self.lane = lane
        self.key = key
        self.value = value
        self.here = here
        self.slot: Slot | None = None
        self.ok = False
        self.out: Any = None  # the call's result, or its CallFailed


class AsyncCalls:
    """Every map_async step of one task, and the offsets they hold back."""

    def __init__(self, task: CallHost) -> None:
        self.task = task
        self.frontier = Frontier()
        self.lanes: list[Lane] = []
        self.outstanding = 0  # jobs noted and not yet delivered
        self.capacity = 1 << 30  # the smallest capacity of the lanes
        self.waiter: asyncio.Future[None] | None = None  # the task waiting for a job to finish
        self.finished: deque[Job] = deque()
        self._fresh: list[Job] = []  # jobs of the pass (or delivery) going on
        self._done: dict[str, int | None] = {}
        self._crash: BaseException | None = None
        self._held: EventClock | None = None  # a watermark to send once no call is in flight
        self._hold = False  # take no record: crashed, or holding a watermark
        self._unsent_since: float | None = None  # when the oldest unsubmitted delivery was

    def lane(self, node: AsyncMapNode, nxt: Push) -> Push:
        """The push function of a map_async step whose result goes on to `nxt`."""
        lane = Lane(self, node, nxt)
        self.lanes.append(lane)
        self.capacity = min(self.capacity, node.options.capacity)
        return lane.push

    def bind(self, done: dict[str, int | None]) -> None:
        """Called in the task's coroutine: `done` is its committable offsets per input
        topic; the lanes' workers end with the coroutine."""
        self._done = done
        runner = asyncio.current_task()
        if runner is not None:
            runner.add_done_callback(lambda _: self.cancel())

    # -- the task's side -----------------------------------------------------------------------

    @property
    def blocked(self) -> bool:
        """The task should deliver finished jobs (or wait for one) before taking a record."""
        return self._hold or bool(self.finished) or self.outstanding >= self.capacity

    @property
    def ready(self) -> bool:
        return bool(self.finished) or self._crash is not None

    def linger(self) -> float | None:
        """Seconds until the outputs delivered so far should be submitted (None: there are
        none): one submit for many deliveries, not one small batch each."""
        since = self._unsent_since
        if since is None:
            return None
        return max(0.0, since + SUBMIT_AFTER - asyncio.get_running_loop().time())

    async def wait(self, task: CallHost) -> None:
        """Calls are in flight and the task takes no record: deliver those that finished, or
        wait for one (or for records, when there is room). Pausing or closing, the task comes
        back here until none is left. Outputs delivered meanwhile are submitted once they have
        waited `SUBMIT_AFTER`."""
        if not self.ready:
            control = task.control
            waiter = control.waiter = self.waiter = asyncio.get_running_loop().create_future()
            try:
                linger = None if control.pausing else self.linger()
                if linger is None:
                    await waiter
                else:
                    await asyncio.wait((waiter,), timeout=linger)
                    if not waiter.done():
                        self._unsent_since = None
                        await task.collector.submit()
            finally:
                control.waiter = self.waiter = None
        await self.deliver()

    def passed(self, rec: Any) -> None:
        """The pass of `rec` is over: its jobs start, its offset waits for them."""
        fresh = self._fresh
        slot = self.frontier.taken(rec.topic, rec.offset, len(fresh))
        if fresh:
            self._fresh = []
            for job in fresh:
                job.slot = slot
                job.lane.start(job)
        self._done[rec.topic] = self.frontier.committable(rec.topic)

    async def deliver(self) -> None:
        """Resume the pass of every finished job, in the order they finished."""
        task, finished = self.task, self.finished
        agents = task.agents
        if finished and self._unsent_since is None:
            self._unsent_since = asyncio.get_running_loop().time()
        while finished:
            job = finished.popleft()
            task.back_to(job.here)
            if job.ok:
                try:
                    job.lane.nxt(job.out)
                except FATAL:
                    raise
                except Exception as exc:
                    task.on_branch_error(exc)
            else:
                task.on_branch_error(job.out)
            if agents.pending:
                await agents.feed()
            slot = job.slot
            assert slot is not None
            fresh = self._fresh
            if fresh:  # a map_async after this one: the event waits for those calls too
                self._fresh = []
                slot.pending += len(fresh)
                for nxt in fresh:
                    nxt.slot = slot
                    nxt.lane.start(nxt)
            slot.pending -= 1
            self.outstanding -= 1
            if not self.outstanding and self._held is not None:
                self._held.broadcast(task.collector)
                self._held = None
                self._hold = self._crash is not None
            if not slot.pending:
                self._done[slot.topic] = self.frontier.committable(slot.topic)
            task.back_to(NOWHERE)
            if task.full:
                task.full = False
                await task.collector.submit_full()
        if self._crash is not None:
            raise self._crash

    def counts(self) -> dict[str, int]:
        """For the metrics: calls made (retries included), retries, events dead-lettered after
        their last attempt, and events taken but unfinished."""
        return {
            "attempts": sum(lane.attempts for lane in self.lanes),
            "retries": sum(lane.retries for lane in self.lanes),
            "failures": sum(lane.failures for lane in self.lanes),
            "in_flight": self.outstanding,
        }

    # -- the lanes' side -----------------------------------------------------------------------

    def note(self, job: Job) -> None:
        self._fresh.append(job)
        self.outstanding += 1

    def done(self, job: Job) -> None:
        self.finished.append(job)
        self._wake()

    def crashed(self, exc: BaseException) -> None:
        if self._crash is None:
            self._crash = exc
        self._hold = True
        self._wake()

    def broadcast(self, clock: EventClock) -> None:
        """Tell the next stage the watermark, but never ahead of an event whose calls are in
        flight: at once when none is, else once they are done (the task takes no record
        meanwhile, so that happens, even under a steady flow)."""
        if not self.outstanding:
            clock.broadcast(self.task.collector)
        else:
            self._held = clock
            self._hold = True

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel(self) -> None:
        for lane in self.lanes:
            lane.cancel()


class Lane:
    """One map_async step in one task: its workers and its key gate."""

    def __init__(self, calls: AsyncCalls, node: AsyncMapNode, nxt: Push) -> None:
        assert node.fn is not None
        self.calls = calls
        self.fn = node.fn
        self.name = getattr(node.fn, "__name__", type(node.fn).__name__)
        self.options: AsyncOptions = node.options
        self.nxt = nxt
        self.attempts = 0  # calls made, retries included
        self.retries = 0
        self.failures = 0  # events sent to the dead-letter topic
        self._gate: KeyGate[Job] = KeyGate()
        self._ready: deque[Job] = deque()
        self._sleepers: list[asyncio.Future[Job]] = []
        self._workers: list[asyncio.Task[None]] = []

    def push(self, value: Any) -> None:
        """The step, in the pass: note the job; it starts once the pass is over."""
        task = self.calls.task
        self.calls.note(Job(self, task.record.key, value, task.here()))

    def start(self, job: Job) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"streamkit-map-async-{self.name}-{i}")
                for i in range(self.options.concurrency)
            ]
        if self._gate.admit(job.key, job):
            if self._sleepers:
                self._sleepers.pop().set_result(job)
            else:
                self._ready.append(job)

    def cancel(self) -> None:
        for worker in self._workers:
            worker.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._ready:
                    job: Job | None = self._ready.popleft()
                else:
                    sleeper = loop.create_future()
                    self._sleepers.append(sleeper)
                    job = await sleeper
                while job is not None:
                    await self._call(job)
                    self.calls.done(job)
                    job = self._gate.release(job.key)  # the next of its key: on this worker
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # FATAL, or the process is going down
            self.calls.crashed(exc)

    async def _call(self, job: Job) -> None:
        """Call, retrying with backoff; the result or the last failure goes into `job`."""
        options = self.options
        delay = options.backoff
        failure: BaseException | None = None
        for attempt in range(options.retries + 1):
            if attempt:
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(2 * delay, options.max_backoff)
            self.attempts += 1
            try:
                if options.timeout is None:
                    job.out = await self.fn(job.value)
                else:
                    async with asyncio.timeout(options.timeout):
                        job.out = await self.fn(job.value)
            except FATAL:
                raise
            except Exception as exc:
                failure = exc
                continue
            job.ok = True
            return
        self.failures += 1
        job.out = CallFailed(
            f"map_async({self.name}) failed {options.retries + 1} times, the last: "
            + _describe(failure, options.timeout)
        )


def longest_calls(stages: list[Stage]) -> float:
    """The longest one event can spend in a map_async step's calls (0: no map_async step;
    a step without a timeout is refused under exactly-once by `check_call_budget`)."""
    worst = [
        worst_case(node.options) or 0.0
        for stage in stages
        for node in stage.nodes
        if isinstance(node, AsyncMapNode)
    ]
    return max(worst, default=0.0)


def check_call_budget(stages: list[Stage], settings: Settings) -> None:
    """At worker start, under exactly-once: a task that closes (rebalance, shutdown) waits for
    its calls before its final checkpoint, for at most `shutdown_timeout`; a step whose calls
    may take longer is refused (cut short, the task's uncommitted work would be aborted and
    redone by the next owner: `exactly_once.py`)."""
    if settings.processing_guarantee != "exactly_once":
        return
    for stage in stages:
        for node in stage.nodes:
            if not isinstance(node, AsyncMapNode):
                continue
            worst, opts = worst_case(node.options), node.options
            if worst is not None and worst < settings.shutdown_timeout:
                continue
            spent = (
                "has no timeout"
                if worst is None
                else f"may take {worst:.1f} s per event ({opts.retries + 1} attempts of "
                f"{opts.timeout:g} s, and the backoff)"
            )
            raise ConfigError(
                f"stage {stage.name}: {node.label} {spent}, not within shutdown_timeout "
                f"({settings.shutdown_timeout:g} s): under exactly-once a closing task waits "
                "for its calls. Give map_async a smaller timeout= or retries=, or raise "
                "STREAMKIT_SHUTDOWN_TIMEOUT"
            )


def _describe(exc: BaseException | None, timeout: float | None) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"timed out after {timeout} s"
    return f"{type(exc).__name__}: {exc}"
