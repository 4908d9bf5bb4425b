"""Stages: an agent's chain cut at its exchanges (key_by, shuffle, rebalance).

To learn the chain, the agent is *traced* once when it is declared: its function is called
with a stream whose source raises `Traced` (a BaseException, so user `except Exception` does
not swallow it) as soon as the body starts iterating, carrying the chain the body built.
Stage 0 consumes the agent's source topic; stage k+1 consumes the internal topic
`{app_id}-{agent}-{name}-repartition` that stage k writes. Only the last stage runs the body;
the others run their map/filter steps and route each value to the next topic.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamkit.events import Event
from streamkit.streams import Exchange, Op, Step, Stream, segment
from streamkit.topics import DLQ_MAX_MESSAGE_BYTES, Topic

if TYPE_CHECKING:
    from streamkit.agents import Agent
    from streamkit.app import App
    from streamkit.state.table import Table
    from streamkit.state.timers import Timers
    from streamkit.state.window_table import WindowTable


class Traced(BaseException):
    def __init__(self, ops: tuple[Op, ...]) -> None:
        self.ops = ops


class AgentShapeError(Exception):
    pass


class _Tracer:
    @property
    def current(self) -> Event | None:
        return None

    def bind(self, ops: tuple[Op, ...]) -> tuple[Op, ...]:
        raise Traced(ops)

    def next_value(self) -> Any:
        raise AssertionError("unreachable: bind raises first")

    async def wait(self) -> None:
        raise AssertionError("unreachable: bind raises first")


def trace(agent_name: str, fn: Any) -> tuple[Op, ...]:
    """Run `fn` up to its first iteration of the stream and return the chain it built."""
    runner = fn(Stream(_Tracer()))
    step = runner.__anext__() if inspect.isasyncgen(runner) else runner
    try:
        step.send(None)
    except Traced as traced:
        return traced.ops
    except (StopIteration, StopAsyncIteration):
        pass
    finally:
        step.close()
        if step is not runner:
            _drive_close(runner.aclose())
    raise AgentShapeError(
        f"agent {agent_name} must start iterating its stream (async for ... in stream...) "
        "before awaiting anything else, so its operators can be known at start"
    )


def _drive_close(closing: Any) -> None:
    with contextlib.suppress(StopIteration, StopAsyncIteration, RuntimeError):
        closing.send(None)


@dataclass
class Stage:
    agent: Agent
    index: int
    source: Topic
    ops: tuple[Op, ...]  # this stage's segment: steps, then the exchange if not last
    output: Topic | None  # the internal topic the exchange writes, None for the last stage
    tables: list[Table[Any, Any]] = field(default_factory=list)  # state the body uses
    windows: list[WindowTable] = field(default_factory=list)  # window tables (in `tables` too)
    timers: list[Timers] = field(default_factory=list)  # timer sets (in `tables` too)

    @property
    def uses_event_time(self) -> bool:
        """Its agent has window tables or timers: every stage tracks event time."""
        return any(st.windows or st.timers for st in self.agent.stages)

    @property
    def exchange(self) -> Exchange | None:
        last = self.ops[-1] if self.ops else None
        return last if isinstance(last, Exchange) else None

    @property
    def name(self) -> str:
        return f"{self.agent.name}.{self.index}"

    @property
    def runs_body(self) -> bool:
        return self.output is None


def build_stages(app: App, agent: Agent, ops: tuple[Op, ...]) -> list[Stage]:
    """Cut `ops` at its exchanges; declare one internal topic per exchange."""
    exchanges = [op for op in ops if isinstance(op, Exchange)]
    names = _exchange_names(exchanges)
    stages: list[Stage] = []
    source = agent.source
    for index in range(len(exchanges) + 1):
        seg = segment(ops, index)
        output = None
        if index < len(exchanges):
            exchange = exchanges[index]
            output = app.topic(
                f"{app.id}-{agent.name}-{names[index]}-repartition",
                key_type=exchange.key_type if exchange.kind == "key_by" else bytes,
                value_type=_value_type(exchange, seg, source),
                partitions=exchange.partitions,
                internal=True,
            )
            if exchange.kind != "key_by":
                output.key_codec = source.key_codec  # keys pass through untouched
        stages.append(Stage(agent, index, source, seg, output))
        if output is not None:
            source = output
    return stages


def _exchange_names(exchanges: list[Exchange]) -> list[str]:
    defaults = Counter(e.kind for e in exchanges if e.name is None)
    seen: Counter[str] = Counter()
    names = []
    for e in exchanges:
        if e.name is not None:
            names.append(e.name)
            continue
        seen[e.kind] += 1
        names.append(e.kind if defaults[e.kind] == 1 else f"{e.kind}-{seen[e.kind]}")
    if len(set(names)) != len(names):
        raise AgentShapeError(f"two exchanges share a name: {names}; pass name=...")
    return names


def _value_type(exchange: Exchange, seg: tuple[Op, ...], source: Topic) -> Any:
    """Values keep the source's codec unless a map may have changed their type."""
    if exchange.value_type is not None:
        return exchange.value_type
    if any(isinstance(op, Step) and op.kind == "map" for op in seg):
        return None  # JSON
    return source.value_type


def resolve_partitions(stages: list[Stage]) -> None:
    """An internal topic without a declared count gets its input's count (known once the
    source topics are verified on the broker); a changelog gets its stage's input count."""
    for stage in stages:
        out = stage.output
        if out is not None and out.declared_partitions is None:
            out.declared_partitions = out.partitions = stage.source.partitions
        for table in stage.tables:
            if table.source:
                if table.changelog.partitions != stage.source.partitions:
                    raise AgentShapeError(
                        f"table {table.name} reads {table.changelog.name} "
                        f"({table.changelog.partitions} partitions) in stage {stage.name}, "
                        f"whose input {stage.source.name} has {stage.source.partitions}: "
                        "give the key_by before it partitions="
                        f"{table.changelog.partitions} (co-partitioned), or use "
                        "app.global_table"
                    )
                continue
            table.changelog.declared_partitions = stage.source.partitions
            table.changelog.partitions = stage.source.partitions


def referenced_names(fn: Any) -> set[str]:
    """Global and closure names a function's code (and the code nested in it) refers to."""
    names: set[str] = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        names.update(code.co_freevars)
        codes.extend(c for c in code.co_consts if inspect.iscode(c))
    return names


def bind_tables(app: App) -> None:
    """Give each table to the last stage of the agent whose body uses it. A stage whose input
    was spread by shuffle/rebalance is not partitioned by any key: a table there is refused."""
    owners: dict[str, Stage] = {}
    for agent in app.agents.values():
        stage = agent.stages[-1]
        scope = {**agent.fn.__globals__}
        for cell_name, cell in zip(
            agent.fn.__code__.co_freevars, agent.fn.__closure__ or (), strict=True
        ):
            scope[cell_name] = cell.cell_contents
        named = [scope.get(n) for n in sorted(referenced_names(agent.fn))]
        windows = [w for w in app.windows.values() if any(obj is w for obj in named)]
        used = [t for t in app.tables.values() if any(obj is t for obj in named)]
        timers = [t for t in app.timers.values() if any(obj is t for obj in named)]
        used += [w.table for w in windows] + [t.table for t in timers]
        stage.tables = []
        stage.windows = windows
        stage.timers = timers
        for wt in windows:
            if wt.late_topic is None:
                wt.late_topic = app.topic(
                    f"{app.id}-{agent.name}-late",
                    key_type=bytes,
                    value_type=bytes,
                    config={"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},  # as the DLQ's
                ).name
        for table in used:
            other = owners.get(table.name)
            if other is not None and other is not stage:
                raise AgentShapeError(
                    f"table {table.name} is used by agents {other.agent.name} and "
                    f"{agent.name}: a table belongs to the one stage that writes it"
                )
            previous = agent.stages[-2].exchange if len(agent.stages) > 1 else None
            if previous is not None and previous.kind != "key_by":
                raise AgentShapeError(
                    f"table {table.name} is used by agent {agent.name} after a "
                    f"{previous.kind}(), so its input is not partitioned by key: key_by first"
                )
            owners[table.name] = stage
            table.stage = stage
            stage.tables.append(table)
