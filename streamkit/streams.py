"""Stream: what an agent iterates. Values come one at a time, in partition order.

A stream reads from a `StreamSource` (the runtime's per-partition task, or the testing kit).
An event counts as processed when the agent asks for the next one, so the checkpoint never
commits past an event whose outputs are not yet collected. `map` and `filter` run inline in
the agent's own coroutine: no extra task, no queue, no copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, Protocol, TypeVar

from streamkit.events import Event

T = TypeVar("T")
U = TypeVar("U")

_SKIP = object()


class StreamSource(Protocol):
    """Hands out events of one partition, in order."""

    current: Event | None

    def next_event(self) -> Event | None:
        """Mark the current event processed and return the next buffered one, or None."""

    async def wait(self) -> None:
        """Block until more events are buffered; raise StopAsyncIteration when closed."""


class Stream(Generic[T]):
    def __init__(self, source: StreamSource, ops: tuple[Callable[[Any], Any], ...] = ()) -> None:
        self._source = source
        self._ops = ops

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        source = self._source
        ops = self._ops
        while True:
            event = source.next_event()
            if event is None:
                await source.wait()
                continue
            value: Any = event.value
            for op in ops:
                value = op(value)
                if value is _SKIP:
                    break
            else:
                return value  # type: ignore[no-any-return]

    @property
    def event(self) -> Event:
        """The event being processed: key, headers, timestamp, topic, partition, offset."""
        current = self._source.current
        if current is None:
            raise RuntimeError("no event is being processed (iterate the stream first)")
        return current

    async def events(self) -> AsyncIterator[Event]:
        """Iterate whole events instead of values (operators are not applied)."""
        source = self._source
        while True:
            event = source.next_event()
            if event is None:
                try:
                    await source.wait()
                except StopAsyncIteration:
                    return
                continue
            yield event

    def map(self, fn: Callable[[T], U]) -> Stream[U]:
        """A stream of `fn(value)`; the event (key, offset...) is unchanged."""
        return Stream(self._source, (*self._ops, fn))

    def filter(self, predicate: Callable[[T], bool]) -> Stream[T]:
        """A stream of the values for which `predicate` is true; others count as processed."""

        def keep(value: Any) -> Any:
            return value if predicate(value) else _SKIP

        return Stream(self._source, (*self._ops, keep))
