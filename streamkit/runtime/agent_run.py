"""An agent's body in one task, stepped by the task's own coroutine.

The body (`async def fn(stream)`) iterates an `AgentStream`; asking it for the next value
suspends the body with a private marker instead of blocking. The task's coroutine resumes the
body with each value the stage's operators queued for it (`feed`) and runs it until it asks
again: every agent of a stage sees one event after the other, in offset order, with no
coroutine switch and no queue between them, and all of them have finished an event before the
next one enters the stage (depth first, as one pass). A real `await` in the body (I/O, a
sleep) passes through to the event loop and holds the task meanwhile, as sequential code
would. What the body yields goes to the agent's sinks.

Lifecycle: `start` runs the body up to its first request for a value (the code before its
`async for`) when the task starts, and again after an event on which the body raised (the
body is made anew). `stop` ends its `async for` (the code after it runs, `async with` blocks
exit) when the task closes.
"""

from __future__ import annotations

import logging
import types
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Protocol, TypeVar

from streamkit.agents import Agent
from streamkit.events import Event, Record
from streamkit.graph import Stage
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.failures import FATAL
from streamkit.runtime.sinks import TaskSinks
from streamkit.serde import dumps, same_bytes
from streamkit.settings import ConfigError
from streamkit.streams import Stream

T = TypeVar("T")
log = logging.getLogger(__name__)


class BodyHost(Protocol):
    """What a body uses of its task (`runtime/task.py`)."""

    record: Any  # the raw record being processed
    collector: RecordCollector
    sinks: TaskSinks | None
    stage: Stage

    @property
    def current(self) -> Event | None: ...


class _Need:
    """What a body's `await stream.__anext__()` yields up: "my next value, please"."""

    __slots__ = ()


NEED = _Need()


@types.coroutine
def _next_value() -> Generator[Any, Any, Any]:
    """What `await stream.__anext__()` runs: yield NEED up to the task, return what it sends
    back (a generator's return: no exception per value)."""
    return (yield NEED)


class AgentStream(Stream[T]):
    """What an agent's body iterates: the values its declared stream delivers to it."""

    def __init__(self, task: BodyHost, agent: Agent) -> None:
        super().__init__(agent.stream.app, agent.stream.node)
        self._task = task

    def __repr__(self) -> str:
        return f"AgentStream({self._task!r})"

    def __aiter__(self) -> AgentStream[T]:
        return self

    @types.coroutine
    def __anext__(self) -> Generator[Any, Any, Any]:  # `_next_value`, one frame less
        return (yield NEED)

    @property
    def event(self) -> Event:
        """The event being processed: key, headers, timestamp, topic, partition, offset."""
        current = self._task.current
        if current is None:
            raise RuntimeError("no event is being processed (iterate the stream first)")
        return current

    async def events(self) -> AsyncIterator[Event]:
        """Iterate whole events (key, value, headers...) instead of values."""
        while True:
            try:
                await _next_value()
            except StopAsyncIteration:
                return
            yield self.event

    def _then(self, node: Any) -> Stream[Any]:
        raise ConfigError(
            "operators are declared before the agent, not inside its body: e.g. "
            "by_user = app.stream(topic).key_by('user_id'), then @app.agent(by_user) "
            f"(in {self._task!r})"
        )

    def to(self, topic: Any) -> None:
        self._then(None)

    def with_state(self, *state: Any) -> Stream[T]:
        return self._then(None)

    def merge(self, *others: Stream[Any]) -> Stream[Any]:
        return self._then(None)

    def branch(self, *predicates: Any, default: bool = False) -> tuple[Stream[T], ...]:
        self._then(None)
        return ()


class _Ended(Exception):
    """The body returned (or its `async for` ended)."""


class Body:
    def __init__(self, agent: Agent, task: BodyHost) -> None:
        self.agent = agent
        self.task = task
        self.is_generator = agent.is_generator
        self._gen: Any = None
        self.coro: Any = None  # the pump: the body, suspended at NEED
        self.running = False  # between start and the end of the body
        sinks = agent.sinks
        inputs = task.stage.topics
        # the common case (a plain value keeps the input's key and time): per sink, the
        # collector's positional append for its topic and the bare encoder of its values;
        # a sink whose key codec writes other bytes than the inputs' encodes the event's key
        keyed = task.collector.keyed
        kept = [s for s in sinks if all(same_bytes(i.key_codec, s.key_codec) for i in inputs)]
        self._plain = [(keyed(s.name), dumps(s.value_codec)) for s in kept]
        self._rekeyed = [
            (keyed(s.name), dumps(s.value_codec), s.encode_key) for s in sinks if s not in kept
        ]
        self._keyless = [(keyed(s.name), dumps(s.value_codec)) for s in sinks]  # no record
        self._sinks = sinks
        self._rows: list[Callable[[Any], None]] = []  # sinks beyond Kafka, bound at start

    def __repr__(self) -> str:
        return f"Body({self.agent.name}, {self.task!r})"

    async def start(self) -> None:
        """Make the body and run it up to its first request for a value."""
        if self.agent.row_sinks and self.task.sinks is not None:
            self._rows = [self.task.sinks.push(s) for s in self.agent.row_sinks]
        self._gen = self.agent.fn(AgentStream(self.task, self.agent))
        self.coro = self._pump() if self.is_generator else self._gen
        self.running = True
        await resume(self, None, None)

    async def _pump(self) -> None:
        """An async generator body, iterated: what it yields goes to the sinks. Stepped by
        `resume`, it suspends only where the body asks for a value."""
        output, submit = self._output(), self.task.collector.submit_full
        async for out in self._gen:
            if output(out):
                await submit()

    def feed(self, value: Any) -> Any:
        """The body's next value: (awaited) run it until it asks for another."""
        return resume(self, value, None)

    def carry(self, awaited: Any) -> Any:
        """(Awaited) the rest of a step that `coro.send` began and that stopped at a real
        await of the body's (`awaited`, for the event loop): run it until it asks again."""
        return resume(self, None, None, awaited)

    async def stop(self) -> None:
        """End the body's `async for` (its code after the loop runs)."""
        for _ in range(3):  # a body that asks again after its stream ended is left alone
            if not self.running:
                return
            await resume(self, None, StopAsyncIteration())
        self.running = False

    def _output(self) -> Callable[[Any], bool]:
        """`output`, or for the common agent (one sink, of the input's key bytes, no sink
        beyond Kafka) its plain-value case as one closure, `output` for the rest."""
        if len(self._plain) != 1 or self._rekeyed or self._rows:
            return self.output
        (add, encode), task, general = self._plain[0], self.task, self.output

        def one(out: Any) -> bool:
            rec = task.record
            if rec is None or type(out) is Record:
                return general(out)
            return add(rec.key, None if out is None else encode(out), rec.timestamp)

        return one

    def output(self, out: Any) -> bool:
        """A value the body yielded: to every sink. True when a batch filled up."""
        rec = self.task.record
        full = False
        if type(out) is Record:
            append = self.task.collector.append
            ts = out.timestamp_ms
            if ts is None and rec is not None:
                ts = rec.timestamp
            for sink in self._sinks:
                full |= append(
                    sink.name,
                    sink.encode_key(out.key),
                    sink.encode_value(out.value),
                    headers=out.headers,
                    timestamp_ms=ts,
                )
        elif rec is not None:  # the common case: keep the input's key and time
            key, ts = rec.key, rec.timestamp
            for add, encode in self._plain:
                full |= add(key, None if out is None else encode(out), ts)
            if self._rekeyed:
                event = self.task.current
                decoded = None if event is None else event.key
                for add, encode, encode_key in self._rekeyed:
                    full |= add(encode_key(decoded), None if out is None else encode(out), ts)
        else:
            for add, encode in self._keyless:
                full |= add(None, None if out is None else encode(out), None)
        for row in self._rows:  # sinks beyond Kafka: the value as a row
            row(out.value if type(out) is Record else out)
        return full


class Agents:
    """The bodies of a stage's agents in one task, and the values a pass queued for them."""

    def __init__(
        self, task: BodyHost, agents: list[Agent], on_error: Callable[[Exception, str], None]
    ) -> None:
        self.bodies = {a.name: Body(a, task) for a in agents}
        # A stage with one agent (the common case) queues bare values for it; with several,
        # (body, value) pairs, in the order the pass reached them.
        self.single = next(iter(self.bodies.values())) if len(self.bodies) == 1 else None
        self.pending: list[Any] = []
        self._on_error = on_error  # dead-letters the record for that agent, or raises

    def input(self, agent: Agent) -> Callable[[Any], None]:
        body, pending = self.bodies[agent.name], self.pending
        if self.single is not None:
            return pending.append

        def to_agent(value: Any) -> None:
            pending.append((body, value))

        return to_agent

    async def start(self) -> None:
        for body in self.bodies.values():
            await body.start()

    async def stop(self) -> None:
        for body in self.bodies.values():
            await body.stop()

    async def feed(self) -> None:
        """Hand the queued values to their bodies, in order. A body that raised on its value
        is made anew (raising again there is a bug in the body: the task stops)."""
        pending, single = self.pending, self.single
        for item in pending:
            body, value = (single, item) if single is not None else item
            assert isinstance(body, Body)
            if not body.running:
                log.warning("%r returned before its stream ended; restarting it", body)
                await body.start()
            try:
                await body.feed(value)
            except FATAL:
                raise
            except Exception as exc:
                await self.failed(body, exc)
        pending.clear()

    async def failed(self, body: Body, exc: Exception) -> None:
        """A body raised on its value: dead-letter the record for it (or stop), make it anew
        (raising again there is a bug in the body: the task stops)."""
        self._on_error(exc, body.agent.name)
        await body.start()


@types.coroutine
def resume(
    body: Body, send: Any, throw: BaseException | None, awaited: Any = NEED
) -> Generator[Any, Any, None]:
    """Resume a body's suspended pump with a value (or an exception) and run it until it asks
    for a value again, passing its real awaits through to the event loop. `awaited`: the pump
    was already resumed and stopped at that real await (`Body.carry`)."""
    coro = body.coro
    if awaited is not NEED:
        try:
            send = yield awaited
        except BaseException as exc:
            throw, send = exc, None
    while True:
        try:
            if throw is not None:
                yielded = coro.throw(throw)
                throw = None
            else:
                yielded = coro.send(send)
        except StopIteration:
            body.running = False
            return  # the body returned
        except BaseException:
            body.running = False
            raise
        if yielded is NEED:
            return
        try:
            send = yield yielded  # a real await of the body's: the event loop's business
        except BaseException as exc:  # (cancellation) goes into the body
            throw, send = exc, None
