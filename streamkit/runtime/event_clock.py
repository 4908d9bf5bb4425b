"""EventClock: the event time of one task, for agents that use event time (window tables,
timers); and opening a task's event-time state.

Per record it takes the event time (`on_data`, the topic's timestamp policy; after a
repartition hop, the record timestamp, which the upstream task set to the event time) and
reads watermark control records (`on_control`, never handed to agent code). When the
watermark advances it closes the task's windows. A task that relays to a repartition topic
writes its own watermark to every partition of that topic (`broadcast`), at most every
`BROADCAST_EVERY` seconds, and says it is idle once every input is (a source topic after
`idle_timeout` without records, a repartition topic once every upstream task of it said it is
idle), so the next stage does not wait for it. Before its first event after such an idle spell
it says it is not idle any more (`unidle`), so that the next stage counts it again before its
resumed records arrive (else the other upstreams' watermarks would make them late).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.context import WALL_CLOCK, TaskScope
from streamkit.eventtime import NO_WATERMARK, WatermarkTracker, control_headers, read_control
from streamkit.graph import Stage
from streamkit.state.table import TablePartition
from streamkit.state.window_open import open_window
from streamkit.state.window_table import Windows

if TYPE_CHECKING:
    from streamkit.eventtime import TimestampPolicy
    from streamkit.runtime.collector import RecordCollector
    from streamkit.state.timers import TimerPartition
    from streamkit.topics import Topic

log = logging.getLogger(__name__)

BROADCAST_EVERY = 0.2  # seconds between two watermark control records of a task
PARTITION_TIME = "t="  # commit metadata: a source partition's greatest event time read


class OnWatermark(Protocol):
    """Event-time state of a task (window tables, timers): loaded at start, advanced by
    the watermark."""

    def load(self) -> int:
        """Open it; the watermark its stored state reflects."""

    def advance(self, watermark: int) -> None: ...


def _nothing_pending(topic: str) -> bool:
    return False


class ClockInput:
    """One input topic of a stage: how its events get their time, and its watermark."""

    def __init__(self, policy: TimestampPolicy, upstreams: int) -> None:
        self.policy = policy
        self.tracker = WatermarkTracker(policy.out_of_orderness_ms, upstreams)
        self.last_input = float("-inf")


class EventClock:
    """The event time of one task. Its watermark is the minimum over its inputs' (left out
    while others move: a source-topic input quiet for `idle_timeout`, or one after a
    repartition hop whose every upstream task said it is idle; never one with records waiting
    in the task, or unfetched at the broker: `note_end`); with every input idle, the maximum.
    A repartition input is never left out for being quiet: its upstream tasks say when they
    are idle, and until then its records may be on their way (in an upstream's open
    transaction, behind a slow fetch); leaving it out would make them late."""

    def __init__(
        self,
        inputs: dict[str, tuple[TimestampPolicy, int]],
        partition: int,
        outputs: list[Topic],
        idle_timeout: float,
    ) -> None:
        self.inputs = {name: ClockInput(p, n) for name, (p, n) in inputs.items()}
        self._single = next(iter(self.inputs.values())) if len(self.inputs) == 1 else None
        self.current = NO_WATERMARK
        self.partition = partition  # who we are to the next stages
        self.outputs = outputs
        self.idle_timeout = idle_timeout
        self.windows: list[OnWatermark] = []  # what the watermark drives
        # whether the task holds records of an input it has not processed yet (the task's): an
        # input is idle only when quiet *and* drained, or a backlog longer than idle_timeout
        # would make the records behind it late
        self.pending: Callable[[str], bool] = _nothing_pending
        # inputs whose partition holds records at the broker the task has not fetched yet (the
        # fetch loop says, `note_end`): not idle either, however long ago their last record
        # came (a starved process or a slow fetch is not a quiet partition)
        self.behind: set[str] = set()
        # last broadcast (watermark, idle); a new task does not know what the partition's
        # previous owner said last (idle, maybe): it says "not idle" before its first record
        self._sent = (NO_WATERMARK, True)
        self.said_idle = bool(outputs)  # the next stages may count this task idle
        self._wall = WALL_CLOCK.get()  # the system clock, or the testing kit's
        self._sent_at = float("-inf")  # never
        started = self._wall.monotonic()
        for clock_input in self.inputs.values():
            clock_input.last_input = started

    @property
    def watermark(self) -> int:
        return self.current

    def note_end(self, topic: str, caught_up: bool) -> None:
        """The fetch loop's word on input `topic`: read to its end at the broker, or not."""
        if caught_up:
            self.behind.discard(topic)
        else:
            self.behind.add(topic)

    def _waiting(self, name: str) -> bool:
        return name in self.behind or self.pending(name)

    def note_input(self, topic: str) -> None:
        """Records arrived (the partition is not idle)."""
        clock_input = self.inputs.get(topic)
        if clock_input is not None:
            clock_input.last_input = self._wall.monotonic()

    def partition_time(self, topic: str) -> str:
        """The commit metadata of input `topic`'s partition: `t=` the greatest event time read
        from it, so that its next owner resumes there (as Kafka Streams keeps its partition
        time). Only a source topic's: after a repartition hop the upstream tasks' control
        records carry the watermarks, and they repeat them while idle. "" when none yet."""
        clock_input = self.inputs.get(topic)
        if clock_input is None or clock_input.tracker.upstreams:
            return ""
        seen = clock_input.tracker.max_seen
        return "" if seen == NO_WATERMARK else f"{PARTITION_TIME}{seen}"

    def resume(self, topic: str, metadata: str) -> None:
        """A new task: input `topic`'s partition time from its last commit (`partition_time`).
        A task that reads nothing more (its input went quiet before the move) still says the
        watermark its predecessor reached, instead of holding every later stage back."""
        clock_input = self.inputs.get(topic)
        if clock_input is None or clock_input.tracker.upstreams:
            return
        if not metadata.startswith(PARTITION_TIME):
            return
        try:
            seen = int(metadata[len(PARTITION_TIME) :])
        except ValueError:
            return  # not ours (an offset reset tool's, say): as if none
        if clock_input.tracker.observe(seen):
            self._moved()

    def restore(self, watermark: int) -> None:
        self.current = max(self.current, watermark)
        for clock_input in self.inputs.values():
            tracker = clock_input.tracker
            tracker.current = max(tracker.current, watermark)

    def _combined(self) -> int:
        single = self._single
        if single is not None:
            return single.tracker.current
        now, pending, idle = self._wall.monotonic(), self._waiting, self.idle_timeout
        inputs = list(self.inputs.values())
        active = [
            i
            for name, i in self.inputs.items()
            if pending(name)
            or (not i.tracker.all_idle and (i.tracker.upstreams or now - i.last_input < idle))
        ]
        if not active:  # every input idle: nothing is in flight on any, so none holds the
            # others back (else the watermark would depend on which went idle last)
            return max(i.tracker.current for i in inputs)
        return min(i.tracker.current for i in active)

    def _moved(self) -> None:
        candidate = self._combined()
        if candidate > self.current:
            self.current = candidate
            for window in self.windows:
                window.advance(candidate)

    def on_data(self, rec: Any, value: Any) -> int:
        """The event time of a data record (raises ValueError if the value has none)."""
        clock_input = self._single or self.inputs[rec.topic]
        try:
            ts = clock_input.policy.extract(value, rec.timestamp)
        except ValueError:
            raise
        except Exception as exc:  # a field missing, or the user's function raised
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc
        tracker = clock_input.tracker
        if ts > tracker.max_seen and tracker.observe(ts):  # (no call for an older time)
            self._moved()
        return ts

    def takes_record_time(self, topic: str) -> bool:
        """Whether input `topic` is a source topic whose events take their records'
        timestamps (a relay stage's, `relay.py`: `observed` then stands for `on_data`)."""
        clock_input = self.inputs.get(topic)
        return (
            clock_input is not None
            and not clock_input.tracker.upstreams
            and clock_input.policy.spec is None
        )

    def observed(self, topic: str, ts: int) -> None:
        """`on_data` for a batch of records of `topic` (`takes_record_time`) whose latest
        timestamp is `ts`: the watermark ends where record by record would leave it (a relay
        stage has no window to close on the way)."""
        tracker = (self._single or self.inputs[topic]).tracker
        if ts > tracker.max_seen and tracker.observe(ts):
            self._moved()

    def advance_to(self, watermark: int) -> bool:
        """Move the watermark to `watermark` (never back), closing windows and firing
        event-time timers as an event would; run it in the task's context (the testing kit)."""
        for clock_input in self.inputs.values():
            clock_input.tracker.advance_to(watermark)
        before = self.current
        self._moved()
        return self.current > before

    def on_control(self, topic: str, headers: Any) -> bool:
        """True if the record is a watermark control record (and consumed here). Only a
        repartition topic carries them: on a source topic every header is the user's.
        ValueError for a malformed one."""
        clock_input = self._single or self.inputs.get(topic)
        if clock_input is None or not clock_input.tracker.upstreams:
            return False
        control = read_control(headers)
        if control is None:
            return False
        moved = clock_input.tracker.from_upstream(*control)
        if moved or (control[2] and len(self.inputs) > 1):
            self._moved()  # an input whose upstreams all went idle may free the others
        return True

    def broadcast(self, collector: RecordCollector, *, force: bool = False) -> float | None:
        """Stages with exchanges: tell every downstream partition our watermark if it moved
        (or our idleness changed), at most every BROADCAST_EVERY seconds unless forced. When
        held back by that limit: the seconds until it may send (a waiting task looks again
        then, so a watermark never waits for the next record)."""
        if not self.outputs:
            return None
        now = self._wall.monotonic()
        idle = all(self._input_idle(name, i, now) for name, i in self.inputs.items())
        state = (self.current, idle)
        if state == self._sent and not (idle and now - self._sent_at >= self.idle_timeout):
            return None  # nothing new (an idle task repeats itself every idle_timeout)
        if not force and now - self._sent_at < BROADCAST_EVERY:
            return self._sent_at + BROADCAST_EVERY - now
        self._sent, self._sent_at, self.said_idle = state, now, idle
        log.debug("partition %d: watermark %d%s", self.partition, state[0], " (idle)" * idle)
        self._send(collector, *state)
        return None

    def _input_idle(self, name: str, clock_input: ClockInput, now: float) -> bool:
        """Whether this task may say it is idle as far as input `name` goes: nothing of it
        waiting, and a source topic quiet for idle_timeout, or every upstream task of a
        repartition topic idle (their repeated idle control records are no input: a relay
        counting them would never say idle, and the stage after it would wait for good)."""
        if self._waiting(name):
            return False
        if clock_input.tracker.upstreams:
            return clock_input.tracker.all_idle
        return now - clock_input.last_input >= self.idle_timeout

    def unidle(self, collector: RecordCollector) -> None:
        """Idle -> active: call before the first event after an idle spell (and before a new
        task's first event; a control record is no event). Tells every downstream partition
        "not idle" ahead of the records, with the watermark it said last (never a newer one:
        map_async calls of earlier events may be in flight)."""
        watermark, idle = self._sent
        if not idle or not self.outputs:
            return
        self._sent, self.said_idle = (watermark, False), False  # (not a broadcast: the
        # watermark that follows the records is not held back by BROADCAST_EVERY)
        log.debug("partition %d: active again (watermark %d)", self.partition, watermark)
        self._send(collector, watermark, False)

    def _send(self, collector: RecordCollector, watermark: int, idle: bool) -> None:
        headers = control_headers(self.partition, watermark, idle)
        for output in self.outputs:
            for partition in range(output.partitions or 1):
                collector.append(output.name, None, None, headers=headers, partition=partition)


def open_event_state(
    scope: TaskScope, stage: Stage, tables: dict[str, TablePartition], clock: EventClock | None
) -> tuple[dict[str, Windows], dict[str, TimerPartition]]:
    """A task's window tables and timers over its open tables, loaded, and handed to its clock
    (which restores the watermark their stored state reflects)."""
    windows: dict[str, Windows] = {}
    timers: dict[str, TimerPartition] = {}
    parts: list[OnWatermark] = []
    for wt in stage.windows:
        window = windows[wt.name] = open_window(wt, tables[wt.table.name], scope)
        parts.append(window)
    for ts in stage.timers:
        timer = timers[ts.name] = ts.open_partition(tables[ts.name], scope)
        parts.append(timer)
    for part in parts:
        stored = part.load()
        if clock is not None:
            clock.restore(stored)
            clock.windows.append(part)
            if clock.current > stored:  # a partition time resumed from the last commit
                part.advance(clock.current)
    for rows in tables.values():  # tables with an event-time TTL: purged as the watermark moves
        if clock is not None and rows.expiry is not None and rows.expiry.ttl.event_time:
            clock.windows.append(rows.expiry)
    return windows, timers


def fire_processing_timers(timers: Iterable[TimerPartition]) -> float | None:
    """Run the processing-time timers that are due; seconds until the next one (None: none)."""
    now = WALL_CLOCK.get().time() * 1000
    nearest = None
    for part in timers:
        part.advance_processing(int(now))
        due = part.next_processing()
        if due is not None:
            nearest = due if nearest is None else min(nearest, due)
    return None if nearest is None else max(0.0, (nearest - now) / 1000)
