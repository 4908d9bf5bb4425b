"""App: the registry of topics and agents, and the settings they run with."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, overload

from streamkit.agents import Agent, AgentFn
from streamkit.aggregations import check_window
from streamkit.count_windows import CountWindow
from streamkit.graph import Stage, build
from streamkit.joins import StreamJoin
from streamkit.producer import Producer, open_producer
from streamkit.settings import ConfigError, Settings, load_settings
from streamkit.sinks.base import Sink, is_sink
from streamkit.state.global_table import GlobalTable
from streamkit.state.stream_join import join_table
from streamkit.state.table import Table
from streamkit.state.timers import Timers
from streamkit.state.ttl import ttl_of
from streamkit.state.versioned_table import VersionedTable
from streamkit.state.window_table import WindowTable
from streamkit.streams import SinkNode, SourceNode, StepNode, Stream
from streamkit.topics import DEAD_LETTER_CONFIG, Topic
from streamkit.topology import render
from streamkit.versions import Versioned
from streamkit.windows import Aggregation, WindowKind, seconds_ms

_APP_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class App:
    """`App("shop", broker="kafka://localhost:9092", commit_interval=0.5)`.

    Keyword settings are those of `Settings`; `STREAMKIT_*` variables fill the ones not given
    here, and `KAFKA_BOOTSTRAP_SERVERS` overrides the broker. Bad values raise `ConfigError`."""

    def __init__(self, id: str, *, broker: str | None = None, **settings: Any) -> None:
        if not _APP_ID.match(id):
            raise ConfigError(
                f"app id {id!r} is not valid: use 1-100 letters, digits, '_' or '-' "
                "(it names the consumer group and internal topics)"
            )
        self.id = id
        self._given: dict[str, Any] = {"broker": broker, **settings}
        self.settings: Settings = load_settings(**self._given)
        self.topics: dict[str, Topic] = {}
        self.agents: dict[str, Agent] = {}
        self.tables: dict[str, Table[Any, Any]] = {}
        self.windows: dict[str, WindowTable] = {}
        self.timers: dict[str, Timers] = {}
        self.global_tables: dict[str, GlobalTable[Any, Any]] = {}
        self.versioned_tables: dict[str, VersionedTable[Any, Any]] = {}
        self.joins: dict[str, StreamJoin] = {}
        self.sink_nodes: list[SinkNode] = []
        self._stages: list[Stage] | None = None  # the graph, built on first use
        self.dlq = self.topic(
            f"{id}-dlq",
            key_type=bytes,
            value_type=bytes,
            internal=True,
            config=dict(DEAD_LETTER_CONFIG),
        )

    def configure(self, **overrides: Any) -> Settings:
        """Re-read settings with overrides (the CLI's options) on top of the app's own."""
        self.settings = load_settings(**{**self._given, **overrides})
        return self.settings

    def topic(
        self,
        name: str,
        *,
        key_type: Any = str,
        value_type: Any = None,
        partitions: int | None = None,
        config: dict[str, str] | None = None,
        internal: bool = False,
        timestamp: str | Callable[[Any], Any] | None = None,
        timestamp_unit: str = "s",
        out_of_orderness: float = 0.0,
    ) -> Topic:
        """Declare a topic. Declaring the same name twice must agree on everything.

        Event time (for window tables): `timestamp=None` uses the Kafka record timestamp;
        a field name or a function of the value gives a datetime or a number of seconds
        (`timestamp_unit="ms"`: milliseconds). `out_of_orderness` (seconds): how far behind
        the newest event an event may arrive and still be on time."""
        topic = Topic(
            name,
            key_type=key_type,
            value_type=value_type,
            partitions=partitions,
            config=config,
            internal=internal,
            timestamp=timestamp,
            timestamp_unit=timestamp_unit,
            out_of_orderness=out_of_orderness,
        )
        known = self.topics.get(name)
        if known is not None:
            if (known.key_type, known.value_type, known.declared_partitions) != (
                key_type,
                value_type,
                partitions,
            ):
                raise ConfigError(f"topic {name} is declared twice with different settings")
            return known
        self.topics[name] = topic
        return topic

    @overload
    def table(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = str,
        value_type: Any = None,
        source: Topic | None = None,
        local_keys: bool = False,
        ttl: float | None = None,
        ttl_time: str = "event",
        versioned: None = None,
    ) -> Table[Any, Any]: ...

    @overload
    def table(
        self,
        name: str,
        *,
        default: None = None,
        key_type: Any = str,
        value_type: Any = None,
        source: Topic | None = None,
        local_keys: bool = False,
        ttl: None = None,
        ttl_time: str = "event",
        versioned: Versioned,
    ) -> VersionedTable[Any, Any]: ...

    def table(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = str,
        value_type: Any = None,
        source: Topic | None = None,
        local_keys: bool = False,
        ttl: float | None = None,
        ttl_time: str = "event",
        versioned: Versioned | None = None,
    ) -> Any:
        """Declare per-key state. It lives in SQLite next to its partition and in the
        compacted topic `{id}-{name}-changelog`; the stage that owns it is declared with
        `@app.agent(..., state=[table])` or `stream.with_state(table)`, and any code of that
        stage's tasks may use it (the body, helpers, map functions, timer callbacks).

        A key must hash (murmur2) to the partition of the task writing it: a write of another
        key fails, naming the key_by it needs. `local_keys=True` lifts that check for keys that
        are the task's own (they cannot be found by key from outside: queries scan).
        `source=topic`: a read-only table of that (compacted) topic's latest value per key,
        which is its changelog; the stage that reads it must be co-partitioned with it
        (`state/source_tables.py`). `ttl=seconds`: a key expires that long after its last
        write, in event time (`ttl_time="event"`) or by the wall clock (`"processing"`), and
        is purged with a tombstone (`state/ttl.py`).

        `versioned=sk.Versioned(retention=3600)`: a `VersionedTable` that keeps each key's
        history for that many seconds of event time (`as_of(key, t)`); with `source=`, each
        record of the topic is a version at its timestamp (`state/versioned_table.py`)."""
        if name in self.tables or name in self.global_tables:
            raise ConfigError(f"two tables are named {name!r}")
        if versioned is not None:
            if default is not None:
                raise ConfigError(
                    f"table {name}: a versioned table has no default= (as_of and get return "
                    "None, or the default you pass them, for a key without a value)"
                )
            if ttl is not None:
                raise ConfigError(
                    f"table {name}: a versioned table keeps history for its retention; "
                    "ttl= is for plain tables (drop one of them)"
                )
            return self._versioned(name, versioned, key_type, value_type, source, local_keys)
        expiry = ttl_of(name, ttl, ttl_time, source is not None)
        if source is not None:
            if self.topics.get(source.name) is not source:
                raise ConfigError(f"topic {source.name} was not declared with app.topic()")
            changelog = source
        else:
            changelog = self.topic(
                f"{self.id}-{name}-changelog",
                key_type=bytes,
                value_type=bytes,
                config={"cleanup.policy": "compact"},
                internal=True,
            )
        if source is not None and value_type is None:
            value_type = source.value_type
        table: Table[Any, Any] = Table(
            name,
            changelog,
            default=default,
            key_type=key_type,
            value_type=value_type,
            source=source is not None,
            local_keys=local_keys,
            ttl=expiry,
        )
        self.tables[name] = table
        self._stages = None
        return table

    def _versioned(
        self,
        name: str,
        versioned: Versioned,
        key_type: Any,
        value_type: Any,
        source: Topic | None,
        local_keys: bool,
    ) -> VersionedTable[Any, Any]:
        if not isinstance(versioned, Versioned):
            raise ConfigError(f"table {name}: versioned= takes sk.Versioned(retention=...)")
        if source is not None:
            self._check_topic(source, f"table {name}: source")
            if value_type is None:
                value_type = source.value_type
        rows = self.table(name, key_type=bytes, value_type=bytes, local_keys=True)
        rows.local_keys = local_keys  # the versions' keys are checked by the table itself
        table: VersionedTable[Any, Any] = VersionedTable(
            name, rows, versioned, key_type=key_type, value_type=value_type, source=source
        )
        self.versioned_tables[name] = table
        return table

    def join_tables(
        self,
        left: Topic,
        right: Topic,
        *,
        how: str = "inner",
        joiner: Callable[[Any, Any], Any] | None = None,
        name: str | None = None,
        key_type: Any = str,
    ) -> Stream[Any]:
        """The join of two tables read from co-partitioned topics, on the same key: a stream
        of `joiner(left_value, right_value)` (default: the tuple) emitted whenever either
        side of a key changes; a null value (tombstone) deletes that side's row, and a key
        whose joined row disappears emits None (a tombstone). `how`: "inner", "left" or
        "outer". Each side is a table of the stage (`{name}-left`, `{name}-right`: SQLite and
        a changelog); see `state/table_join.py`."""
        from streamkit.state.table_join import TABLE_TABLE_HOWS, check_how, table_table_join

        join_name = name or f"{left.name}-{right.name}"
        check_how(how, TABLE_TABLE_HOWS, f"join_tables({join_name})")
        if left is right:
            raise ConfigError(f"join_tables({join_name}): the two sides are one topic")
        if joiner is not None and not callable(joiner):
            raise ConfigError(f"join_tables({join_name}): joiner must be a function")
        sides = [
            self.table(f"{join_name}-{side}", key_type=key_type, value_type=topic.value_type)
            for side, topic in (("left", left), ("right", right))
        ]
        fn = table_table_join(left.name, sides[0], sides[1], how, joiner)
        owned = self.stream(left, right).with_state(*sides)
        return Stream(self, StepNode((owned.node,), "join_tables", fn))

    def global_table(
        self,
        name: str,
        source: Topic,
        *,
        key_type: Any = str,
        value_type: Any = None,
        default: Callable[[], Any] | None = None,
    ) -> GlobalTable[Any, Any]:
        """Declare a read-only table of every partition of `source` (its latest value per key),
        copied into every worker before its agents start and followed after: readable from any
        agent, by any key (`state/global_table.py`)."""
        if name in self.tables or name in self.global_tables:
            raise ConfigError(f"two tables are named {name!r}")
        if self.topics.get(source.name) is not source:
            raise ConfigError(f"topic {source.name} was not declared with app.topic()")
        table: GlobalTable[Any, Any] = GlobalTable(
            name,
            source,
            key_type=key_type,
            value_type=source.value_type if value_type is None else value_type,
            default=default,
        )
        self.global_tables[name] = table
        return table

    def window(
        self,
        name: str,
        kind: WindowKind | CountWindow,
        aggregation: Aggregation | Sequence[Aggregation] | Mapping[str, Aggregation],
        *,
        emit: str = "final",
        allowed_lateness: float = 0.0,
        output: Topic | None = None,
        late_topic: Topic | None = None,
        key_type: Any = str,
        local_keys: bool = False,
        changelog_extra: float = 86_400,
    ) -> WindowTable:
        """Declare a windowed aggregation per key over event time (`sk.tumbling(60)`,
        `sk.hopping(60, every=10)`; `sk.count()`, `sk.sum_of("amount")`...). Results go to
        `output` once per window when it closes (`emit="final"`) or on every change
        (`emit="update"`); events too late for every window go to `late_topic` (default
        `{id}-{name}-late`). State lives like a table's: SQLite plus a changelog, owned by
        the stage that declares it (`state=[...]`). Several aggregations: a list of them, or
        a dict field → aggregation (`docs/windows.md`). `changelog_extra`: seconds of wall
        clock a tumbling, hopping or sliding window's changelog keeps a row past the window
        and the allowed lateness (its closed rows get no tombstone)."""
        agg = check_window(name, kind, aggregation, emit)
        table = self.table(name, key_type=bytes, local_keys=local_keys)
        wt = WindowTable(
            name,
            kind,
            agg,
            table,
            emit=emit,
            allowed_lateness_ms=seconds_ms(
                allowed_lateness, f"window {name}: allowed_lateness", zero_ok=True
            ),
            output=output,
            late_topic=None if late_topic is None else late_topic.name,
            key_type=key_type,
            changelog_extra_ms=seconds_ms(
                changelog_extra, f"window {name}: changelog_extra", zero_ok=True
            ),
        )
        self.windows[name] = wt
        return wt

    def timer_set(self, name: str, *, key_type: Any = str, local_keys: bool = False) -> Timers:
        """Declare per-key timers (`.at(key, when)` in event time, `.after(key, seconds)` in
        processing time) and name their callback with `@timers.on_fire`. Pending timers are
        state of the stage that declares them (`state=[...]`): checkpointed and restored
        like a table."""
        timers = Timers(name, self.table(name, key_type=bytes, local_keys=local_keys), key_type)
        self.timers[name] = timers
        return timers

    def join_state(self, join: StreamJoin) -> None:
        """The table of a stream-stream join's buffered records (`stream.join`): SQLite and
        the changelog `{id}-{name}-changelog`, like any table."""
        if join.name in self.tables or join.name in self.global_tables:
            raise ConfigError(
                f"join {join.name}: a join or table of that name exists already: give the "
                "join name=... (it names its state and late topic)"
            )
        join.table = join_table(self.table(join.name, key_type=bytes, value_type=bytes), join)
        self.joins[join.name] = join

    def stream(self, *topics: Topic) -> Stream[Any]:
        """A declared stream of the values of `topics` (several: merged). Build on it with
        map, filter, key_by...; consume it with `@app.agent(stream)` or `stream.to(topic)`."""
        if not topics:
            raise ConfigError("app.stream() needs at least one topic")
        for topic in topics:
            self._check_topic(topic, "app.stream")
        return Stream(self, SourceNode((), tuple(topics)))

    def agent(
        self,
        source: Topic | Stream[Any] | list[Topic] | tuple[Topic, ...],
        *,
        sink: Topic | Sink | Iterable[Topic | Sink] | None = None,
        name: str | None = None,
        state: Iterable[Any] = (),
    ) -> Callable[[AgentFn], AgentFn]:
        """Decorate `async def fn(stream)`: it consumes `source` (a declared stream, a topic,
        or a list of topics to merge), once per partition of its stage. `state`: the tables,
        window tables and timers its stage owns. `sink`: topics, or sinks beyond Kafka
        (`sk.PostgresSink`...) that take what the body yields as rows. Nothing of `fn` runs
        here."""
        stream = self._as_stream(source)
        targets = [] if sink is None else [sink] if not isinstance(sink, Iterable) else list(sink)
        rows = [t for t in targets if not isinstance(t, Topic) and is_sink(t)]
        sinks: list[Topic] = []
        for topic in targets:
            if not any(topic is r for r in rows):
                self._check_topic(topic, "sink")
                assert isinstance(topic, Topic)
                sinks.append(topic)
        for row_sink in rows:
            self._check_sink_name(row_sink)
        owned = tuple(state)
        self.check_state(owned, "agent state")

        def register(fn: AgentFn) -> AgentFn:
            agent_name = str(name or getattr(fn, "__name__", "agent"))
            if agent_name in self.agents:
                raise ConfigError(f"two agents are named {agent_name!r}: pass name=...")
            self.agents[agent_name] = Agent(agent_name, fn, stream, sinks, owned, rows)
            self._stages = None
            return fn

        return register

    def sink(self, stream: Stream[Any], topic: Topic | Sink) -> None:
        """`stream.to(topic)`: every value of `stream` to `topic` (or to a sink beyond Kafka:
        `streamkit/sinks/`, docs/sinks.md)."""
        if not isinstance(topic, Topic) and is_sink(topic):
            self._check_sink_name(topic)
            self.sink_nodes.append(SinkNode((stream.node,), sink=topic))
        else:
            self._check_topic(topic, "to")
            assert isinstance(topic, Topic)
            self.sink_nodes.append(SinkNode((stream.node,), topic=topic))
        self._stages = None

    def _check_sink_name(self, sink: Sink) -> None:
        taken = {(n.sink.label, n.sink.name) for n in self.sink_nodes if n.sink is not None}
        taken |= {(s.label, s.name) for a in self.agents.values() for s in a.row_sinks}
        if (sink.label, sink.name) in taken:
            raise ConfigError(
                f"two sinks write to {sink.label} named {sink.name!r}: pass name= to one (it "
                "keys the offsets stored with its rows)"
            )

    def _as_stream(self, source: Any) -> Stream[Any]:
        if isinstance(source, Stream):
            if source.app is not self:
                raise ConfigError(f"{source!r} belongs to another app")
            return source
        if isinstance(source, Topic):
            return self.stream(source)
        if (
            isinstance(source, (list, tuple))
            and source
            and all(isinstance(t, Topic) for t in source)
        ):
            return self.stream(*source)
        raise ConfigError(
            f"an agent reads a topic (app.topic), a list of topics or a declared stream "
            f"(app.stream), not {source!r}"
        )

    def _check_topic(self, topic: Any, where: str) -> None:
        if not isinstance(topic, Topic):
            raise ConfigError(f"{where}: {topic!r} is not a topic (declare it with app.topic())")
        if self.topics.get(topic.name) is not topic:
            raise ConfigError(f"topic {topic.name} was not declared with app.topic()")

    def check_state(self, items: Iterable[Any], where: str) -> None:
        for item in items:
            if self.state_table(item, strict=False) is None:
                raise ConfigError(
                    f"{where}: {item!r} is not a table, window table or timer set of app "
                    f"{self.id} (declare it with app.table, app.window or app.timer_set)"
                )

    def state_table(self, item: Any, strict: bool = True) -> Any:
        """The table that stores `item` (a table, window table or timer set), or None."""
        table = item if isinstance(item, Table) else getattr(item, "table", None)
        if isinstance(table, Table) and self.tables.get(table.name) is table:
            return table
        if strict:
            raise ConfigError(f"{item!r} is not state of app {self.id}")
        return None

    @property
    def source_topics(self) -> set[str]:
        """Topics the app reads that no stage of it writes (its input)."""
        return {i.topic.name for st in self.stages for i in st.inputs if i.upstream is None}

    @property
    def sink_topics(self) -> set[str]:
        """Topics agents and `to()` write."""
        names = {t.name for a in self.agents.values() for t in a.sinks}
        names |= {n.topic.name for n in self.sink_nodes if n.topic is not None}
        return names | {w.output.name for w in self.windows.values() if w.output is not None}

    @property
    def stages(self) -> list[Stage]:
        """The declared graph cut into stages (built on first use, after every declaration)."""
        if self._stages is None:
            self._stages = build(self)
        return self._stages

    def topology(self, fmt: str = "text") -> str:
        """The graph of sources, stages, operators, internal topics and sinks."""
        return render(self, fmt)

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[Producer]:
        """A producer for sending outside agents (scripts, tests, the CLI)."""
        async with open_producer(self.settings, f"{self.id}-producer") as producer:
            yield producer
