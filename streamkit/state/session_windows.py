"""SessionPartition: session windows of one window table on one task's partition.

A key's events closer than the gap to each other form one session `[first, last + gap)`. An
event opens a session `[ts, ts + gap)` and merges it with every open session of its key that
it overlaps (an event can bridge two). Each session is a row `(start, key) → [end, acc]` of
the window table; merging deletes the absorbed rows. A session closes when the watermark
reaches its end plus the allowed lateness (emitted if `emit="final"`, then deleted); an event
whose merged session would already be closed is late.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Any

from streamkit.eventtime import NO_WATERMARK
from streamkit.state.table import _MISSING, TablePartition
from streamkit.state.window_table import WATERMARK_ROW, stored_watermark

if TYPE_CHECKING:
    from streamkit.context import TaskScope
    from streamkit.state.window_table import WindowTable
    from streamkit.windows import Aggregation


def merge_in_order(agg: Aggregation, pieces: list[tuple[int, int, Any]]) -> Any:
    """Accumulators `(start, rank, acc)` merged oldest first (`rank` orders equal starts: a
    stored session before the new event, which arrived after it)."""
    pieces.sort(key=lambda piece: (piece[0], piece[1]))
    acc = pieces[0][2]
    for _, _, other in pieces[1:]:
        acc = agg.merge(acc, other)
    return acc


class SessionPartition:
    def __init__(self, wt: WindowTable, rows: TablePartition, task: TaskScope) -> None:
        self.wt = wt
        self.rows = rows
        self.task = task
        self._emit = wt.emitter(task)
        self.by_key: dict[Any, list[int]] = {}  # key → starts of its open sessions
        self._ends: list[tuple[int, int, int, Any]] = []  # heap (end, seq, start, key)
        self._seq = itertools.count()  # keys need not be orderable
        self.watermark = NO_WATERMARK
        self._gap = wt.kind.size_ms
        self._lateness = wt.allowed_lateness_ms

    @property
    def open(self) -> dict[Any, list[int]]:
        return {k: v for k, v in self.by_key.items() if v}

    def load(self) -> int:
        for start, key in self.rows.iter_keys():
            if (start, key) == WATERMARK_ROW:
                continue
            end, _ = self.rows.get((start, key))
            self._track(start, key, end)
        self.watermark = stored_watermark(self.rows)
        return self.watermark

    def _track(self, start: int, key: Any, end: int) -> None:
        self.by_key.setdefault(key, []).append(start)
        heapq.heappush(self._ends, (end, next(self._seq), start, key))

    def get(self, key: Any, start: int) -> Any:
        row = self.rows.get((start, key))
        return None if row is _MISSING else row[1]

    def add(self, key: Any, value: Any, ts: int | None, encoded: bytes | None = None) -> None:
        task, wt, rows = self.task, self.wt, self.rows
        if ts is None:
            ts = task.event_time()
        start, end = ts, ts + self._gap
        starts = self.by_key.get(key, [])
        merging = []
        for other in starts:
            other_end, _ = rows.get((other, key))
            if other < ts + self._gap and ts < other_end:  # the two overlap
                merging.append((other, other_end))
                start, end = min(start, other), max(end, other_end)
        if end + self._lateness <= self.watermark:
            wt.late(task, ts, self.watermark)
            return
        agg = wt.aggregation
        # the accumulators merged in time order: the earlier session's is `a` of merge(a, b)
        pieces = [(ts, 1, agg.add(agg.initial(), value, ts))]
        for other, _ in merging:
            pieces.append((other, 0, rows.get((other, key))[1]))
            rows.delete((other, key))
            starts.remove(other)
        acc = merge_in_order(agg, pieces)
        rows.set((start, key), [end, acc])
        self._track(start, key, end)
        if wt.emit_mode == "update":
            self._emit(key, start, end, acc, False, None)

    def advance(self, watermark: int) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self.rows.set(WATERMARK_ROW, watermark)
        ends, rows = self._ends, self.rows
        while ends and ends[0][0] + self._lateness <= watermark:
            end, _, start, key = heapq.heappop(ends)
            row = rows.get((start, key))
            if row is _MISSING or row[0] != end:
                continue  # merged into another session, or extended: a stale entry
            if self.wt.emit_mode == "final":
                self._emit(key, start, end, row[1], True, None)
            rows.delete((start, key))
            self.by_key[key].remove(start)
