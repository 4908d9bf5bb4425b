"""TableSync: a task holds a stream record back until the tables it reads from topics caught up.

A table read from a topic (`app.table(..., source=topic)`, or a versioned table fed from one)
is followed by the worker's `sources` background task, not by the task itself, so without
care a record is joined with the table as it happened to be: a payment sent just after its
order usually finds no order. As Kafka Streams does with `max.task.idle.ms`, the task takes
the next record only when `versions.sync_delay` says so for every followed table of the
stage: the table has been read up to the record's timestamp, or read to its end by a fetch
that started after the record arrived, or `table_sync_max_wait` seconds have passed since
the record arrived and the table last made progress. While it holds, the task waits between
records (a checkpoint may pause it), pokes the follower to fetch at once, and is woken by it.

Record times here are the Kafka record timestamps of both sides. `table_sync_max_wait = 0`
turns the hold off.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from streamkit.context import WALL_CLOCK, WallClock
from streamkit.state.table import FollowStatus, TablePartition
from streamkit.versions import sync_delay, synced

log = logging.getLogger(__name__)


class TableSync:
    """The followed tables of one task, and when its buffered records arrived."""

    def __init__(self, statuses: list[FollowStatus], max_wait: float) -> None:
        self.statuses = statuses
        self.max_wait = max_wait
        self._clock: WallClock = WALL_CLOCK.get()
        # per input topic: (last offset of a fetched batch, when it was buffered), in order
        self._arrivals: dict[str, deque[tuple[int, float]]] = {}
        self.holds = 0  # records held back
        self._last_held: tuple[str, int] | None = None
        self.timeouts = 0  # records that went on because the wait ran out
        self._warned = -math.inf

    @classmethod
    def of(cls, tables: Mapping[str, TablePartition], max_wait: float) -> TableSync | None:
        """The sync of a task's tables, or None when none is followed (or it is off)."""
        statuses = [p.follow for p in tables.values() if p.follow is not None]
        if not statuses or max_wait <= 0:
            return None
        return cls(statuses, max_wait)

    def arrived(self, topic: str, last_offset: int) -> None:
        """A batch of `topic` up to `last_offset` was buffered now."""
        self._arrivals.setdefault(topic, deque()).append((last_offset, self._clock.monotonic()))

    def _arrival(self, rec: Any) -> float:
        batches = self._arrivals.get(rec.topic)
        while batches and batches[0][0] < rec.offset:
            batches.popleft()
        return batches[0][1] if batches else self._clock.monotonic()

    def hold(self, rec: Any) -> float:
        """Seconds to wait before taking `rec` (0: take it now)."""
        arrived = self._arrival(rec)
        now = self._clock.monotonic()
        longest = 0.0
        timed_out = False
        for status in self.statuses:
            delay = sync_delay(
                rec.timestamp,
                arrived,
                now,
                status.table_time,
                status.caught_up_at,
                self.max_wait,
                status.progressed_at,
            )
            if delay > longest:
                longest = delay
            if delay and status.poke is not None:
                status.poke.set()
            if not delay and not synced(
                rec.timestamp, arrived, status.table_time, status.caught_up_at
            ):
                timed_out = True
        if longest:
            if self._last_held != (rec.topic, rec.offset):  # each record counted once
                self._last_held = (rec.topic, rec.offset)
                self.holds += 1
        elif timed_out:
            self._timed_out(rec)
        return longest

    def _timed_out(self, rec: Any) -> None:
        """`rec` goes on without its tables having caught up: counted, and said (at most
        every 10 s per task) since it may miss a table row."""
        self.timeouts += 1
        now = self._clock.monotonic()
        if now - self._warned >= 10.0:
            self._warned = now
            log.warning(
                "%s[%d]@%d: a table read from a topic did not catch up within "
                "table_sync_max_wait=%ss; the record goes on with what the table holds "
                "(%d such records in this task)",
                rec.topic,
                rec.partition,
                rec.offset,
                self.max_wait,
                self.timeouts,
            )
