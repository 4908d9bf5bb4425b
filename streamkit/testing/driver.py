"""AsyncTestDriver: an App's agents on in-memory topics, no broker, time under the test's control.

It runs the runtime's own pieces: a `TaskManager` makes one `Task` per partition of every
stage's input (source topics and repartition topics), each with its `RecordCollector`, tables
over a SQLite store in a temporary folder, window tables, timers and event clock. Only what
they talk to is in memory (`memory.py`): the producer the collectors hand batches to writes
into in-memory topic logs, the consumer group the at-least-once `Checkpointer` commits to is a
dict, the changelog restorer reads the in-memory changelogs, and processing time is a
`VirtualClock` (the runtime reads it through `streamkit.context.WALL_CLOCK`).

After every call that adds input or moves time, the driver *pumps* until nothing moves: it
waits until every task is idle in its stream with an empty buffer, submits what the
collectors hold, lets every relay task tell the next stage its watermark (as it would within
0.2 s on a real worker), and hands the new records of every stage input to their tasks; then
again, until no stage input has a record left. So when `send` returns, the event and
everything it caused downstream (repartition hops, windows closed by the new watermark,
dead letters, late events) are in the output topics.
"""

from __future__ import annotations

import asyncio
import contextvars
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streamkit.app import App
from streamkit.context import CURRENT_COLLECTOR, CURRENT_TASK, WALL_CLOCK
from streamkit.events import Headers
from streamkit.eventtime import read_control, to_ms
from streamkit.registry.codec import prepare_app_codecs
from streamkit.runtime.checkpoint import Checkpointer
from streamkit.runtime.task import Task
from streamkit.runtime.task_manager import TaskManager
from streamkit.state.table import TablePartition
from streamkit.testing.follow import follow_global, follow_sources
from streamkit.testing.memory import (
    MemoryGroup,
    MemoryLog,
    MemoryProducer,
    MemoryRestorer,
    VirtualClock,
)
from streamkit.testing.topics import MemoryTopics
from streamkit.testing.views import (
    Output,
    TableView,
    VersionedView,
    WindowView,
    pending_timers,
)
from streamkit.topics import Topic

START_TIME = 1_704_067_200.0  # 2024-01-01T00:00:00Z: the virtual clock's default start
SETTLE_TIMEOUT = 10.0  # seconds the agents may take to go idle before the driver gives up
SPINS = 200  # event-loop turns tried before settling waits a millisecond between looks

R = TypeVar("R")


class DriverFailed(Exception):
    """The driver stopped earlier because agent code or the runtime failed (chained)."""


class AsyncTestDriver:
    """`async with AsyncTestDriver(app) as driver:` — see docs/testing.md."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: App,
        *,
        start_time: float = START_TIME,
        workdir: Path | str | None = None,
        settle_timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        if not app.agents and not app.sink_nodes:
            raise ValueError(
                f"app {app.id} has no agents: decorate one with @app.agent(topic), or write a "
                "stream to a topic with app.stream(topic)...to(other)"
            )
        self.app = app
        self.clock = VirtualClock(start_time)
        self.log = MemoryLog()
        self.producer = MemoryProducer(self.log, self.clock)
        self.group = MemoryGroup()
        self.restorer = MemoryRestorer(self.log)
        self.topics = MemoryTopics(self.log, self.producer, self.clock)
        self.settle_timeout = settle_timeout
        self._given_workdir = None if workdir is None else Path(workdir)
        self._tmp: str | None = None
        self._saved_settings = app.settings
        self._ctx = contextvars.copy_context()
        self._ctx.run(WALL_CLOCK.set, self.clock)
        self._manager: TaskManager | None = None
        self._checkpointer = Checkpointer(self.group)
        self._positions: dict[TopicPartition, int] = {}  # next offset handed to each task
        self._global: dict[TopicPartition, int] = {}  # next offset of each global table source
        self._read: dict[str, int] = {}  # read cursor per topic (records written before it)
        self._failure: BaseException | None = None
        self._checkpoint_due = False
        self._last_checkpoint = 0.0  # virtual monotonic time of the last checkpoint
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncTestDriver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def workdir(self) -> Path:
        return self.app.settings.workdir

    async def start(self) -> None:
        """Resolve partition counts, create the in-memory topics, start a task per partition
        of every stage input (restoring tables from the changelogs) and wait until they run."""
        if self._started:
            raise RuntimeError("the driver is started already")
        app = self.app
        if self._given_workdir is None:
            self._tmp = tempfile.mkdtemp(prefix=f"streamkit-test-{app.id}-")
            workdir = Path(self._tmp)
        else:
            workdir = self._given_workdir
        # every checkpoint writes the stores, as `checkpoint()` says (a worker's wait up to
        # `state_write_interval` between writes of a store is not the test's to wait for)
        app.settings = app.settings.model_copy(
            update={"workdir": workdir, "state_write_interval": 0.0}
        )
        try:
            await self._start(app)
        except BaseException:  # a bad app fails here: nothing of its start stays behind
            await self._release(commit=False)
            raise

    async def _start(self, app: App) -> None:
        self.topics.create(app)
        # schema-registry codecs register at start, as a worker's do (a real registry: the
        # app's schema_registry_url)
        await asyncio.to_thread(prepare_app_codecs, app)
        for gt in app.global_tables.values():  # loaded before the tasks start, as a worker does
            gt.data.clear()
            gt.ready = True
            for p in range(gt.source.partitions or 1):
                self._global[TopicPartition(gt.source.name, p)] = 0
        self._follow_global()
        self._started = True
        await self._assign({})

    async def _assign(self, positions: dict[TopicPartition, int]) -> None:
        manager = self._manager = TaskManager(
            self.app, self.producer, self._fail, self.restorer, self._request_checkpoint
        )
        tps = [
            TopicPartition(topic.name, p)
            for stage in self.app.stages
            for topic in stage.topics
            for p in range(topic.partitions or 1)
        ]
        self._positions = {tp: positions.get(tp, 0) for tp in tps}
        meta = self.group.metadata
        commits = {tp: OffsetAndMetadata(at, meta.get(tp, "")) for tp, at in positions.items()}
        self._ctx.run(manager.assign, tps, None, commits)  # tasks inherit the virtual clock
        await self._pump()

    async def close(self) -> None:
        """Stop every task after a final checkpoint; give the app its settings back; delete the
        temporary state folder."""
        if self._started:
            await self._release(commit=self._failure is None)

    async def _release(self, *, commit: bool) -> None:
        self._started = False
        try:
            await self._stop_tasks(commit=commit)
        finally:
            self.app.settings = self._saved_settings
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    async def _stop_tasks(self, *, commit: bool = True) -> None:
        """Each task finishes its event; then the final checkpoint (not after a failure)."""
        manager = self._manager
        if manager is None:
            return
        self._manager = None
        closed = await manager.revoke(list(manager.tasks))
        try:
            if commit:
                await self._checkpointer.commit(closed)
        finally:
            for task in closed:
                task.close_state()
            self._checkpointer.forget(itp for t in closed for itp in t.inputs)

    async def restart(self, *, lose_state: bool = False, crash: bool = False) -> None:
        """Stop every task as a worker's shutdown does (final checkpoint; `crash=True`: none, as
        a kill -9), then start them again from the committed offsets: tables come back from
        their SQLite files and changelogs, or (`lose_state=True`) from the changelogs alone."""
        self._check()
        await self._pump()
        await self._stop_tasks(commit=not crash)
        if lose_state:
            shutil.rmtree(self.workdir / self.app.id, ignore_errors=True)
        await self._assign(dict(self.group.offsets))

    # -- input ---------------------------------------------------------------------------------

    def topic(self, topic: Topic | str) -> Topic:
        """The app's topic of that name (or that Topic, checked to belong to the app)."""
        name = topic if isinstance(topic, str) else topic.name
        found = self.app.topics.get(name)
        if found is None or (isinstance(topic, Topic) and found is not topic):
            raise KeyError(f"topic {name} is not declared by app {self.app.id}")
        return found

    @property
    def now(self) -> float:
        """The virtual wall clock, epoch seconds."""
        return self.clock.time()

    async def send(
        self,
        topic: Topic | str,
        value: Any = None,
        *,
        key: Any = None,
        timestamp: Any = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Output:
        """Write one record (encoded with the topic's codecs) and process everything it
        causes. `timestamp`: epoch seconds or a datetime (default: the virtual clock);
        `partition`: default murmur2 of the key as a Java producer would, round-robin when
        there is no key. Returns the record as written."""
        target = self.topic(topic)
        encoded_key, encoded_value = target.encode_key(key), target.encode_value(value)
        self._check()
        record = self.topics.append(
            target, encoded_key, encoded_value, timestamp, partition, headers
        )
        await self._pump()
        return record

    async def send_raw(
        self,
        topic: Topic | str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        timestamp: Any = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Output:
        """Write bytes as they are (no codec): bad input for the dead-letter path."""
        self._check()
        record = self.topics.append(self.topic(topic), key, value, timestamp, partition, headers)
        await self._pump()
        return record

    async def send_many(self, topic: Topic | str, items: Iterable[Any]) -> list[Output]:
        """Write several records, then process them together (tasks see them as one fetch).
        Each item is a value, or an `sk.Record(value, key=, headers=, timestamp_ms=)`."""
        target = self.topic(topic)
        self._check()
        written = [self.topics.append_item(target, item) for item in items]
        await self._pump()
        return written

    # -- time ----------------------------------------------------------------------------------

    async def advance_time(self, seconds: float) -> None:
        """Move processing time forward: due processing-time timers fire, input partitions
        quiet for `idle_timeout` count as idle, and a checkpoint runs when a
        `commit_interval` has passed since the last one."""
        self._check()
        self.clock.advance(seconds)
        for task in self._tasks():
            if task.timers:
                task.wake()  # a waiting task fires its due timers before waiting again
        await self._pump()

    async def advance_watermark(self, when: Any, *, topic: Topic | str | None = None) -> None:
        """Move the event-time watermark of the tasks reading `topic` (default: every source
        topic of an agent that uses event time) to `when` (epoch seconds or a datetime), as an
        event at `when` + out-of-orderness would: windows close, event-time timers fire, and
        the watermark travels across repartition topics to the later stages."""
        self._check()
        name = None if topic is None else self.topic(topic).name
        watermark = to_ms(when)
        moved = [
            task
            for task in self._tasks()
            if task.clock is not None
            and any(
                i.upstream is None and (name is None or i.topic.name == name)
                for i in task.stage.inputs
            )
        ]
        if not moved:
            where = "any source topic" if name is None else name
            raise ValueError(f"no agent reading {where} uses event time (window tables or timers)")
        for task in moved:
            clock = task.clock
            assert clock is not None
            self._as_task(task, clock.advance_to, watermark)
            if task.joined:
                task.wake()  # a waiting task pushes on the join results the watermark made
        await self._pump()

    def _as_task(self, task: Task, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn` as code of `task` (its tables, timers and `topic.produce` work)."""
        ctx = self._ctx.copy()

        def call() -> R:
            CURRENT_TASK.set(task)
            CURRENT_COLLECTOR.set(task.collector)
            return fn(*args)

        return ctx.run(call)

    def watermarks(self, topic: Topic | str) -> dict[int, int]:
        """The event-time watermark (epoch ms) of each task reading `topic`."""
        name = self.topic(topic).name
        return {
            task.partition: task.clock.watermark
            for task in self._tasks()
            if task.clock is not None and any(t.name == name for t in task.stage.topics)
        }

    # -- pumping -------------------------------------------------------------------------------

    def _tasks(self) -> list[Task]:
        return [] if self._manager is None else list(self._manager.tasks.values())

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    def _request_checkpoint(self) -> None:
        self._checkpoint_due = True

    def _check(self) -> None:
        if not self._started:
            raise RuntimeError("the driver is not running: use it inside `with`/`async with`")
        if self._failure is not None:
            raise DriverFailed(
                f"the driver stopped after a failure: {type(self._failure).__name__}: "
                f"{self._failure}"
            ) from self._failure

    async def _pump(self) -> None:
        while True:
            await self._settle()
            for task in self._tasks():
                clock = task.clock
                if clock is not None and clock.outputs:
                    clock.broadcast(task.collector, force=True)
                await task.collector.submit()
            if not self._deliver():
                break
        elapsed = self.clock.monotonic()
        if self._checkpoint_due or elapsed - self._last_checkpoint >= (
            self.app.settings.commit_interval
        ):
            await self.checkpoint()

    async def _settle(self) -> None:
        """Wait until every task is idle in its stream with nothing buffered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_timeout
        spins = 0
        while True:
            failure = self._failure
            if failure is not None:
                raise failure
            tasks = self._tasks()
            if all(t.accepting and t.idle and not t.buffered for t in tasks) and spins:
                return
            spins += 1
            await asyncio.sleep(0 if spins < SPINS else 0.001)
            if loop.time() > deadline:
                busy = [t for t in tasks if not (t.accepting and t.idle and not t.buffered)]
                raise TimeoutError(
                    f"agents still busy after {self.settle_timeout}s: {busy} (does agent code "
                    "await something that never completes?)"
                )

    def _follow_global(self) -> bool:
        return follow_global(self.app, self.log, self._global)

    def _deliver(self) -> bool:
        """Hand each task the records of its input written since the last hand-over."""
        manager = self._manager
        assert manager is not None
        self._follow_global()
        follow_sources(self._tasks(), self.log)
        batches = {}
        for tp, position in self._positions.items():
            records = self.log.read(tp.topic, tp.partition, position)
            if records:
                batches[tp] = records
                self._positions[tp] = records[-1].offset + 1
        if not batches:
            return False
        rewind = manager.dispatch(batches)
        if rewind:
            raise RuntimeError(f"tasks refused records: {rewind}")
        return True

    async def checkpoint(self) -> None:
        """Run the at-least-once checkpoint now: tables' changes to their changelog topics
        and SQLite files, outputs flushed, input offsets committed."""
        self._check()
        await self._settle()
        self._checkpoint_due = False
        self._last_checkpoint = self.clock.monotonic()
        await self._checkpointer.commit(self._tasks())

    # -- output --------------------------------------------------------------------------------

    def records(self, topic: Topic | str) -> list[Output]:
        """Every record written to `topic`, in the order written (watermark control records
        of repartition topics left out)."""
        target = self.topic(topic)
        return [Output.of(r, target) for r in self.log.written(target.name) if not _is_control(r)]

    def read(self, topic: Topic | str) -> list[Output]:
        """The records written to `topic` since the last `read` of it, in the order written."""
        target = self.topic(topic)
        written = self.log.written(target.name)
        start = self._read.get(target.name, 0)
        self._read[target.name] = len(written)
        return [Output.of(r, target) for r in written[start:] if not _is_control(r)]

    def read_values(self, topic: Topic | str) -> list[Any]:
        """`read`, values only."""
        return [r.value for r in self.read(topic)]

    def drain(self) -> dict[str, list[Output]]:
        """`read` of every topic that has unread records."""
        found = {}
        for name in self.log.topics():
            records = self.read(name)
            if records:
                found[name] = records
        return found

    def committed(self, topic: Topic | str) -> dict[int, int]:
        """The consumer group's committed offsets of `topic`, per partition."""
        name = self.topic(topic).name
        return {tp.partition: off for tp, off in self.group.offsets.items() if tp.topic == name}

    # -- state ---------------------------------------------------------------------------------

    def _table_parts(self, name: str) -> dict[int, TablePartition]:
        parts = {t.partition: t.tables[name] for t in self._tasks() if name in t.tables}
        if not parts:
            known = ", ".join(sorted(self.app.tables)) or "none"
            raise KeyError(f"no table {name!r} in app {self.app.id} (tables: {known})")
        return parts

    def table(self, name: str) -> TableView:
        """A table across its partitions (`driver.table("spent")["u1"]`)."""
        return TableView(name, self._table_parts(name))

    def versioned(self, name: str) -> VersionedView:
        """A versioned table across its partitions (`driver.versioned("prices").as_of(k, t)`)."""
        table = self.app.versioned_tables.get(name)
        if table is None:
            raise KeyError(f"no versioned table {name!r} in app {self.app.id}")
        return VersionedView(table, self._table_parts(name))

    def window(self, name: str) -> WindowView:
        """A window table's open windows across its partitions."""
        if name not in self.app.windows:
            raise KeyError(f"no window table {name!r} in app {self.app.id}")
        windows = {t.partition: t.windows[name] for t in self._tasks() if name in t.windows}
        return WindowView(name, windows, self._table_parts(name))

    def timers(self, name: str) -> list[tuple[int, str, Any, Any]]:
        """Pending timers of a timer set: `(fire ms, "event"|"processing", key, payload)`."""
        if name not in self.app.timers:
            raise KeyError(f"no timer set {name!r} in app {self.app.id}")
        return pending_timers(self._table_parts(name))


def _is_control(record: Any) -> bool:
    return read_control(record.headers) is not None
