"""Stream: what an agent iterates. Values come one at a time, in partition order.

A stream reads from a `StreamSource` (the runtime's per-partition task, or the testing kit).
An event counts as processed when the agent asks for the next one, so the checkpoint never
commits past an event whose outputs are not yet collected.

Operators chain: `map` and `filter` run inline in the task's coroutine; `forward` keeps the
event in its partition (a no-op marker); `key_by`, `shuffle` and `rebalance` are exchanges:
the chain is cut there into stages joined by internal topics (see `stages.py`). A stream only
applies the segment of the chain that belongs to the stage its source runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from streamkit.events import Event

T = TypeVar("T")
U = TypeVar("U")

SKIP: Any = object()  # what a filter step returns for a value it drops
NOTHING: Any = object()  # what a source returns when nothing is buffered


@dataclass(frozen=True)
class Step:
    """map / filter / forward: runs inside a stage."""

    kind: str  # "map" | "filter" | "forward"
    fn: Callable[[Any], Any] | None = None

    @property
    def label(self) -> str:
        name = getattr(self.fn, "__name__", "")
        return self.kind if not name or name == "<lambda>" else f"{self.kind}({name})"


@dataclass(frozen=True)
class Exchange:
    """key_by / shuffle / rebalance: the end of a stage, the start of the next."""

    kind: str  # "key_by" | "shuffle" | "rebalance"
    partitions: int | None
    name: str | None
    key: Callable[[Any], Any] | None = None
    key_type: Any = str
    value_type: Any = None
    seed: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "key_by":
            return f"key_by({getattr(self.key, '__streamkit_label__', 'key')})"
        return self.kind


Op = Step | Exchange


def segment(ops: tuple[Op, ...], index: int) -> tuple[Op, ...]:
    """The ops of stage `index`: after the index-th exchange, up to and including the next."""
    start = 0
    for _ in range(index):
        start = next(i for i in range(start, len(ops)) if isinstance(ops[i], Exchange)) + 1
    end = start
    while end < len(ops) and not isinstance(ops[end], Exchange):
        end += 1
    return ops[start : end + 1]


def compile_steps(ops: tuple[Op, ...]) -> tuple[Callable[[Any], Any], ...]:
    """The per-value functions of a segment (exchanges and forward markers dropped)."""
    fns: list[Callable[[Any], Any]] = []
    for op in ops:
        if isinstance(op, Step) and op.fn is not None:
            if op.kind == "map":
                fns.append(op.fn)
            elif op.kind == "filter":
                fns.append(_keep_if(op.fn))
    return tuple(fns)


def _keep_if(predicate: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def keep(value: Any) -> Any:
        return value if predicate(value) else SKIP

    return keep


class StreamSource(Protocol):
    """Hands out events of one partition, in order."""

    @property
    def current(self) -> Event | None:
        """The event being processed."""

    def bind(self, ops: tuple[Op, ...]) -> tuple[Op, ...]:
        """Called on first iteration with the stream's whole chain; returns this source's
        segment of it (the tracer raises here instead, to learn the chain)."""

    def next_value(self) -> Any:
        """Mark the current event processed; the next buffered event's value, or NOTHING."""

    async def wait(self) -> None:
        """Block until more events are buffered; raise StopAsyncIteration when closed."""


class Stream(Generic[T]):
    def __init__(self, source: StreamSource, ops: tuple[Op, ...] = ()) -> None:
        self._source = source
        self._ops = ops
        self._steps: tuple[Callable[[Any], Any], ...] | None = None

    @property
    def ops(self) -> tuple[Op, ...]:
        return self._ops

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        steps = self._steps
        if steps is None:
            steps = self._steps = compile_steps(self._source.bind(self._ops))
        source = self._source
        while True:
            value = source.next_value()
            if value is NOTHING:
                await source.wait()
                continue
            for step in steps:
                value = step(value)
                if value is SKIP:
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
        """Iterate whole events instead of values (map/filter are not applied)."""
        source = self._source
        source.bind(self._ops)
        while True:
            if source.next_value() is NOTHING:
                try:
                    await source.wait()
                except StopAsyncIteration:
                    return
                continue
            event = source.current
            assert event is not None
            yield event

    def _then(self, op: Op) -> Stream[Any]:
        return Stream(self._source, (*self._ops, op))

    def map(self, fn: Callable[[T], U]) -> Stream[U]:
        """A stream of `fn(value)`; the event (key, offset...) is unchanged."""
        return self._then(Step("map", fn))

    def filter(self, predicate: Callable[[T], bool]) -> Stream[T]:
        """A stream of the values for which `predicate` is true; others count as processed."""
        return self._then(Step("filter", predicate))

    def forward(self) -> Stream[T]:
        """Stay in this partition: the next operator runs in the same task (no topic hop)."""
        return self._then(Step("forward"))

    def key_by(
        self,
        key: Callable[[T], Any] | str,
        *,
        partitions: int | None = None,
        name: str | None = None,
        key_type: Any = str,
        value_type: Any = None,
    ) -> Stream[T]:
        """Repartition by key through `{app}-{agent}-{name}-repartition` (murmur2, like Java).

        `key` is a function of the value or the name of a field/attribute of it. `partitions`
        defaults to the input's count. The next operator runs where that key's partition is."""
        key_fn = _field_getter(key) if isinstance(key, str) else key
        return self._then(
            Exchange("key_by", partitions, name, key_fn, key_type=key_type, value_type=value_type)
        )

    def shuffle(
        self, *, partitions: int | None = None, name: str | None = None, seed: int | None = None
    ) -> Stream[T]:
        """Send each event to a random partition of an internal topic."""
        return self._then(Exchange("shuffle", partitions, name, seed=seed))

    def rebalance(self, *, partitions: int | None = None, name: str | None = None) -> Stream[T]:
        """Round-robin over the partitions of an internal topic, per producing task."""
        return self._then(Exchange("rebalance", partitions, name))


def _field_getter(field: str) -> Callable[[Any], Any]:
    def get(value: Any) -> Any:
        if isinstance(value, dict):
            return value[field]
        return getattr(value, field)

    get.__streamkit_label__ = field  # type: ignore[attr-defined]
    return get
