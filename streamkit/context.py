"""The task whose agent code is running: a context variable set once per task coroutine.

It lives in its own module so that tables, window tables and timers can read it on every
access without importing the runtime (which imports them)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamkit.runtime.task import Task

CURRENT_TASK: ContextVar[Task] = ContextVar("streamkit_task")
