"""Stream: a declared stream of values, a node of the app's dataflow graph. Nothing runs here.

`app.stream(purchases)` starts a stream at one or more topics (several: a merge); each operator
returns a new stream and leaves the old one as it was, so a stream may feed any number of
operators, agents and sinks (fan-out). The operators:

- `map`, `filter`, `flat_map`, `forward`: run inline, in the task of the partition (no hop);
- `map_async`: awaits a function per value, several at once, one at a time per key;
- `key_by`, `shuffle`, `rebalance`: exchanges, through an internal topic
  `{app}-{name}-repartition`; what follows runs in the tasks of that topic's partitions;
- `merge`: one stream of the values of several; `branch`: each value to the first of several
  streams whose predicate holds; `to`: write each value to a topic;
- `with_state`: the tables, window tables and timers the stage of this stream owns;
- `join`: a stream-stream join on event time (`joins.py`), a stage with both as inputs.

`graph.py` cuts the declared graph at its exchanges into stages; `runtime/` runs a task per
stage and partition. An agent (`@app.agent(stream)`) consumes a declared stream: its body
iterates an `AgentStream` at run time (the runtime's, with the same element type).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from streamkit.asyncmap import AsyncOptions, async_function, async_options
from streamkit.events import Event
from streamkit.joins import LEFT, RIGHT, Joiner, StreamJoin, join_spec, pair
from streamkit.settings import ConfigError
from streamkit.windows import seconds_ms

if TYPE_CHECKING:
    from streamkit.sinks.base import Sink
    from streamkit.topics import Topic

T = TypeVar("T")
U = TypeVar("U")

STEP_KINDS = ("map", "filter", "flat_map", "forward")
EXCHANGE_KINDS = ("key_by", "shuffle", "rebalance")


_SERIAL = itertools.count()


@dataclass(eq=False)
class Node:
    """A node of the declared graph. Nodes compare by identity; `serial` is the declaration
    order (the graph lists stages and operators in it)."""

    parents: tuple[Node, ...]
    serial: int = field(default_factory=lambda: next(_SERIAL), init=False)

    @property
    def label(self) -> str:
        return type(self).__name__.lower()


@dataclass(eq=False)
class SourceNode(Node):
    """Values decoded from one or more topics (`app.stream(a, b)`)."""

    topics: tuple[Topic, ...] = ()

    @property
    def label(self) -> str:
        return "stream(" + ", ".join(t.name for t in self.topics) + ")"


@dataclass(eq=False)
class StepNode(Node):
    """map / filter / flat_map / forward: runs inside the task of its partition."""

    kind: str = "map"
    fn: Callable[[Any], Any] | None = None

    @property
    def label(self) -> str:
        name = getattr(self.fn, "__name__", "")
        return self.kind if not name or name == "<lambda>" else f"{self.kind}({name})"


@dataclass(eq=False)
class AsyncMapNode(Node):
    """map_async: awaits `fn(value)` in the task of its partition, several events at once
    (one at a time per key); what follows runs when the call has returned."""

    fn: Callable[[Any], Any] | None = None
    options: AsyncOptions = field(default_factory=AsyncOptions)

    @property
    def label(self) -> str:
        name = getattr(self.fn, "__name__", "")
        n = self.options.concurrency
        return f"map_async({name}, {n})" if name and name != "<lambda>" else f"map_async({n})"


@dataclass(eq=False)
class ExchangeNode(Node):
    """key_by / shuffle / rebalance: the end of a stage; its children run in the stage that
    reads `output` (declared when the graph is built)."""

    kind: str = "key_by"
    partitions: int | None = None
    name: str | None = None
    key: Callable[[Any], Any] | None = None
    key_label: str | None = None
    key_type: Any = str
    value_type: Any = None
    seed: int | None = None
    output: Topic | None = None
    key_field: str | None = None  # key_by("name"): the field the key is (`key` gets it)

    @property
    def label(self) -> str:
        if self.kind == "key_by":
            return f"key_by({self.key_label or ''})"
        return self.kind


@dataclass(eq=False)
class MergeNode(Node):
    """The values of every parent, in the order they arrive."""

    @property
    def label(self) -> str:
        return "merge"


@dataclass(eq=False)
class BranchNode(Node):
    """Each value goes to the first output whose predicate holds (the last output takes the
    rest when `default` is set); values no predicate takes are dropped."""

    predicates: tuple[Callable[[Any], bool], ...] = ()
    default: bool = False

    @property
    def label(self) -> str:
        return f"branch({len(self.predicates) + self.default})"


@dataclass(eq=False)
class BranchOut(Node):
    index: int = 0

    @property
    def label(self) -> str:
        return f"branch[{self.index}]"


@dataclass(eq=False)
class SinkNode(Node):
    """`stream.to(topic)`: each value to `topic`, with the key of its event; or
    `stream.to(sink)`: each value as a row of a sink beyond Kafka (`streamkit/sinks/`)."""

    topic: Topic | None = None
    sink: Any = None

    @property
    def label(self) -> str:
        if self.sink is not None:
            return f"to({self.sink.label}, {self.sink.guarantee})"
        return f"to({self.topic.name if self.topic else '?'})"


@dataclass(eq=False)
class StateNode(Node):
    """`stream.with_state(...)`: no operator, a declaration that the stage owns this state."""

    state: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return "with_state(" + ", ".join(getattr(s, "name", "?") for s in self.state) + ")"


@dataclass(eq=False)
class JoinSideNode(Node):
    """One input of a join (`side` LEFT or RIGHT): its values enter the join's state."""

    join: StreamJoin | None = None
    side: int = LEFT

    @property
    def label(self) -> str:
        return "left" if self.side == LEFT else "right"


@dataclass(eq=False)
class JoinNode(Node):
    """The results of a join; its parents are its two JoinSideNodes."""

    join: StreamJoin | None = None

    @property
    def label(self) -> str:
        return f"join {self.join.name}" if self.join else "join"


class Declarer(Protocol):
    """What a stream needs of its app (`App`): where sinks and state are declared."""

    id: str

    def sink(self, stream: Stream[Any], topic: Any) -> None: ...

    def check_state(self, items: Iterable[Any], where: str) -> None: ...

    def join_state(self, join: StreamJoin) -> None:
        """Give `join` its table of buffered records (ConfigError if the name is taken)."""


class Stream(Generic[T]):
    """A declared stream. Operators return new streams; iterate one only in an agent body."""

    def __init__(self, app: Declarer, node: Node) -> None:
        self.app = app
        self.node = node

    def __repr__(self) -> str:
        return f"Stream({self.node.label})"

    def _then(self, node: Node) -> Stream[Any]:
        return Stream(self.app, node)

    # -- inline operators --------------------------------------------------------------------

    def map(self, fn: Callable[[T], U]) -> Stream[U]:
        """A stream of `fn(value)`; the event (key, offset...) is unchanged."""
        return self._then(StepNode((self.node,), "map", _callable(fn, "map")))

    def filter(self, predicate: Callable[[T], bool]) -> Stream[T]:
        """The values for which `predicate` is true; the others count as processed."""
        return self._then(StepNode((self.node,), "filter", _callable(predicate, "filter")))

    def flat_map(self, fn: Callable[[T], Iterable[U]]) -> Stream[U]:
        """Each element of `fn(value)` (an iterable), in order, as values of the same event."""
        return self._then(StepNode((self.node,), "flat_map", _callable(fn, "flat_map")))

    def map_async(
        self,
        fn: Callable[[T], Awaitable[U]],
        *,
        concurrency: int = 8,
        capacity: int | None = None,
        timeout: float | None = 5.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
    ) -> Stream[U]:
        """A stream of `await fn(value)`, up to `concurrency` calls in flight per task; events
        of one key are called and delivered in their order, and an offset is committed only
        once every event before it has finished. An attempt that raises or outlives `timeout`
        seconds is tried again `retries` times (after `backoff` seconds, doubled each time up to
        `max_backoff`), then the event goes to the dead-letter topic. The task takes no new
        record while `capacity` events (default 2 x concurrency) are unfinished. See
        docs/async-io.md."""
        options = async_options(
            concurrency=concurrency,
            capacity=capacity,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        return self._then(AsyncMapNode((self.node,), async_function(fn), options))

    def forward(self) -> Stream[T]:
        """Stay in this partition: the next operator runs in the same task (no topic hop)."""
        return self._then(StepNode((self.node,), "forward"))

    # -- exchanges ---------------------------------------------------------------------------

    def key_by(
        self,
        key: Callable[[T], Any] | str,
        *,
        partitions: int | None = None,
        name: str | None = None,
        key_type: Any = str,
        value_type: Any = None,
    ) -> Stream[T]:
        """Repartition by key through `{app}-{name}-repartition` (murmur2, like Java).

        `key` is a function of the value or the name of a field/attribute of it. `partitions`
        defaults to the input's count. What follows runs where that key's partition is, and
        the event's key is the new key."""
        label: str | None
        if isinstance(key, str):
            key_fn, label = _field_getter(key), key
        else:
            key_fn = _callable(key, "key_by")
            fn_name = getattr(key, "__name__", None)
            label = None if fn_name in (None, "<lambda>") else str(fn_name)
        return self._then(
            ExchangeNode(
                (self.node,),
                "key_by",
                _partitions(partitions),
                name,
                key_fn,
                label,
                key_type=key_type,
                value_type=value_type,
                key_field=key if isinstance(key, str) else None,
            )
        )

    def shuffle(
        self, *, partitions: int | None = None, name: str | None = None, seed: int | None = None
    ) -> Stream[T]:
        """Each value to a random partition of an internal topic."""
        return self._then(
            ExchangeNode((self.node,), "shuffle", _partitions(partitions), name, seed=seed)
        )

    def rebalance(self, *, partitions: int | None = None, name: str | None = None) -> Stream[T]:
        """Round-robin over the partitions of an internal topic, per producing task."""
        return self._then(ExchangeNode((self.node,), "rebalance", _partitions(partitions), name))

    # -- shape -------------------------------------------------------------------------------

    def merge(self, *others: Stream[Any]) -> Stream[Any]:
        """One stream of the values of this one and `others`. Streams of different stages
        are read by one task per partition: their inputs must be co-partitioned when the
        merged stream is keyed (checked at start)."""
        for other in others:
            if not isinstance(other, Stream) or other.app is not self.app:
                raise ConfigError(
                    f"merge: {other!r} is not a stream of app {self.app.id} (use app.stream())"
                )
        return self._then(MergeNode((self.node, *(o.node for o in others))))

    def branch(
        self, *predicates: Callable[[T], bool], default: bool = False
    ) -> tuple[Stream[T], ...]:
        """Streams that split this one: each value goes to the first whose predicate holds;
        `default=True` adds a last stream for the values no predicate takes."""
        if not predicates:
            raise ConfigError("branch needs at least one predicate")
        node = BranchNode((self.node,), tuple(_callable(p, "branch") for p in predicates), default)
        count = len(predicates) + (1 if default else 0)
        return tuple(self._then(BranchOut((node,), i)) for i in range(count))

    def to(self, topic: Topic | Sink) -> None:
        """Write each value to `topic` (keyed by its event's key, at its event's time), or
        to a sink beyond Kafka (`sk.PostgresSink`, `sk.SqliteSink`, `sk.JsonLinesSink`)."""
        self.app.sink(self, topic)

    def join(
        self,
        other: Stream[Any],
        *,
        within: float | None = None,
        between: tuple[float, float] | None = None,
        grace: float = 0.0,
        how: str = "inner",
        joiner: Joiner | None = None,
        on: str | Callable[[Any], Any] | tuple[Any, Any] | None = None,
        partitions: int | None = None,
        name: str | None = None,
        changelog_extra: float = 86_400,
    ) -> Stream[Any]:
        """Join this stream (left) with `other` (right) on their keys and event times.

        A right record at `tr` matches a left one at `tl` of the same key when `tl - within
        <= tr <= tl + within`, or `tl + lower <= tr <= tl + upper` with `between=(lower,
        upper)` (seconds, both ends included). Each match is `joiner(left, right)` (default:
        the tuple `(left, right)`) at the later of the two times. `how="left"` also emits
        `joiner(left, None)` for a left record no right one matched, `"outer"` both sides'
        unmatched, once the watermark has passed its last chance plus `grace` (seconds) and
        never earlier. Records later than `grace` go to `{app}-{name}-late`. Keys: the
        records' keys, or with `on=` (a field name or function, or one per side) a key_by of
        each side (`partitions=` their count). Both sides are co-partitioned (checked at
        start). `changelog_extra`: seconds of wall clock the join's changelog keeps a buffered
        record past the window and grace (its time retention). See docs/joins.md."""
        if not isinstance(other, Stream) or other.app is not self.app:
            raise ConfigError(f"join: {other!r} is not a stream of app {self.app.id}")
        join_name = name or f"{_origin(self.node)}-join-{_origin(other.node)}"
        spec = join_spec(within=within, between=between, grace=grace, how=how, what=join_name)
        if joiner is not None:
            _callable(joiner, "join")  # a plain function, or ConfigError
        fn: Joiner = pair if joiner is None else joiner
        left, right = self, other
        if on is not None:
            left_on, right_on = on if isinstance(on, tuple) else (on, on)
            left = self.key_by(left_on, partitions=partitions, name=f"{join_name}-left")
            right = other.key_by(right_on, partitions=partitions, name=f"{join_name}-right")
        extra = seconds_ms(changelog_extra, f"{join_name}: changelog_extra", zero_ok=True)
        declared = StreamJoin(join_name, spec, fn, extra)
        self.app.join_state(declared)
        sides = (
            JoinSideNode((left.node,), join=declared, side=LEFT),
            JoinSideNode((right.node,), join=declared, side=RIGHT),
        )
        return self._then(JoinNode(sides, join=declared))

    def with_state(self, *state: Any) -> Stream[T]:
        """Declare that the stage running this stream owns `state` (tables, window tables,
        timers): its code (map/filter functions, agents, timer callbacks, helpers they call)
        may use them on the keys of its partition."""
        self.app.check_state(state, f"{self!r}.with_state")
        return self._then(StateNode((self.node,), tuple(state)))

    def join_table(
        self,
        table: Any,
        *,
        how: str = "inner",
        joiner: Callable[[T, Any], U] | None = None,
    ) -> Stream[Any]:
        """Join each value with `table`'s value under the event's key: `joiner(value,
        table_value)`, by default the tuple `(value, table_value)`. `how="inner"` drops values
        whose key the table lacks; `how="left"` joins them with None. A versioned table
        answers as of the event's time (`as_of`); a table read from a topic is first read up
        to the event (`table_sync_max_wait`). The stage owns `table` (co-partitioned with it:
        key_by on the table's key). See `state/table_join.py`."""
        from streamkit.state.table_join import stream_table_join

        if joiner is not None:
            _callable(joiner, "join_table")
        fn = stream_table_join(table, how, joiner)
        owned = self.with_state(table)
        return owned._then(StepNode((owned.node,), "join_table", fn))

    # -- only in an agent body ---------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[T]:
        raise TypeError(
            f"{self!r} is a declared stream: iterate it in an agent body "
            "(@app.agent(stream) async def fn(stream): async for value in stream: ...)"
        )

    @property
    def event(self) -> Event:
        raise TypeError(f"{self!r} is a declared stream: .event exists in an agent body only")


def _partitions(partitions: int | None) -> int | None:
    if partitions is not None and (
        isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
    ):
        raise ConfigError(f"partitions must be a whole number >= 1, got {partitions!r}")
    return partitions


def _callable(fn: Any, op: str) -> Callable[[Any], Any]:
    if not callable(fn):
        raise ConfigError(f"{op} needs a function, got {fn!r}")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigError(
            f"{op}({getattr(fn, '__name__', fn)}): operator functions are plain functions "
            "(they run inline per event); await inside an agent body instead"
        )
    return fn  # type: ignore[no-any-return]


def _origin(node: Node) -> str:
    """A name for where a stream comes from: its exchange's, else its first topic's."""
    while True:
        if isinstance(node, SourceNode) and node.topics:
            return node.topics[0].name
        if isinstance(node, ExchangeNode) and node.name:
            return node.name
        if not node.parents:
            return "stream"
        node = node.parents[0]


def _field_getter(name: str) -> Callable[[Any], Any]:
    def get(value: Any) -> Any:
        if isinstance(value, dict):
            return value[name]
        return getattr(value, name)

    get.__name__ = name
    return get
