"""What the running agent code sees around it, as context variables (no global state).

`CURRENT_TASK`: the task whose agent code is running (set once per task coroutine). It lives
in its own module so that tables, window tables and timers can read it on every access
without importing the runtime (which imports them).

`WALL_CLOCK`: where processing time comes from (processing-time timers, `sk.processing_time`,
idleness). The system clock unless the testing kit runs the tasks on its own virtual clock.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from streamkit.runtime.task import Task

CURRENT_TASK: ContextVar[Task] = ContextVar("streamkit_task")


class WallClock(Protocol):
    def time(self) -> float:
        """Epoch seconds."""

    def monotonic(self) -> float:
        """Seconds that never go back (for durations)."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()  # stateless
WALL_CLOCK: ContextVar[WallClock] = ContextVar("streamkit_wall_clock", default=SYSTEM_CLOCK)
