"""SlidingPartition: sliding windows of one window table on one task's partition.

Each on-time event at `t` has its window `[t - size, t]` (keyed by its end `t`), which
aggregates every event of the key in that range, both ends included, also those that arrive
later while the window is open. The key's recent events are kept in one row (`(EVENTS, key)
→ [[ts, value], ...]`, pruned once no open or future window can need them), each window in a
row `(t, key) → acc`. A window closes when the watermark reaches `t` plus the allowed
lateness; an event whose own window is already closed is late. A closed window's row is
forgotten with no tombstone, as a tumbling window's (`state/window_table.py`); the events row
is rewritten or deleted as it is pruned.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from streamkit.eventtime import NO_WATERMARK
from streamkit.state.table import _MISSING, TablePartition
from streamkit.state.window_table import WATERMARK_ROW, closed_hold, stored_watermark

if TYPE_CHECKING:
    from streamkit.context import TaskScope
    from streamkit.state.window_table import WindowTable

EVENTS = NO_WATERMARK + 1  # the "start" of a key's events row


class SlidingPartition:
    def __init__(self, wt: WindowTable, rows: TablePartition, task: TaskScope) -> None:
        self.wt = wt
        self.rows = rows
        self.task = task
        self._emit = wt.emitter(task)
        self.by_key: dict[Any, list[int]] = {}  # key → ends of its open windows
        self._ends: list[tuple[int, int, Any]] = []  # heap (end, seq, key)
        self._seq = 0
        self.watermark = NO_WATERMARK
        self._size = wt.kind.size_ms
        self._lateness = wt.allowed_lateness_ms

    @property
    def open(self) -> dict[Any, list[int]]:
        return {k: v for k, v in self.by_key.items() if v}

    def load(self) -> int:
        """Track the stored windows' rows, skipping those of windows the stored watermark
        closed (forgotten rows the store's next write deletes: `closed_rows`)."""
        self.watermark = stored_watermark(self.rows)
        closed = self.watermark - closed_hold(self.wt.kind, self._lateness)
        for end, key in self.rows.iter_keys():
            if end > closed and end != EVENTS and (end, key) != WATERMARK_ROW:
                self._track(end, key)
        return self.watermark

    def _track(self, end: int, key: Any) -> None:
        self.by_key.setdefault(key, []).append(end)
        self._seq += 1
        heapq.heappush(self._ends, (end, self._seq, key))

    def get(self, key: Any, start: int) -> Any:
        if start + self._size + self._lateness <= self.watermark:
            return None  # closed (a forgotten row may be in the store until its next write)
        acc = self.rows.get((start + self._size, key))
        return None if acc is _MISSING else acc

    def add(self, key: Any, value: Any, ts: int | None, encoded: bytes | None = None) -> None:
        task, wt, rows = self.task, self.wt, self.rows
        if ts is None:
            ts = task.event_time()
        if ts + self._lateness <= self.watermark:
            wt.late(task, ts, self.watermark)
            return
        agg, size = wt.aggregation, self._size
        events = rows.get((EVENTS, key))
        events = [] if events is _MISSING else list(events)
        events.append([ts, value])
        rows.set((EVENTS, key), events)
        ends = self.by_key.setdefault(key, [])
        for end in ends:  # the open windows this event falls in
            if end != ts and end - size <= ts <= end:
                acc = agg.add(rows.get((end, key)), value, ts)
                rows.set((end, key), acc)
                if wt.emit_mode == "update":
                    self._emit(key, end - size, end, acc, False, None)
        # `ends` holds every open window's row of the key (loaded ones too): a new one costs
        # no lookup (after a restore, no SQLite read), as a tumbling window's `open` does
        own = rows.get((ts, key)) if ts in ends else _MISSING
        if own is _MISSING:  # this event's window: everything of the key in [ts - size, ts]
            acc = agg.initial()
            for other_ts, other in events:
                if ts - size <= other_ts <= ts:
                    acc = agg.add(acc, other, other_ts)
            self._track(ts, key)
        else:  # another event at the same time made it already
            acc = agg.add(own, value, ts)
        rows.set((ts, key), acc)
        if wt.emit_mode == "update":
            self._emit(key, ts - size, ts, acc, False, None)

    def advance(self, watermark: int) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self.rows.set(WATERMARK_ROW, watermark)
        heap, rows, lateness = self._ends, self.rows, self._lateness
        touched = set()
        while heap and heap[0][0] + lateness <= watermark:
            end, _, key = heapq.heappop(heap)
            acc = rows.get((end, key))
            if self.wt.emit_mode == "final" and acc is not _MISSING:
                self._emit(key, end - self._size, end, acc, True, None)
            if end >= 0:  # no tombstone: the store's purge rule deletes it (`closed_rows`)
                rows.forget((end, key))
            else:
                rows.remove((end, key))
            self.by_key[key].remove(end)
            touched.add(key)
        horizon = watermark - self._size - lateness  # events at or before it: never needed
        for key in touched:
            events = rows.get((EVENTS, key))
            if events is _MISSING:
                continue
            kept = [e for e in events if e[0] > horizon]
            if not kept:
                rows.delete((EVENTS, key))
            elif len(kept) < len(events):
                rows.set((EVENTS, key), kept)
