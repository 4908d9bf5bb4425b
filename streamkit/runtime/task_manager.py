"""TaskManager: the tasks of this worker, one per stage and assigned partition.

It creates tasks when the group assigns partitions (a stage with several inputs, a merge,
gets one task for partition p of all of them: the assignor keeps them together), closes them
when partitions are revoked, hands fetched records to the right task, and says which
partitions have room for more. Tasks are named by their stage's first input partition."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.errors import IllegalOperation, KafkaError
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import Commits, stable_commits_once
from streamkit.app import App
from streamkit.eventtime import TimestampPolicy
from streamkit.graph import Stage
from streamkit.runtime.collector import ProduceFailed, RecordCollector, Sealed
from streamkit.runtime.event_clock import EventClock
from streamkit.runtime.sinks import TaskSinks, stage_sinks
from streamkit.runtime.task import Task
from streamkit.state.changelog import Restorer
from streamkit.state.task_tables import TaskTables, store_path

log = logging.getLogger(__name__)


class WorkerCollector(RecordCollector):
    """The one collector of every task of a worker with one transactional producer (its
    producer is the worker's `Gate`). A task that runs out of records hands over only the
    batches that filled up: the others wait for the checkpoint (nobody can read them before
    its commit anyway), so each destination partition gets at most one partly filled batch
    per transaction, however many tasks write to it. The checkpoint hands them over in one
    call where the producer takes that (`Gate.bulk`)."""

    async def submit(self) -> None:
        await self.submit_full()

    async def _hand_over(self, sealed: Sealed) -> None:
        if not self.producer.bulk:
            await super()._hand_over(sealed)
            return
        batches = sealed.batches
        try:
            futures = await self.producer.send_batches(batches)
        except (KafkaError, IllegalOperation) as exc:
            raise ProduceFailed(f"producing {len(batches)} batches: {exc!r}") from exc
        sealed.in_flight.extend(
            (builder.record_count(), fut)
            for (_, _, builder), fut in zip(batches, futures, strict=True)
        )
        sealed.batches = []


class TaskManager:
    def __init__(
        self,
        app: App,
        producer: Any,
        on_failure: Callable[[BaseException], None],
        reader: Restorer,
        on_state_full: Callable[[], None],
    ) -> None:
        self._app = app
        self._producer = producer
        self._on_failure = on_failure
        self._reader = reader
        self._on_state_full = on_state_full
        self._stages_by_topic = {t.name: st for st in app.stages for t in st.topics}
        for stage in app.stages:  # a sink that cannot run fails the start (ConfigError)
            for sink in stage_sinks(stage):
                sink.check(app.settings.postgres_dsn)
        self._partition_counts: dict[str, int] = {}
        self.tasks: dict[TopicPartition, Task] = {}  # by the task's name
        self.by_input: dict[TopicPartition, Task] = {}  # by each of its input partitions
        self.last_owned: set[TopicPartition] = set()  # what we held before the rebalance
        self.room = asyncio.Event()  # set when some task drained its buffer
        # metrics: records acknowledged per destination partition (every collector adds to
        # it, per batch), and a hook that sees each task once it is closed (its final counts)
        self.delivered: dict[tuple[str, int], int] = {}
        # One transactional producer per worker: every task appends to one collector, so each
        # destination partition gets one batch per checkpoint (not one per task: with P tasks
        # writing to P partitions that would be P * P small batches, each its own round trip)
        self.share_collector = False
        self._shared: RecordCollector | None = None
        self.on_closed: Callable[[list[Task]], None] | None = None

    def _collector(self, producer: Any, transactional: bool) -> RecordCollector:
        """A task's collector: its own, or the worker's one (`share_collector`, for as long as
        the producer stays the same)."""
        shared = self._shared
        if self.share_collector and transactional:
            if shared is None or shared.producer is not producer:
                shared = self._shared = WorkerCollector(
                    producer, self._partition_counts, transactional=True, delivered=self.delivered
                )
            return shared
        return RecordCollector(
            producer, self._partition_counts, transactional=transactional, delivered=self.delivered
        )

    @property
    def source_topics(self) -> list[str]:
        return sorted(self._stages_by_topic)

    @property
    def stages_by_topic(self) -> dict[str, Stage]:
        return dict(self._stages_by_topic)

    def stateful_topics(self) -> set[str]:
        return {t for t, stage in self._stages_by_topic.items() if stage.tables}

    def copartitioned(self) -> list[list[str]]:
        """Input topics read by one task per partition (a stage's inputs): assigned together."""
        return [[t.name for t in st.topics] for st in self._app.stages if len(st.topics) > 1]

    def task_key(self, tp: TopicPartition) -> TopicPartition:
        """The name of the task that reads `tp`: its stage's first input, same partition."""
        return TopicPartition(self._stages_by_topic[tp.topic].source.name, tp.partition)

    def owned(self) -> set[TopicPartition]:
        return set(self.by_input) | self.last_owned

    def local_state(self) -> set[TopicPartition]:
        """Partitions with a store on this worker's disk (assignor metadata)."""
        found = set()
        for topic, stage in self._stages_by_topic.items():
            if not stage.tables:
                continue
            folder = store_path(self._app.settings.workdir, self._app.id, stage, 0).parent
            for path in folder.glob("*.sqlite"):
                if path.stem.isdigit():
                    found.add(TopicPartition(topic, int(path.stem)))
        return found

    def _signal_room(self) -> None:
        self.room.set()

    def assign(
        self,
        tps: Iterable[TopicPartition],
        producers: dict[TopicPartition, Any] | None = None,
        commits: Commits | None = None,
        seek: bool = True,
    ) -> None:
        """Create and start the tasks of `tps`. Exactly-once passes each task's transactional
        producer (by task name) and the partitions' commits the consumer was seeked to
        (`seek`: records before them are skipped); in every mode their metadata holds the
        partition times event-time tasks resume from (`EventClock.resume`)."""
        settings = self._app.settings
        producers = producers or {}
        present = {tp: c for tp, c in (commits or {}).items() if c is not None}
        positions = {tp: c.offset for tp, c in present.items()} if seek else {}
        times = {tp: c.metadata for tp, c in present.items() if c.metadata}
        self._partition_counts.update(
            {t.name: t.partitions for t in self._app.topics.values() if t.partitions}
        )
        for tp in sorted(tps):
            if tp in self.by_input:
                continue
            stage = self._stages_by_topic[tp.topic]
            key = self.task_key(tp)
            state = None
            if stage.tables:
                state = TaskTables(
                    self._app.id,
                    settings.workdir,
                    stage,
                    tp.partition,
                    settings.state_cache_entries,
                    on_full=self._on_state_full,
                    write_interval=settings.state_write_interval,
                )
            clock = self._clock(stage, tp.partition)
            if clock is not None:
                for t in stage.topics:
                    clock.resume(t.name, times.get(TopicPartition(t.name, tp.partition), ""))
            task = Task(
                stage,
                tp.partition,
                self._collector(producers.get(key, self._producer), key in producers),
                dlq_topic=self._app.dlq.name,
                on_agent_error=settings.on_agent_error,
                on_room=self._signal_room,
                state=state,
                reader=self._reader,
                positions={
                    t.name: positions[TopicPartition(t.name, tp.partition)]
                    for t in stage.topics
                    if TopicPartition(t.name, tp.partition) in positions
                },
                clock=clock,
                sync_wait=settings.table_sync_max_wait,
                sinks=self._sinks(stage, key),
            )
            self.tasks[key] = task
            for itp in task.inputs:
                self.by_input[itp] = task
            task.start()
            runner = task.runner
            assert runner is not None
            runner.add_done_callback(self._runner_done)
        self.room.set()  # the fetch loop: new partitions to read
        holding = set(self.by_input)
        if holding == set(tps):
            log.info("assigned %s", _fmt(tps))
        else:  # cooperative: the line still says all it holds (scripts read the last one)
            log.info("assigned %s (new: %s)", _fmt(holding), _fmt(tps))

    def _sinks(self, stage: Stage, key: TopicPartition) -> Callable[[Task], TaskSinks] | None:
        """The sinks beyond Kafka of the stage (runtime/sinks.py), made for each task."""
        declared = stage_sinks(stage)
        if not declared:
            return None
        settings = self._app.settings

        def make(task: Task) -> TaskSinks:
            return TaskSinks(
                task,
                declared,
                app_id=self._app.id,
                task_name=f"{key.topic}-{key.partition}",
                inputs=[tp.topic for tp in task.inputs],
                postgres_dsn=settings.postgres_dsn,
                retry_timeout=settings.sink_retry_timeout,
            )

        return make

    async def partition_times(self, consumer: Any, tps: set[TopicPartition]) -> Commits:
        """At least once: the commits of the source partitions that event-time tasks read
        (their metadata; the consumer seeks by itself), one OffsetFetch."""
        timed = {
            i.topic.name
            for st in self._app.stages
            if st.uses_event_time
            for i in st.inputs
            if i.upstream is None
        }
        if not any(tp.topic in timed for tp in tps):
            return {}
        found, _ = await stable_commits_once(consumer, sorted(tps))
        return found

    def _clock(self, stage: Stage, partition: int) -> EventClock | None:
        """Event time for stages that use it (or feed a stage that does)."""
        if not stage.uses_event_time:
            return None
        inputs = {}
        for inp in stage.inputs:
            if inp.upstream is None:
                inputs[inp.topic.name] = (inp.topic.timestamp_policy, 0)
            else:  # after a repartition hop: the record timestamp is the event time
                inputs[inp.topic.name] = (TimestampPolicy(), inp.upstream.partitions or 1)
        # watermarks go only to stages that read them (others would take them for data)
        timed = {i.topic.name for s in self._app.stages if s.uses_event_time for i in s.inputs}
        outputs = [out for out in stage.outputs if out.name in timed]
        return EventClock(inputs, partition, outputs, self._app.settings.idle_timeout)

    def _runner_done(self, runner: asyncio.Task[None]) -> None:
        if runner.cancelled():
            return
        exc = runner.exception()
        if exc is not None:
            self._on_failure(exc)

    async def revoke(self, tps: Iterable[TopicPartition]) -> list[Task]:
        """Close the tasks of `tps` (each finishes its in-flight event); return them."""
        closing = []
        for tp in tps:
            task = self.by_input.get(tp)
            if task is not None and task not in closing:
                closing.append(task)
        for task in closing:
            self.tasks.pop(TopicPartition(task.topic.name, task.partition), None)
            for itp in task.inputs:
                self.by_input.pop(itp, None)
        self.last_owned = {itp for t in closing for itp in t.inputs}
        timeout = self._app.settings.shutdown_timeout
        await asyncio.gather(*(task.close(timeout) for task in closing))
        if self.on_closed is not None and closing:
            self.on_closed(closing)
        if closing:
            log.info("revoked %s", _fmt(itp for t in closing for itp in t.inputs))
        return closing

    def dispatch(self, batches: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, int]:
        """Hand records to their tasks. Returns where to rewind partitions that have no task
        (records fetched in the instant between an assignment and its tasks), so none is lost."""
        tasks = self.by_input
        rewind = {}
        for tp, records in batches.items():
            if not records:
                continue
            task = tasks.get(tp)
            if task is None or not task.put(records):
                rewind[tp] = records[0].offset
        return rewind

    def partitions_with_room(self, limit: int) -> list[TopicPartition]:
        return [
            tp for tp, task in self.by_input.items() if task.accepting and task.buffered < limit
        ]


def _fmt(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "nothing"
