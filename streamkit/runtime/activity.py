"""Activity: what a worker's dashboard view needs beyond the Prometheus counters.

All of it is sampled from what the runtime already keeps, never counted per event:

- per input partition, events/s over the last RATE_WINDOW seconds (from `Task.events_in`,
  sampled once a second);
- busy time: ten times a second each task is looked at; busy = not blocked waiting for input
  (`Task.idle` false), backpressured = its buffer is full (`max_buffered_per_partition`);
  the fractions are over the last BUSY_WINDOW looks;
- the last checkpoints (when, how long, how many records the broker acknowledged since the
  previous one, changelog records among them, the size of the worker's stores on disk after
  it, whether a commit failed) and rebalances (when, how many partitions the worker got).
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from streamkit.runtime.tracing import Tracing

if TYPE_CHECKING:
    from streamkit.runtime.task import Task
    from streamkit.runtime.worker_view import WorkerView

RATE_WINDOW = 10  # one sample a second
BUSY_WINDOW = 100  # one look every 0.1 s: ten seconds
HISTORY = 120  # checkpoints and rebalances kept

TP = tuple[str, int]


class Activity:
    def __init__(self, worker: WorkerView) -> None:
        self._worker = worker
        self._counts: deque[tuple[float, Counter[TP]]] = deque(maxlen=RATE_WINDOW + 1)
        self._busy: dict[TP, deque[int]] = {}
        self._full: dict[TP, deque[int]] = {}
        self.checkpoints: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.rebalances: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._seen_rebalances = 0
        self._delivered_at_last = 0
        self._changelog_at_last = 0
        self._failures_at_last = 0
        self.tracing = Tracing.create(worker)  # None: off

    def _live(self) -> list[Task]:
        manager = self._worker.tasks
        return [] if manager is None else list(manager.tasks.values())

    # -- sampled by the web server's background task ---------------------------------------------

    def look(self) -> None:
        """Ten times a second: is each task busy, is its buffer full?"""
        limit = self._worker.settings.max_buffered_per_partition
        live = {}
        for task in self._live():
            tp = (task.topic.name, task.partition)
            live[tp] = task
            self._busy.setdefault(tp, deque(maxlen=BUSY_WINDOW)).append(0 if task.idle else 1)
            self._full.setdefault(tp, deque(maxlen=BUSY_WINDOW)).append(
                1 if task.buffered >= limit else 0
            )
        for tp in [tp for tp in self._busy if tp not in live]:
            del self._busy[tp]
            self._full.pop(tp, None)

    def sample(self, events_in: Counter[TP]) -> None:
        """Once a second: the counts per input partition; a new assignment, if any."""
        self._counts.append((time.monotonic(), Counter(events_in)))
        assignor: Any = self._worker.assignor
        seen = 0 if assignor is None else assignor.rebalances
        if seen != self._seen_rebalances:
            self._seen_rebalances = seen
            entry = {"at": time.time(), "partitions": len(self._live())}
            self.rebalances.append(entry)
            if self.tracing is not None:
                self.tracing.rebalance(entry, seen, assignor.member_id)

    def checkpoint(self, seconds: float) -> None:
        """After each checkpoint (the checkpointer's `on_checkpoint`)."""
        worker = self._worker
        delivered = dict(worker.tasks.delivered) if worker.tasks is not None else {}
        changelogs = {t.changelog.name for t in worker.app.tables.values() if not t.source}
        total = sum(delivered.values())
        changelog = sum(n for (topic, _), n in delivered.items() if topic in changelogs)
        checkpointer = worker.checkpointer
        failures = 0 if checkpointer is None else checkpointer.commit_failures
        entry = {
            "at": time.time(),
            "duration_s": round(seconds, 6),
            "records": max(0, total - self._delivered_at_last),
            "changelog_records": max(0, changelog - self._changelog_at_last),
            "failed": failures > self._failures_at_last,
            # the size of the state it made durable: this worker's stores on disk
            "state_bytes": sum(state_bytes(task) or 0 for task in self._live()),
        }
        self.checkpoints.append(entry)
        if self.tracing is not None:
            self.tracing.checkpoint(seconds, entry)
        self._delivered_at_last, self._changelog_at_last = total, changelog
        self._failures_at_last = failures

    # -- read by /status -----------------------------------------------------------------------

    def partition_rates(self) -> dict[TP, float]:
        if len(self._counts) < 2:
            return {}
        (t0, first), (t1, last) = self._counts[0], self._counts[-1]
        elapsed = max(t1 - t0, 1e-9)
        return {tp: max(0, n - first.get(tp, 0)) / elapsed for tp, n in last.items()}

    def busy(self, tp: TP) -> tuple[float | None, float | None]:
        """(busy, backpressured) fractions of the last looks at the task of `tp`."""
        looks, full = self._busy.get(tp), self._full.get(tp)
        if not looks or full is None:
            return None, None
        return round(sum(looks) / len(looks), 3), round(sum(full) / len(full), 3)


def state_bytes(task: Task) -> int | None:
    """Size on disk of a stateful task's SQLite store (with its write-ahead log)."""
    tables = task.state
    if tables is None:
        return None
    size = 0
    for suffix in ("", "-wal"):
        try:
            size += os.stat(f"{tables.path}{suffix}").st_size
        except OSError:
            continue
    return size
