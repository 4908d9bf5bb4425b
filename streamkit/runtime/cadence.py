"""When the next checkpoint is due: a fixed rate, and under exactly-once one follow-up.

- **Fixed rate.** Checkpoints start every `commit_interval`, counted from the start of the
  last one, not from its end: a checkpoint that takes 0.4 s of a 1 s interval does not
  stretch the cycle to 1.4 s (every output's wait with it). One that takes longer than the
  interval is followed after a quarter of an interval, so the tasks are not held back by
  checkpoints that run back to back.
- **The follow-up (exactly-once).** An output of a stage that reads a repartition topic is
  visible only once two transactions committed: the one that wrote its input, then its own.
  When this worker both wrote the input and runs the stage that reads it (one worker, or the
  partitions that share a worker), it does not wait a whole interval for the second: once the
  reading tasks have processed everything the last checkpoint wrote to their input
  partitions, the worker checkpoints again at once. An event's output is then visible about
  one interval after it arrives, not two. The follow-up arms no follow-up of its own (at most
  two transactions per interval), and it is dropped if the records are not processed within
  half an interval (a backlog: the regular checkpoint follows).

- **The lead (exactly-once).** Tasks that just started (the worker's start, a rebalance, a
  recovery) commit as soon as one of them has processed an event, not at the end of the
  interval running when they started: the first stage's first records are committed at once,
  and when the second stage reads them within the follow-up's half interval the first
  outputs after a start are visible after two short transactions, not two intervals (on a
  heavy backlog the follow-up can still miss, and the next regular checkpoint takes them).
  It is one checkpoint more per assignment at most: a regular checkpoint ends the lead.

Stages on other workers wait for their own interval (a worker does not know when another
committed). Under at-least-once outputs are visible as they are written: no follow-up, no
lead.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Mapping
from typing import Any

from aiokafka.structs import TopicPartition

# a checkpoint longer than the interval is followed after this share of an interval
REST_SHARE = 0.25
# while a follow-up is armed, how often the commit loop looks at the tasks' progress (s)
CHASE_POLL = 0.005


class Cadence:
    def __init__(self, interval: float, follow_up: bool) -> None:
        self.interval = interval
        self.follow_up = follow_up  # exactly-once: chase the last checkpoint's internal records
        self.started = self.ended = time.monotonic()  # of the last regular checkpoint
        # input partition -> the offset its task must have processed for the follow-up
        self.targets: dict[TopicPartition, int] = {}
        self.armed_at: float | None = None  # when the targets were set (None: no follow-up)
        self.follow_ups = 0  # taken (metrics, tests)
        self.leading: list[Any] = []  # tasks started since the last regular checkpoint (lead)
        self.leads = 0  # taken (tests)

    def begin(self) -> None:
        """A regular checkpoint starts now (it ends the lead: its tasks are in it)."""
        self.started = time.monotonic()
        self.leading = []

    def lead(self, tasks: Iterable[Any]) -> None:
        """`tasks` just started (exactly-once): the next checkpoint is due as soon as one of
        them has processed an event (`led`)."""
        if self.follow_up:
            self.leading.extend(tasks)

    def led(self) -> bool:
        """A task started since the last regular checkpoint has processed an event: the
        regular checkpoint is due now (tasks: `offsets()`, empty until their first event)."""
        if any(task.offsets() for task in self.leading):
            self.leads += 1
            return True
        return False

    def end(self) -> None:
        """The regular checkpoint is over."""
        self.ended = time.monotonic()

    def regular_due(self) -> float:
        """Monotonic time of the next regular checkpoint."""
        return max(self.started + self.interval, self.ended + self.interval * REST_SHARE)

    def arm(self, written: Mapping[tuple[str, int], int], inputs: set[TopicPartition]) -> None:
        """A regular checkpoint committed `written` (the last offset written per partition):
        the follow-up waits for the tasks reading those of them that are this worker's
        inputs."""
        if not self.follow_up:
            return
        targets = self.targets = inputs_written(written, inputs)
        self.armed_at = time.monotonic() if targets else None

    def disarm(self) -> None:
        self.targets = {}
        self.armed_at = None

    def chase_deadline(self) -> float | None:
        """Monotonic time after which an armed follow-up is dropped (None: not armed)."""
        if self.armed_at is None:
            return None
        return self.armed_at + self.interval / 2

    def due(self, now: float, by_input: Mapping[TopicPartition, Any]) -> tuple[bool, float]:
        """(follow-up, when): the next checkpoint, a regular one or a follow-up, is due at
        `when` (`now` or earlier: due now), the time to look again (every CHASE_POLL while a
        follow-up or a lead waits on the tasks, `by_input` their committable offsets)."""
        regular = self.regular_due()
        if now >= regular or self.led():
            return False, now
        chase = self.chase_deadline()
        if chase is not None and now >= chase:
            self.disarm()  # not processed in time (a backlog): the regular one
            chase = None
        if chase is not None and self.processed(by_input):
            return True, now
        if chase is not None or self.leading:
            return False, min(regular, now + CHASE_POLL)
        return False, regular

    def processed(self, by_input: Mapping[TopicPartition, Any]) -> bool:
        """`reached`, from the tasks by input partition (their committable offsets)."""
        done = {}
        for tp in self.targets:
            task = by_input.get(tp)
            if task is not None:
                done[tp] = task.offsets().get(tp, -1)
        return self.reached(done)

    def reached(self, done: Mapping[TopicPartition, int]) -> bool:
        """Every target processed: `done` gives each input partition's committable offset
        (a partition no longer this worker's is not waited for)."""
        return all(done.get(tp, at) >= at for tp, at in self.targets.items())


def inputs_written(
    written: Mapping[tuple[str, int], int], inputs: Container[TopicPartition]
) -> dict[TopicPartition, int]:
    """Of the partitions a checkpoint wrote (`written`: the last offset per partition), those
    that are this worker's `inputs`, each with the offset its task must reach to have read
    what was written."""
    return {
        tp: last + 1
        for (topic, partition), last in written.items()
        if (tp := TopicPartition(topic, partition)) in inputs
    }
