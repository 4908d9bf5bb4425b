"""When a task's coroutine takes its next record (`runtime/task.py`).

Between two records the task parks (`park`): the fetch loop's `put`, a due timer or a close
wakes it (`wake`). The exactly-once checkpoint's first step, `pause`, stops it at the next
record boundary: the record in flight finishes in every branch, then nothing more is taken
until `resume` (a task still restoring stops before its first record; a closing one is let
end). While pausing, nothing but a close wakes a parked task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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
        waiting = self.pause_now(task)
        if waiting is not None:
            await waiting

    def pause_now(self, task: Paused) -> Awaitable[None] | None:
        """`pause` without a coroutine where none is needed: None when the task stopped at
        once (parked, restoring or ended), else what to await. A checkpoint over hundreds of
        mostly parked tasks then awaits only the busy ones."""
        runner = task.runner
        if runner is None or runner.done():
            return None
        if task.status is TaskState.CLOSING:  # its last event and submit: let them end
            return _ended(runner)
        self.pausing = True  # a task still restoring stops before its first record
        if task.status is not TaskState.RUNNING or self._blocked:
            return None
        # made now, not when the waiter first runs: `park` resolves it at the boundary
        parked = self._parked = asyncio.get_running_loop().create_future()
        return self._until_parked(parked, runner)

    async def _until_parked(self, parked: asyncio.Future[None], runner: asyncio.Task[None]) -> None:
        try:
            waited: Any = (parked, runner)
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._parked is parked:
                self._parked = None

    def resume(self, more: bool) -> None:
        """The checkpoint is over; `more`: the task has records to take (or is closing)."""
        self.pausing = False
        if more:
            self.wake_always()


async def _ended(runner: asyncio.Task[None]) -> None:
    await asyncio.wait((runner,))
