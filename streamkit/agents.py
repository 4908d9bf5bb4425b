"""Agent: a user's async function consuming a declared stream, the last operator of its stage.

`fn(stream)` is either an async generator (what it yields goes to every sink) or a coroutine
function that consumes the stream and writes with `topic.send` / `topic.produce`. It runs in
one long-lived coroutine per partition of its stage: the code before `async for` runs when
the task starts and again after an event on which the body raised (the body is restarted).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamkit.settings import ConfigError
from streamkit.streams import Stream
from streamkit.topics import Topic

AgentFn = Callable[..., Any]


@dataclass(eq=False)
class Agent:
    name: str
    fn: AgentFn
    stream: Stream[Any]
    sinks: list[Topic] = field(default_factory=list)
    state: tuple[Any, ...] = ()
    row_sinks: list[Any] = field(default_factory=list)  # beyond Kafka (streamkit/sinks/)

    def __post_init__(self) -> None:
        if not (inspect.isasyncgenfunction(self.fn) or inspect.iscoroutinefunction(self.fn)):
            raise ConfigError(
                f"agent {self.name}: {self.fn!r} must be an `async def` function "
                "(an async generator that yields results, or a coroutine)"
            )
        if self.is_generator and not self.sinks and not self.row_sinks:
            raise ConfigError(
                f"agent {self.name} yields values but has no sink: pass sink=topic to "
                "@app.agent (or write with topic.send inside a coroutine agent)"
            )

    @property
    def is_generator(self) -> bool:
        return inspect.isasyncgenfunction(self.fn)
