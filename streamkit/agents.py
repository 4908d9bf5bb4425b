"""Agent: a user's async generator (or coroutine) bound to a source topic and its sinks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamkit.streams import Op
from streamkit.topics import Topic

if TYPE_CHECKING:
    from streamkit.stages import Stage

AgentFn = Callable[..., Any]


@dataclass
class Agent:
    """`fn(stream)` is either an async generator (what it yields goes to every sink) or a
    coroutine function that consumes the stream and sends with `topic.send`."""

    name: str
    fn: AgentFn
    source: Topic
    sinks: list[Topic] = field(default_factory=list)
    ops: tuple[Op, ...] = ()  # the operator chain its body builds (found by tracing)
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (inspect.isasyncgenfunction(self.fn) or inspect.iscoroutinefunction(self.fn)):
            raise TypeError(
                f"agent {self.name}: {self.fn!r} must be an `async def` function "
                "(an async generator that yields results, or a coroutine)"
            )

    @property
    def is_generator(self) -> bool:
        return inspect.isasyncgenfunction(self.fn)
