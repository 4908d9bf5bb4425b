"""The runtime side of a window table on one task's partition, by window kind."""

from __future__ import annotations

from streamkit.context import TaskScope
from streamkit.count_windows import SlidingCount, TumblingCount
from streamkit.state.count_windows import CountPartition
from streamkit.state.session_windows import SessionPartition
from streamkit.state.sliding_windows import SlidingPartition
from streamkit.state.table import TablePartition
from streamkit.state.window_table import WindowPartition, Windows, WindowTable
from streamkit.windows import Session, Sliding


def open_window(wt: WindowTable, rows: TablePartition, task: TaskScope) -> Windows:
    """Tumbling and hopping windows, sessions, sliding or count windows over `rows`."""
    if isinstance(wt.kind, TumblingCount | SlidingCount):
        return CountPartition(wt, rows, task)
    if isinstance(wt.kind, Session):
        return SessionPartition(wt, rows, task)
    if isinstance(wt.kind, Sliding):
        return SlidingPartition(wt, rows, task)
    return WindowPartition(wt, rows, task)
