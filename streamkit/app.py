"""App: the registry of topics and agents, and the settings they run with."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from streamkit.agents import Agent, AgentFn
from streamkit.events import Headers
from streamkit.settings import ConfigError, Settings, load_settings
from streamkit.stages import AgentShapeError, Stage, bind_tables, build_stages, trace
from streamkit.state.global_table import GlobalTable
from streamkit.state.table import Table
from streamkit.state.timers import Timers
from streamkit.state.window_table import WindowTable
from streamkit.topics import DLQ_MAX_MESSAGE_BYTES, Topic
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
        self._bound = False
        self.dlq = self.topic(
            f"{id}-dlq",
            key_type=bytes,
            value_type=bytes,
            internal=True,
            config={"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
        )

    def configure(self, **overrides: Any) -> Settings:
        """Re-read settings with overrides (the CLI's options) on top of the app's own."""
        self.settings = load_settings(**{**self._given, **overrides})
        return self.settings

    def topic(
        self,
        name: str,
        *,
        key_type: Any = None,
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

    def table(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = str,
        value_type: Any = None,
        source: Topic | None = None,
    ) -> Table[Any, Any]:
        """Declare per-key state, used as a mapping inside the agent that writes it. It lives
        in SQLite next to its partition and in the compacted topic `{id}-{name}-changelog`.

        `source=topic`: a read-only table of that (compacted) topic's latest value per key,
        which is its changelog; the agent stage that reads it must be co-partitioned with it
        (`state/source_tables.py`)."""
        if name in self.tables or name in self.global_tables:
            raise ConfigError(f"two tables are named {name!r}")
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
        )
        self.tables[name] = table
        return table

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
        kind: WindowKind,
        aggregation: Aggregation,
        *,
        emit: str = "final",
        allowed_lateness: float = 0.0,
        output: Topic | None = None,
        late_topic: Topic | None = None,
        key_type: Any = str,
    ) -> WindowTable:
        """Declare a windowed aggregation per key over event time (`sk.tumbling(60)`,
        `sk.hopping(60, every=10)`; `sk.count()`, `sk.sum_of("amount")`...). Results go to
        `output` once per window when it closes (`emit="final"`) or on every change
        (`emit="update"`); events too late for every window go to `late_topic` (default
        `{id}-{agent}-late`). State lives like a table's: SQLite plus a changelog."""
        table = self.table(name, key_type=bytes)
        wt = WindowTable(
            name,
            kind,
            aggregation,
            table,
            emit=emit,
            allowed_lateness_ms=seconds_ms(
                allowed_lateness, f"window {name}: allowed_lateness", zero_ok=True
            ),
            output=output,
            late_topic=None if late_topic is None else late_topic.name,
            key_type=key_type,
        )
        self.windows[name] = wt
        return wt

    def timer_set(self, name: str) -> Timers:
        """Declare per-key timers (`.at(key, when)` in event time, `.after(key, seconds)` in
        processing time) and name their callback with `@timers.on_fire`. Pending timers are
        state of the agent that sets them: checkpointed and restored like a table."""
        timers = Timers(name, self.table(name, key_type=bytes))
        self.timers[name] = timers
        return timers

    def agent(
        self,
        source: Topic,
        *,
        sink: Topic | Iterable[Topic] | None = None,
        name: str | None = None,
    ) -> Callable[[AgentFn], AgentFn]:
        """Decorate `async def fn(stream)`; it runs once per partition of `source`."""
        sinks = [] if sink is None else [sink] if isinstance(sink, Topic) else list(sink)

        def register(fn: AgentFn) -> AgentFn:
            agent_name = name or fn.__name__
            if agent_name in self.agents:
                raise ConfigError(f"two agents are named {agent_name!r}: pass name=...")
            for topic in (source, *sinks):
                if self.topics.get(topic.name) is not topic:
                    raise ConfigError(f"topic {topic.name} was not declared with app.topic()")
            agent = Agent(agent_name, fn, source, sinks)
            try:
                agent.ops = trace(agent_name, fn)
                agent.stages = build_stages(self, agent, agent.ops)
            except AgentShapeError as exc:
                raise ConfigError(str(exc)) from None
            consumed = {st.source.name: st for a in self.agents.values() for st in a.stages}
            for stage in agent.stages:
                other = consumed.get(stage.source.name)
                if other is not None:
                    raise ConfigError(
                        f"agents {other.agent.name} and {agent_name} both consume "
                        f"{stage.source.name}: one agent per source topic (chain the work "
                        "inside one agent instead)"
                    )
            self.agents[agent_name] = agent
            self._bound = False
            return fn

        return register

    @property
    def stages(self) -> list[Stage]:
        """Every agent's stages, with tables bound to the stage that uses them."""
        if not self._bound:
            try:
                bind_tables(self)
            except AgentShapeError as exc:
                raise ConfigError(str(exc)) from None
            self._bound = True
        return [stage for agent in self.agents.values() for stage in agent.stages]

    def topology(self, fmt: str = "text") -> str:
        """The graph of sources, stages, operators, internal topics and sinks."""
        from streamkit.topology import render

        return render(self, fmt)

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[Producer]:
        """A producer for sending outside agents (scripts, tests, the CLI)."""
        from streamkit.runtime.clients import make_producer

        producer = make_producer(self.settings, client_id=f"{self.id}-producer")
        await producer.start()
        try:
            yield Producer(producer)
            await producer.flush()
        finally:
            await producer.stop()


class Producer:
    """Sends with a topic's codecs; `send` waits only for the local buffer, `flush` for acks."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer

    async def send(
        self,
        topic: Topic,
        value: Any = None,
        *,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        await self._producer.send(
            topic.name,
            topic.encode_value(value),
            key=topic.encode_key(key),
            headers=headers,
            partition=partition,
        )

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> None:
        """Send bytes as they are (no codec): for replaying or forging records."""
        await self._producer.send(topic, value, key=key, partition=partition)

    async def flush(self) -> None:
        await self._producer.flush()
