"""CountPartition: count windows of one window table on one task's partition.

Each key has one row `(KEY_ROW, key)` in the window table, so it is checkpointed, logged and
restored (exactly-once) like any window state:

- tumbling: `[n, acc]`, the number of the key's events so far and the accumulator of its open
  window `[n - n % size, ...)`; the window's `size`-th event emits it (`emit="final"`) and
  starts the next. With `emit="update"` every event emits the open window (`"final": false`,
  and `true` for the event that completes it).
- sliding: `[n, [[ts, value], ...]]`, the count and the key's last `size` events; every
  `every`-th event emits the window of those events, folded in arrival order.

Windows are numbered by the key's events (`count_windows.py`); a result's `start` and `end`
are those numbers, `[start, end)`. The watermark closes nothing here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkit.count_windows import CountWindow, SlidingCount, completed_by
from streamkit.eventtime import NO_WATERMARK
from streamkit.state.table import _MISSING, TablePartition
from streamkit.state.window_table import stored_watermark

if TYPE_CHECKING:
    from streamkit.context import TaskScope
    from streamkit.state.window_table import WindowTable

KEY_ROW = NO_WATERMARK + 1  # the "start" of a key's row (below the query's RESERVED_BELOW)


class CountPartition:
    def __init__(self, wt: WindowTable, rows: TablePartition, task: TaskScope) -> None:
        self.wt = wt
        self.rows = rows
        self.task = task
        self._emit = wt.emitter(task)
        self.kind: CountWindow = wt.kind  # type: ignore[assignment]
        self.watermark = NO_WATERMARK

    def load(self) -> int:
        self.watermark = stored_watermark(self.rows)
        return self.watermark

    def add(self, key: Any, value: Any, ts: int | None, encoded: bytes | None = None) -> None:
        task, wt, rows, kind = self.task, self.wt, self.rows, self.kind
        if ts is None:
            ts = task.event_time()
        agg = wt.aggregation
        row = rows.get((KEY_ROW, key))
        if isinstance(kind, SlidingCount):
            n, events = (0, []) if row is _MISSING else (row[0], list(row[1]))
            events.append([ts, value])
            del events[: -kind.size]
            rows.set((KEY_ROW, key), [n + 1, events])
            window = completed_by(kind, n)
            if window is not None:
                acc = agg.initial()
                for at, item in events[-(window[1] - window[0]) :]:
                    acc = agg.add(acc, item, at)
                self._emit(key, window[0], window[1], acc, True, None)
            return
        n, acc = (0, agg.initial()) if row is _MISSING else row
        acc = agg.add(acc, value, ts)
        window = completed_by(kind, n)
        start = n - n % kind.size
        if window is not None:
            self._emit(key, start, start + kind.size, acc, True, None)
            acc = agg.initial()
        elif wt.emit_mode == "update":
            self._emit(key, start, start + kind.size, acc, False, None)
        rows.set((KEY_ROW, key), [n + 1, acc])

    def open_window(self, key: Any) -> dict[str, Any] | None:
        """The key's open (incomplete) window: `start`, `end`, `count` and the accumulator
        (sliding: of the events it holds so far), or None."""
        found, row = self.rows.peek((KEY_ROW, key))
        if not found:
            return None
        return open_count_window(self.wt, row)

    def get(self, key: Any, start: int) -> Any:
        window = self.open_window(key)
        return None if window is None or window["start"] != start else window["acc"]

    def advance(self, watermark: int) -> None:
        self.watermark = max(self.watermark, watermark)  # closes nothing


def open_count_window(wt: WindowTable, row: Any) -> dict[str, Any]:
    """A count window table's stored key row as its open window."""
    kind: CountWindow = wt.kind  # type: ignore[assignment]
    agg = wt.aggregation
    n = int(row[0])
    if isinstance(kind, SlidingCount):
        acc = agg.initial()
        for at, item in row[1]:
            acc = agg.add(acc, item, at)
        return {"start": n - len(row[1]), "end": n, "count": len(row[1]), "acc": acc}
    start = n - n % kind.size
    return {"start": start, "end": start + kind.size, "count": n - start, "acc": row[1]}
