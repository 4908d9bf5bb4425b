"""When a task's coroutine takes its next record (`runtime/task.py`).

Between two records the task parks (`park`): the fetch loop's `put`, a due timer or a close
wakes it (`wake`). The exactly-once checkpoint's first step, `pause`, stops it at the next
record boundary: the record in flight finishes in every branch, then nothing more is taken
until `resume` (a task still restoring stops before its first record; a closing one is let
end). While pausing, nothing but a close wakes a parked task.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from streamkit.runtime.task_state import TaskState


class Paused(Protocol):
    """What `pause` reads of its task."""

    status: TaskState

    @property
    def runner(self) -> asyncio.Task[None] | None: ...


class PassControl:
    def __init__(self) -> None:
        self.pausing = False  # a checkpoint asked the task to stop at a record boundary
        self.waiter: asyncio.Future[None] | None = None  # what the parked task awaits
        self._parked: asyncio.Future[None] | None = None  # resolved once it has stopped
        self._blocked = False  # in `park`: between two records

    @property
    def idle(self) -> bool:
        """Parked, with nothing about to wake it."""
        waiter = self.waiter
        return self._blocked and waiter is not None and not waiter.done()

    def wake(self) -> None:
        """Let a parked task look again (not while pausing)."""
        if not self.pausing:
            self.wake_always()

    def wake_always(self) -> None:
        """Wake a parked task even while pausing (it is closing)."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def park(self, within: float | None) -> None:
        """Wait between two records until woken (`within` seconds at most); a `pause`
        waiting for this boundary returns now."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        self._blocked = True
        parked = self._parked
        if parked is not None and not parked.done():
            parked.set_result(None)
        try:
            if within is None:
                await waiter
            else:
                await asyncio.wait((waiter,), timeout=within)
        finally:
            self.waiter = None
            self._blocked = False

    async def pause(self, task: Paused) -> None:
        """Return once `task` is between two records (at once if parked; if restoring, it
        stops before its first record; if closing, once ended) and keep it there until
        `resume`."""
        runner = task.runner
        if runner is None or runner.done():
            return
        if task.status is TaskState.CLOSING:  # its last event and submit: let them end
            await asyncio.wait((runner,))
            return
        self.pausing = True  # a task still restoring stops before its first record
        if task.status is not TaskState.RUNNING or self._blocked:
            return
        parked = self._parked = asyncio.get_running_loop().create_future()
        try:
            waited: Any = (parked, runner)
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._parked = None

    def resume(self, more: bool) -> None:
        """The checkpoint is over; `more`: the task has records to take (or is closing)."""
        self.pausing = False
        if more:
            self.wake_always()
