"""WorkerMetrics: a worker's counters as Prometheus metrics, read at scrape time.

Nothing here runs per event. The runtime already keeps plain integers where it works: each
task counts the events it decoded (`events_in`) and its dead letters, each table partition its
reads served from memory or from SQLite, the collectors add each acknowledged *batch* to a
per-destination count, the checkpointers count checkpoints and failed commits, the assignor
counts assignments. This collector reads them when `/metrics` is scraped; counts of tasks that
were closed (revoke, shutdown, recovery) are folded into totals first, so counters never go
back. The only thing observed as it happens is each checkpoint's duration (a histogram).

Every worker has its own `CollectorRegistry` (never the process-global one), so two workers in
one process (tests) do not mix their numbers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamkit.runtime.activity import Activity
from streamkit.runtime.fetch import consumer_progress

if TYPE_CHECKING:
    from streamkit.runtime.task import Task
    from streamkit.runtime.worker_view import WorkerView

RATE_WINDOW = 10  # samples (one a second) that per-stage rates are computed over
POSITION_TIMEOUT = 0.5


class WorkerMetrics(Collector):
    def __init__(self, worker: WorkerView) -> None:
        self._worker = worker
        self.registry = CollectorRegistry(auto_describe=False)
        self.checkpoint_seconds = Histogram(
            "streamkit_checkpoint_duration_seconds",
            "Duration of each checkpoint (flush, commit, state write).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.registry.register(self)
        # totals of closed tasks, per input partition / table
        self._closed_in: Counter[tuple[str, int]] = Counter()
        self._closed_dlq: Counter[tuple[str, int]] = Counter()
        self._closed_reads: Counter[tuple[str, str]] = Counter()
        self._closed_stage: Counter[str] = Counter()
        self._closed_sync: Counter[tuple[str, int, str]] = Counter()
        self._closed_sinks: Counter[tuple[str, str]] = Counter()  # (sink, written|refused|...)
        self._closed_calls: Counter[tuple[str, str]] = Counter()  # (stage, what): map_async
        self.lag: dict[TopicPartition, int] = {}
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=RATE_WINDOW + 1)
        self.activity = Activity(worker)  # the dashboard's view: busy time, histories

    # -- fed by the runtime --------------------------------------------------------------------

    def observe_checkpoint(self, seconds: float) -> None:
        self.checkpoint_seconds.observe(seconds)
        self.activity.checkpoint(seconds)

    def retire(self, tasks: Iterable[Task]) -> None:
        """Tasks that were just closed: keep their final counts."""
        for task in tasks:
            tp = (task.topic.name, task.partition)
            self._closed_in[tp] += task.events_in
            self._closed_dlq[tp] += task.dead_letters
            self._closed_stage[task.stage.name] += task.events_in
            self._closed_sync.update(_sync_counts(task))
            for name, part in task.tables.items():
                self._closed_reads[(name, "memory")] += part.hits
                self._closed_reads[(name, "store")] += part.misses
            if task.sinks is not None:
                for sink, what, n in task.sinks.counts():
                    self._closed_sinks[(sink, what)] += n
            if task.calls is not None:
                for what, n in task.calls.counts().items():
                    if what != "in_flight":
                        self._closed_calls[(task.stage.name, what)] += n

    # -- read at scrape / status time ------------------------------------------------------------

    def _live(self) -> list[Task]:
        manager = self._worker.tasks
        return [] if manager is None else list(manager.tasks.values())

    def events_in(self) -> Counter[tuple[str, int]]:
        counts = Counter(self._closed_in)
        for task in self._live():
            counts[(task.topic.name, task.partition)] += task.events_in
        return counts

    def events_out(self) -> dict[tuple[str, int], int]:
        manager = self._worker.tasks
        return {} if manager is None else dict(manager.delivered)

    def dead_letters(self) -> Counter[tuple[str, int]]:
        counts = Counter(self._closed_dlq)
        for task in self._live():
            counts[(task.topic.name, task.partition)] += task.dead_letters
        return counts

    def table_sync(self) -> Counter[tuple[str, int, str]]:
        counts = Counter(self._closed_sync)
        for task in self._live():
            counts.update(_sync_counts(task))
        return counts

    def sink_counts(self) -> Counter[tuple[str, str]]:
        """(sink, written|refused|retries) → count, over closed and live tasks."""
        counts = Counter(self._closed_sinks)
        for task in self._live():
            if task.sinks is not None:
                for sink, what, n in task.sinks.counts():
                    counts[(sink, what)] += n
        return counts

    def table_reads(self) -> Counter[tuple[str, str]]:
        counts = Counter(self._closed_reads)
        for task in self._live():
            for name, part in task.tables.items():
                counts[(name, "memory")] += part.hits
                counts[(name, "store")] += part.misses
        return counts

    def async_calls(self) -> Counter[tuple[str, str]]:
        """map_async per stage: attempts, retries, failures (totals), in_flight (now)."""
        counts = Counter(self._closed_calls)
        for task in self._live():
            if task.calls is not None:
                for what, n in task.calls.counts().items():
                    counts[(task.stage.name, what)] += n
        return counts

    def stage_totals(self) -> dict[str, int]:
        counts = Counter(self._closed_stage)
        for task in self._live():
            counts[task.stage.name] += task.events_in
        for stage in self._worker.app.stages:
            counts.setdefault(stage.name, 0)
        return dict(counts)

    def sample(self) -> None:
        """One point for the per-stage rates (the web server calls it every second)."""
        self._samples.append((time.monotonic(), self.stage_totals()))
        self.activity.sample(self.events_in())

    def stage_rates(self) -> dict[str, float]:
        """Events per second per stage over the last RATE_WINDOW seconds."""
        if len(self._samples) < 2:
            return {name: 0.0 for name in self.stage_totals()}
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        elapsed = max(t1 - t0, 1e-9)
        return {name: max(0, n - first.get(name, 0)) / elapsed for name, n in last.items()}

    async def refresh_lag(self) -> dict[TopicPartition, int]:
        """Records not yet processed per owned partition: the last stable offset minus the
        fetch position, plus what is fetched but still buffered in the task."""
        consumer = self._worker.consumer
        lag: dict[TopicPartition, int] = {}
        if consumer is None:
            self.lag = lag
            return lag
        assigned = consumer.assignment()
        fetch = self._worker.fetch
        for tp, task in list(self._worker.tasks.tasks.items() if self._worker.tasks else []):
            if tp not in assigned:
                continue
            if fetch is not None:
                progress = fetch.progress(tp)
            else:
                progress = await consumer_progress(consumer, tp, POSITION_TIMEOUT)
            if progress is None:
                continue  # nothing fetched yet: unknown
            position, end = progress
            lag[tp] = max(0, end - position) + task.buffered
        self.lag = lag
        return lag

    def collect(self) -> Iterator[Metric]:
        worker = self._worker
        tp_labels = ["topic", "partition"]
        events_in = CounterMetricFamily(
            "streamkit_events_in", "Events decoded per input partition.", labels=tp_labels
        )
        for (topic, p), n in sorted(self.events_in().items()):
            events_in.add_metric([topic, str(p)], n)
        yield events_in
        events_out = CounterMetricFamily(
            "streamkit_events_out",
            "Records acknowledged by the broker per destination partition (sinks, repartition, "
            "changelog, dead-letter and late topics).",
            labels=tp_labels,
        )
        for (topic, p), n in sorted(self.events_out().items()):
            events_out.add_metric([topic, str(p)], n)
        yield events_out
        lag = GaugeMetricFamily(
            "streamkit_consumer_lag",
            "Records not yet processed per owned partition.",
            labels=tp_labels,
        )
        for tp, n in sorted(self.lag.items()):
            lag.add_metric([tp.topic, str(tp.partition)], n)
        yield lag
        dlq = CounterMetricFamily(
            "streamkit_dead_letters", "Events sent to the dead-letter topic.", labels=tp_labels
        )
        for (topic, p), n in sorted(self.dead_letters().items()):
            dlq.add_metric([topic, str(p)], n)
        yield dlq
        late = CounterMetricFamily(
            "streamkit_late_events",
            "Events routed to a late topic, per window table.",
            labels=["table"],
        )
        for name, wt in sorted(worker.app.windows.items()):
            late.add_metric([name], wt.late_events)
        yield late
        reads = CounterMetricFamily(
            "streamkit_table_reads",
            "Table reads served from the in-memory cache (memory) or SQLite (store).",
            labels=["table", "source"],
        )
        for (name, source), n in sorted(self.table_reads().items()):
            reads.add_metric([name, source], n)
        yield reads
        sync = CounterMetricFamily(
            "streamkit_table_sync",
            "Records held back until the tables read from topics caught up (held), and those "
            "let through by table_sync_max_wait before they did (timed_out).",
            labels=[*tp_labels, "outcome"],
        )
        for (topic, p, outcome), n in sorted(self.table_sync().items()):
            sync.add_metric([topic, str(p), outcome], n)
        yield sync
        sink_rows = CounterMetricFamily(
            "streamkit_sink_rows",
            "Rows a sink beyond Kafka committed (written) or its destination refused (refused).",
            labels=["sink", "outcome"],
        )
        sink_retries = CounterMetricFamily(
            "streamkit_sink_retries",
            "Tries of a sink whose destination was unavailable.",
            labels=["sink"],
        )
        for (sink, what), n in sorted(self.sink_counts().items()):
            if what == "retries":
                sink_retries.add_metric([sink], n)
            else:
                sink_rows.add_metric([sink, what], n)
        yield sink_rows
        yield sink_retries
        yield from _async_call_metrics(self.async_calls())
        checkpointer = worker.checkpointer
        failures = CounterMetricFamily(
            "streamkit_commit_failures",
            "Checkpoints whose offsets (or transactions) did not commit.",
        )
        failures.add_metric([], 0 if checkpointer is None else checkpointer.commit_failures)
        yield failures
        checkpoints = CounterMetricFamily("streamkit_checkpoints", "Checkpoints run.")
        checkpoints.add_metric([], 0 if checkpointer is None else checkpointer.checkpoints)
        yield checkpoints
        rebalances = CounterMetricFamily(
            "streamkit_rebalances", "Partition assignments received from the group."
        )
        assignor: Any = worker.assignor
        rebalances.add_metric([], 0 if assignor is None else assignor.rebalances)
        yield rebalances
        assigned = GaugeMetricFamily(
            "streamkit_assigned_partitions", "Input partitions this worker owns."
        )
        assigned.add_metric([], len(self._live()))
        yield assigned


def _sync_counts(task: Task) -> dict[tuple[str, int, str], int]:
    sync = task.sync
    if sync is None:
        return {}
    tp = (task.topic.name, task.partition)
    return {(*tp, "held"): sync.holds, (*tp, "timed_out"): sync.timeouts}


def _async_call_metrics(counts: Counter[tuple[str, str]]) -> Iterator[Metric]:
    """map_async's calls per stage (`docs/async-io.md`)."""
    helps = {
        "attempts": "map_async calls made, retries included.",
        "retries": "map_async calls made again after a failure or a timeout.",
        "failures": "Events sent to the dead-letter topic after their last map_async attempt.",
    }
    for what, help_text in helps.items():
        family = CounterMetricFamily(f"streamkit_map_async_{what}", help_text, labels=["stage"])
        for (stage, kind), n in sorted(counts.items()):
            if kind == what:
                family.add_metric([stage], n)
        yield family
    in_flight = GaugeMetricFamily(
        "streamkit_map_async_in_flight",
        "Events taken by a map_async stage and not yet finished.",
        labels=["stage"],
    )
    for (stage, kind), n in sorted(counts.items()):
        if kind == "in_flight":
            in_flight.add_metric([stage], n)
    yield in_flight
