"""What running code sees around it, as context variables (no global state).

`CURRENT_TASK`: the scope of the task whose code is running: set in each coroutine of a task
(its agents' bodies, its operator steps, its timer callbacks), so tables, window tables and
timers resolve their partition from it wherever they are called from: the body, a helper, a
map function, a timer callback. The runtime's task and agent runs implement `TaskScope`; this
module is the bottom layer so that declarations and state can read it without importing the
runtime.

`CURRENT_COLLECTOR`: where `topic.produce` / `topic.send` append (the running task's outputs).

`WALL_CLOCK`: where processing time comes from (processing-time timers, `sk.processing_time`,
idleness). The system clock unless the testing kit runs the tasks on its own virtual clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol


class Appender(Protocol):
    """A task's outputs (the runtime's RecordCollector)."""

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: Any = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> bool: ...

    def keyed(self, topic: str) -> Callable[[bytes | None, bytes | None, int | None], bool]:
        """`append` for one topic's keyed records, positional (a hot path's)."""

    async def submit_full(self) -> None: ...


class TaskScope(Protocol):
    """What state code sees of the running task."""

    @property
    def partition(self) -> int: ...

    @property
    def stage_name(self) -> str: ...

    @property
    def partitions(self) -> int:
        """The stage's task count: a key's partition is murmur2(key) % partitions."""

    @property
    def tables(self) -> dict[str, Any]: ...

    @property
    def windows(self) -> dict[str, Any]: ...

    @property
    def timers(self) -> dict[str, Any]: ...

    @property
    def collector(self) -> Appender: ...

    def event_key(self) -> bytes | None:
        """The raw key of the event being processed (None: none, or no event)."""

    def event_time(self) -> int:
        """Epoch ms of the event being processed."""

    def route_late(self, topic: str, reason: str) -> None:
        """The event being processed is late: to the late topic."""


CURRENT_TASK: ContextVar[TaskScope] = ContextVar("streamkit_task")
CURRENT_COLLECTOR: ContextVar[Appender] = ContextVar("streamkit_collector")


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


def current_event() -> Any:
    """The event being processed by the calling code (an agent body, a map/filter/key
    function, a helper they call), or None outside a task's event: key, value, headers,
    timestamp, topic, partition, offset."""
    scope = CURRENT_TASK.get(None)
    return None if scope is None else getattr(scope, "current", None)
