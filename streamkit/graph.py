"""The declared dataflow cut into stages: what `streamkit topology` prints and the runtime runs.

`build(app)` takes the app's agents and sinks, walks their declared streams back to the topics
they start from, and cuts the graph at its exchanges (key_by, shuffle, rebalance). What is
left connected is a **stage**: the operators that run in one task per partition of its inputs.
Two streams of one topic always land in one stage (the topic is fetched once; fan-out); a
merge joins the stages of its parents (one task reads partition p of every input). Each
exchange declares its internal topic `{app}-{name}-repartition`, read by the next stage.

State is owned by the stage that declares it (`@app.agent(..., state=[...])` or
`stream.with_state(...)`); a table declared by two stages, or by a stage whose input is not
partitioned by key (after shuffle/rebalance), is refused here; co-partitioning (inputs of a
stateful stage, source tables) is checked by `partitioning.py` once the broker's partition
counts are known.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.agents import Agent
from streamkit.joins import StreamJoin
from streamkit.serde import Codec, same_bytes
from streamkit.settings import ConfigError
from streamkit.streams import (
    AsyncMapNode,
    BranchNode,
    BranchOut,
    ExchangeNode,
    JoinNode,
    MergeNode,
    Node,
    SinkNode,
    SourceNode,
    StateNode,
    StepNode,
)
from streamkit.topics import DEAD_LETTER_CONFIG, REPARTITION_CONFIG, Topic

if TYPE_CHECKING:
    from streamkit.state.table import Table
    from streamkit.state.timers import Timers
    from streamkit.state.window_table import WindowTable


@dataclass(eq=False)
class AgentNode(Node):
    """An agent at the end of its stream (made when the graph is built)."""

    agent: Agent | None = None

    @property
    def label(self) -> str:
        return f"agent {self.agent.name if self.agent else '?'}"


@dataclass(eq=False)
class Input:
    """One input topic of a stage and the nodes its values enter."""

    topic: Topic
    entries: list[Node]
    upstream: Stage | None = None  # the stage whose exchange writes it (None: a source topic)


@dataclass(eq=False)
class Stage:
    name: str
    inputs: list[Input] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    children: dict[Node, list[Node]] = field(default_factory=dict)
    agents: list[Agent] = field(default_factory=list)
    exchanges: list[ExchangeNode] = field(default_factory=list)
    sinks: list[SinkNode] = field(default_factory=list)
    tables: list[Table[Any, Any]] = field(default_factory=list)  # windows' and timers' too
    windows: list[WindowTable] = field(default_factory=list)
    timers: list[Timers] = field(default_factory=list)
    joins: list[StreamJoin] = field(default_factory=list)  # stream-stream joins (their tables too)
    uses_event_time: bool = False

    def __repr__(self) -> str:
        return f"Stage({self.name})"

    @property
    def source(self) -> Topic:
        """The first input: it names the stage's tasks and transactional ids."""
        return self.inputs[0].topic

    @property
    def topics(self) -> list[Topic]:
        return [i.topic for i in self.inputs]

    @property
    def partitions(self) -> int | None:
        """Tasks of this stage: the largest partition count of its inputs."""
        counts = [i.topic.partitions for i in self.inputs]
        if any(c is None for c in counts):
            return None
        return max(c for c in counts if c is not None)

    @property
    def outputs(self) -> list[Topic]:
        return [x.output for x in self.exchanges if x.output is not None]

    @property
    def keyed(self) -> bool:
        """Every input is partitioned by key (a source topic, or a key_by's topic)."""
        for inp in self.inputs:
            if inp.upstream is not None:
                exchange = next(x for x in inp.upstream.exchanges if x.output is inp.topic)
                if exchange.kind != "key_by":
                    return False
        return True


class Declared(Protocol):
    """What the graph is built from (`App`)."""

    id: str
    agents: dict[str, Agent]
    sink_nodes: list[SinkNode]

    def topic(
        self,
        name: str,
        *,
        key_type: Any = ...,
        value_type: Any = ...,
        partitions: int | None = ...,
        config: dict[str, str] | None = ...,
        internal: bool = ...,
    ) -> Topic: ...

    def state_table(self, item: Any, strict: bool = ...) -> Any: ...


class _Sets:
    """Union-find over nodes and input keys."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        self.parent.setdefault(x, x)
        while self.parent[x] is not x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra is not rb:
            self.parent[ra] = rb


class _TopicKey:
    def __init__(self, name: str) -> None:
        self.name = name


def build(app: Declared) -> list[Stage]:
    terminals: list[Node] = [AgentNode((a.stream.node,), agent=a) for a in app.agents.values()]
    terminals += app.sink_nodes
    nodes, children = _walk(terminals)
    sets = _Sets()
    topic_keys: dict[str, _TopicKey] = {}
    exchange_keys: dict[ExchangeNode, object] = {}
    for node in nodes:
        sets.find(node)
        if isinstance(node, SourceNode):
            for topic in node.topics:
                sets.union(node, topic_keys.setdefault(topic.name, _TopicKey(topic.name)))
        for parent in node.parents:
            if isinstance(parent, ExchangeNode):
                sets.union(node, exchange_keys.setdefault(parent, object()))
            else:
                sets.union(node, parent)
    members: dict[Any, list[Node]] = defaultdict(list)
    for node in nodes:
        members[sets.find(node)].append(node)
    stage_of: dict[Node, Stage] = {}
    stages: list[Stage] = []
    for group in members.values():
        stage = Stage("?", nodes=group)
        for node in group:
            stage_of[node] = stage
            stage.children[node] = children.get(node, [])
            if isinstance(node, AgentNode) and node.agent is not None:
                stage.agents.append(node.agent)
            elif isinstance(node, ExchangeNode):
                stage.exchanges.append(node)
            elif isinstance(node, SinkNode):
                stage.sinks.append(node)
        stages.append(stage)
    ordered = _order(stages, stage_of)
    for stage in ordered:
        _inputs(stage, stage_of)
        stage.name = _stage_name(stage)
        for exchange in stage.exchanges:
            _declare_output(app, stage, exchange)
    _check_names(ordered)
    _bind_state(app, ordered, stage_of)
    _event_time(ordered)
    _check_async(ordered)
    return ordered


def _walk(terminals: list[Node]) -> tuple[list[Node], dict[Node, list[Node]]]:
    seen: dict[Node, None] = {}
    children: dict[Node, list[Node]] = defaultdict(list)
    stack = list(terminals)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen[node] = None
        for parent in node.parents:
            children[parent].append(node)
            stack.append(parent)
    for kids in children.values():  # declaration order, whatever the walk's order
        kids.sort(key=_order_key)
    return sorted(seen, key=_order_key), children


def _order_key(node: Node) -> int:
    return node.serial


def _order(stages: list[Stage], stage_of: dict[Node, Stage]) -> list[Stage]:
    """Upstream stages first (a stage reads what the stages before it write)."""
    ups: dict[Stage, set[Stage]] = {s: set() for s in stages}
    for stage in stages:
        for node in stage.nodes:
            for parent in node.parents:
                if isinstance(parent, ExchangeNode) and stage_of[parent] is not stage:
                    ups[stage].add(stage_of[parent])
    ordered: list[Stage] = []
    placed: set[Stage] = set()
    pending = sorted(stages, key=lambda s: min(n.serial for n in s.nodes))
    while pending:
        ready = next(s for s in pending if ups[s] <= placed)
        pending.remove(ready)
        ordered.append(ready)
        placed.add(ready)
    return ordered


def _inputs(stage: Stage, stage_of: dict[Node, Stage]) -> None:
    by_topic: dict[str, Input] = {}
    for node in stage.nodes:
        if isinstance(node, SourceNode):
            for topic in node.topics:
                inp = by_topic.setdefault(topic.name, Input(topic, []))
                inp.entries.append(node)
        for parent in node.parents:
            if isinstance(parent, ExchangeNode) and stage_of[parent] is not stage:
                assert parent.output is not None  # declared by the upstream stage (ordered)
                inp = by_topic.setdefault(
                    parent.output.name, Input(parent.output, [], upstream=stage_of[parent])
                )
                inp.entries.append(node)
    stage.inputs = sorted(by_topic.values(), key=lambda i: (i.upstream is not None, i.topic.name))


def _stage_name(stage: Stage) -> str:
    first = stage.inputs[0]
    if first.upstream is None:
        return first.topic.name
    exchange = next(x for x in first.upstream.exchanges if x.output is first.topic)
    return exchange.name or first.topic.name


def _declare_output(app: Declared, stage: Stage, exchange: ExchangeNode) -> None:
    if exchange.name is None:
        label = f"-{exchange.key_label}" if exchange.key_label else ""
        exchange.name = f"{stage.name}-{exchange.kind}{label}"
    key_type = exchange.key_type if exchange.kind == "key_by" else stage.source.key_type
    exchange.output = app.topic(
        f"{app.id}-{exchange.name}-repartition",
        key_type=key_type,
        value_type=_value_type(stage, exchange),
        partitions=exchange.partitions,
        config=dict(REPARTITION_CONFIG),
        internal=True,
    )
    if exchange.kind != "key_by":
        exchange.output.key_codec = stage.source.key_codec  # keys pass through untouched


def _value_type(stage: Stage, exchange: ExchangeNode) -> Any:
    """Values keep their input's codec unless a map on the way may have changed their type."""
    if exchange.value_type is not None:
        return exchange.value_type
    return value_type_at(stage, exchange)


def value_type_at(stage: Stage, node: Node) -> Any:
    """The declared type of the values reaching `node`: its input topic's, if one input type
    reaches it and no map on the way may have changed it; else None (JSON)."""
    reached: dict[int, Topic] = {}
    seen: set[Node] = set()
    stack: list[Node] = [node]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node, (AsyncMapNode, JoinNode)) or (
            isinstance(node, StepNode) and node.kind in ("map", "flat_map")
        ):
            return None  # JSON
        for inp in stage.inputs:
            if node in inp.entries:
                reached[id(inp.topic.value_type)] = inp.topic
        stack.extend(p for p in node.parents if p in stage.children)
    if len(reached) == 1:
        return next(iter(reached.values())).value_type
    return None


def forwards_input_bytes(stage: Stage, node: Node, codec: Codec[Any]) -> bool:
    """Whether `node` may write its input record's value bytes where `codec` would encode the
    value: the value is passed unchanged (`passed_unchanged`) and every input of the stage
    encodes values as `codec` does (`same_bytes`)."""
    return passed_unchanged(stage, node) and all(
        same_bytes(t.value_codec, codec) for t in stage.topics
    )


def passed_unchanged(stage: Stage, node: Node) -> bool:
    """Whether every value reaching `node` is the one its input decoded, passed on as it is:
    only filters, branches, forwards, merges and state declarations on every way back to the
    stage's inputs (their functions only look at a value: operators do not change what they
    are given). Such a value's bytes are its input record's, so an exchange may forward them
    instead of encoding the value again."""
    seen: set[Node] = set()
    stack: list[Node] = [p for p in node.parents if p in stage.children]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node, StepNode):
            if node.kind not in ("filter", "forward"):
                return False
        elif not isinstance(node, (SourceNode, StateNode, MergeNode, BranchNode, BranchOut)):
            return False
        stack.extend(p for p in node.parents if p in stage.children)
    return True


def _check_names(stages: list[Stage]) -> None:
    seen: dict[str, Stage] = {}
    for stage in stages:
        for exchange in stage.exchanges:
            name = exchange.name or ""
            if name in seen:
                raise ConfigError(
                    f"two exchanges are named {name!r} (in stages {seen[name].name} and "
                    f"{stage.name}): pass name=... to key_by/shuffle/rebalance"
                )
            seen[name] = stage


def _bind_state(app: Declared, stages: list[Stage], stage_of: dict[Node, Stage]) -> None:
    owner: dict[str, Stage] = {}
    for stage in stages:
        declared: list[Any] = []
        for node in stage.nodes:
            if isinstance(node, StateNode):
                declared.extend(node.state)
            if isinstance(node, AgentNode) and node.agent is not None:
                declared.extend(node.agent.state)
            if isinstance(node, JoinNode) and node.join is not None:
                declared.append(node.join)
        stage.tables, stage.windows, stage.timers, stage.joins = [], [], [], []
        for item in _unique(declared):
            table = app.state_table(item)
            other = owner.get(table.name)
            if other is not None and other is not stage:
                raise ConfigError(
                    f"{_what(item)} is declared by stages {other.name} and {stage.name}: state "
                    "belongs to one stage (the one whose partitions hold its keys); declare it "
                    "once, after the key_by that partitions its keys"
                )
            if other is stage:
                continue
            owner[table.name] = stage
            if not stage.keyed:
                raise ConfigError(
                    f"{_what(item)} is declared by stage {stage.name}, whose input is spread "
                    "by shuffle/rebalance (not partitioned by key): key_by before it"
                )
            stage.tables.append(table)
            table.stage_name = stage.name
            if isinstance(item, StreamJoin):
                stage.joins.append(item)
            elif item is not table and not hasattr(item, "as_of"):  # not a versioned table
                (stage.windows if hasattr(item, "aggregation") else stage.timers).append(item)
            late = (hasattr(item, "aggregation") and item.has_late) or isinstance(item, StreamJoin)
            if late and item.late_topic is None:
                item.late_topic = app.topic(
                    f"{app.id}-{item.name}-late",
                    key_type=bytes,
                    value_type=bytes,
                    config=dict(DEAD_LETTER_CONFIG),
                    internal=True,
                ).name


def _unique(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if not any(item is seen for seen in out):
            out.append(item)
    return out


def _what(item: Any) -> str:
    if isinstance(item, StreamJoin):
        return f"join {item.name}"
    if hasattr(item, "aggregation"):
        return f"window table {item.name}"
    if hasattr(item, "on_fire"):
        return f"timers {item.name}"
    if hasattr(item, "as_of"):
        return f"versioned table {item.name}"
    return f"table {item.name}"


def _event_time(stages: list[Stage]) -> None:
    """A stage tracks event time when it or a stage after it has windows, timers, tables
    with an event-time TTL or versioned tables (their versions and lookups are at event
    times)."""
    for stage in reversed(stages):
        downstream = [
            s for s in stages if any(i.upstream is stage for i in s.inputs) and s is not stage
        ]
        expiring = any(t.ttl is not None and t.ttl.event_time for t in stage.tables)
        stage.uses_event_time = bool(
            stage.windows
            or stage.timers
            or expiring
            or any(t.versioned is not None for t in stage.tables)
            or stage.joins
            or any(s.uses_event_time for s in downstream)
        )


def _check_async(stages: list[Stage]) -> None:
    """Windows see their events in the order of the watermark: a map_async step, which lets
    events finish out of offset order, cannot feed one in its own stage."""
    for stage in stages:
        steps = [n for n in stage.nodes if isinstance(n, AsyncMapNode)]
        if steps and stage.windows:
            raise ConfigError(
                f"stage {stage.name}: {steps[0].label} and window tables "
                f"({', '.join(w.name for w in stage.windows)}) in one stage: key_by the results "
                "of map_async before windowing them (the window then runs in the next stage)"
            )


__all__ = [
    "AgentNode",
    "BranchNode",
    "BranchOut",
    "Input",
    "MergeNode",
    "Stage",
    "build",
]
