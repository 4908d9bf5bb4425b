"""Deferred: rows the watermark makes final reach the store only when they must.

A stream-stream join buffers each record until the watermark makes it final, then forgets it
(`state/stream_join.py`); a tumbling or hopping window forgets its rows when it closes
(`state/window_table.py`). With short windows, and with any window while a worker catches up
on a backlog, most rows live a few seconds of wall clock: writing them to SQLite and deleting
them again is most of what the store does for them. Such a table's rows go to its
changelog at every checkpoint as any table's do, but to the store only when

1. the unwritten rows reach the cache's bound (`state_cache_entries`): memory is full;
2. the oldest changelog records not in the store are half the changelog's time retention
   old: the broker could delete them before a restore reads them.

Not at the task's last checkpoint (revoke, stop) either: that write is a store write like
the others. A revoked task's partition goes to another worker, which replays the changelog
into a store of its own (each worker has a `workdir` of its own: its producer's id is kept
there), so writing the rows here would delay the handover (the worker rejoins the group after
its revoke) for a copy nobody reads; a worker that gets the partition back, or restarts,
replays them as after a crash.

In between, a store write records as the table's changelog offset the one before the oldest
checkpoint's records that may still hold a live row, and writes of its rows only the marker
(the watermark row: the store always knows which of its rows are final, and a restore that
replays nothing still knows the latest watermark): a restore replays the changelog from there
(rows final by the watermark it ends with are skipped when the table loads). The store lags
the changelog, never leads it, as every store does (`state/task_tables.py`); it lags by
about the rows the table holds.

A checkpoint's records of the table form a range of its changelog partition (after the last
one's end: the partition is written by this task alone). The range is live until the
watermark passes the newest final time of any row buffered up to that checkpoint (a bound
for the range's rows: `Finality.newest_final`).
"""

from __future__ import annotations

import collections
from typing import Protocol


class Finality(Protocol):
    """What a deferred table's owner tells of its rows (a `JoinPartition`, a `WindowPartition`)."""

    @property
    def watermark(self) -> int:
        """Rows whose final time is below it are final (forgotten)."""

    @property
    def newest_final(self) -> int:
        """The largest final time of a row buffered so far."""

    @property
    def marker(self) -> bytes:
        """The key of the row that holds the watermark (written with every store write)."""


class Deferred:
    """One table partition's changelog ranges not in the store."""

    def __init__(self, source: Finality, end: int, max_age: float) -> None:
        self.source = source
        self.end = end  # the last changelog offset a committed checkpoint wrote (or restored)
        self.max_age = max_age  # seconds a range may wait (rule 2)
        # (first offset, final time bound, wall clock when recorded), oldest first
        self._ranges: collections.deque[tuple[int, int, float]] = collections.deque()

    def recorded(self, end: int, now: float) -> None:
        """A committed checkpoint wrote the table's changelog partition up to `end`."""
        if end > self.end:
            self._ranges.append((self.end + 1, self.source.newest_final, now))
            self.end = end

    def held(self, now: float) -> int | None:
        """The changelog offset the store may record without the table's rows, or None when
        they must be written (rule 2). Ranges whose rows are all final are dropped first."""
        ranges, watermark = self._ranges, self.source.watermark
        while ranges and ranges[0][1] < watermark:
            ranges.popleft()
        if not ranges:
            return self.end  # every row written to the changelog so far is final
        first, _, at = ranges[0]
        if now - at > self.max_age:
            return None
        return first - 1

    def written(self) -> None:
        """The store got every row: no range waits."""
        self._ranges.clear()
