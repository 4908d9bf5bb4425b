"""A stage's operators compiled for one task: per input topic, a function that pushes one
decoded value through every operator of the stage, depth first, in declaration order.

Inline operators (map, filter, flat_map, forward, merge, branch) call the next ones directly;
a map_async step notes a job for its task's calls (`async_map.py`), which push its result on;
an exchange appends the value to its internal topic (`Router`); a sink appends it to its topic;
an agent gets it queued, and the task hands it to the agent's body right after the push (see
`task.py`); a side of a join feeds the join's state, whose results the task pushes on after
the record (`joins.py`). Where a stream fans out, a branch that raises does not stop the
others: the task dead-letters the event for that branch (`on_branch_error`) and the push goes
on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from streamkit.agents import Agent
from streamkit.events import Event
from streamkit.graph import AgentNode, Stage, forwards_input_bytes
from streamkit.runtime.async_map import AsyncCalls
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.exchange import Router
from streamkit.runtime.failures import FATAL
from streamkit.runtime.joins import JoinHost, side_input
from streamkit.runtime.sinks import TaskSinks
from streamkit.serde import dumps, same_bytes
from streamkit.streams import (
    AsyncMapNode,
    BranchNode,
    BranchOut,
    ExchangeNode,
    JoinNode,
    JoinSideNode,
    MergeNode,
    Node,
    SinkNode,
    SourceNode,
    StateNode,
    StepNode,
)

Push = Callable[[Any], None]


class PassHost(JoinHost, Protocol):
    """What the compiled operators use of their task (`runtime/task.py`)."""

    partition: int
    record: Any  # the raw record being pushed
    event_ts: int | None
    full: bool  # set when an append filled a batch
    collector: RecordCollector
    sinks: TaskSinks | None

    @property
    def current(self) -> Event | None: ...

    def on_branch_error(self, exc: Exception) -> None: ...

    def agent_input(self, agent: Agent) -> Push: ...


def _nothing(value: Any) -> None:
    return None


class Compiler:
    def __init__(self, task: PassHost, stage: Stage, calls: AsyncCalls | None = None) -> None:
        self.task = task
        self.stage = stage
        self.calls = calls  # the task's map_async steps (when the stage has some)
        self.routers: list[Router] = []
        self._done: dict[Node, Push] = {}

    def inputs(self) -> dict[str, Push]:
        """Input topic name → the push function of its values."""
        return {inp.topic.name: self._fan(inp.entries) for inp in self.stage.inputs}

    def node(self, node: Node) -> Push:
        """What `node` does with a value coming from its parent."""
        push = self._done.get(node)
        if push is None:
            push = self._done[node] = self._make(node)
        return push

    def _next(self, node: Node) -> Push:
        return self._fan(self.stage.children.get(node, []))

    def _fan(self, nodes: list[Node]) -> Push:
        outs = [self.node(n) for n in nodes]
        if not outs:
            return _nothing
        if len(outs) == 1:
            return outs[0]
        failed = self.task.on_branch_error

        def fan(value: Any) -> None:
            for out in outs:
                try:
                    out(value)
                except FATAL:
                    raise
                except Exception as exc:  # one branch's failure is not the others'
                    failed(exc)

        return fan

    def _make(self, node: Node) -> Push:
        if isinstance(node, (SourceNode, StateNode, MergeNode, BranchOut)):
            return self._next(node)
        if isinstance(node, StepNode):
            return self._step(node)
        if isinstance(node, JoinSideNode):  # the join's results: after the record, queued
            join = next(n for n in self.stage.children[node] if isinstance(n, JoinNode))
            return side_input(self.task, node, self._next(join), self.stage)
        if isinstance(node, BranchNode):
            return self._branch(node)
        if isinstance(node, ExchangeNode):
            return self._exchange(node)
        if isinstance(node, SinkNode):
            return self._sink(node)
        if isinstance(node, AgentNode):
            assert node.agent is not None
            return self.task.agent_input(node.agent)
        if isinstance(node, AsyncMapNode):
            assert self.calls is not None
            return self.calls.lane(node, self._next(node))
        raise TypeError(f"unknown node {node!r}")

    def _step(self, node: StepNode) -> Push:
        nxt = self._next(node)
        fn = node.fn
        if fn is None or node.kind == "forward":
            return nxt
        if node.kind == "map":

            def map_(value: Any) -> None:
                nxt(fn(value))

            return map_
        if node.kind == "filter":

            def filter_(value: Any) -> None:
                if fn(value):
                    nxt(value)

            return filter_

        def flat_map(value: Any) -> None:
            for item in fn(value):
                nxt(item)

        return flat_map

    def _branch(self, node: BranchNode) -> Push:
        outs: dict[int, Push] = {}
        for child in self.stage.children.get(node, []):
            if isinstance(child, BranchOut):
                outs[child.index] = self.node(child)
        routes = [(pred, outs.get(i, _nothing)) for i, pred in enumerate(node.predicates)]
        rest = outs.get(len(node.predicates), _nothing) if node.default else _nothing

        def branch(value: Any) -> None:
            for pred, out in routes:
                if pred(value):
                    out(value)
                    return
            rest(value)

        return branch

    def _exchange(self, node: ExchangeNode) -> Push:
        assert node.output is not None
        raw = forwards_input_bytes(self.stage, node, node.output.value_codec)
        router = Router(node, node.output, self.task.partition, raw)
        self.routers.append(router)
        return router.bind(self.task)

    def _sink(self, node: SinkNode) -> Push:
        if node.sink is not None:  # beyond Kafka: rows for the task's sinks
            assert self.task.sinks is not None
            return self.task.sinks.push(node.sink)
        topic = node.topic
        assert topic is not None
        task = self.task
        encode = dumps(topic.value_codec)
        keyed = task.collector.keyed(topic.name)
        if all(same_bytes(i.key_codec, topic.key_codec) for i in self.stage.topics):

            def sink(value: Any) -> None:  # the input's key bytes are the output's
                rec = task.record
                if keyed(rec.key, None if value is None else encode(value), rec.timestamp):
                    task.full = True

            return sink
        encode_key = topic.encode_key

        def rekeyed(value: Any) -> None:  # another key codec: the event's key encoded again
            rec, event = task.record, task.current
            key = encode_key(None if event is None else event.key)
            if keyed(key, None if value is None else encode(value), rec.timestamp):
                task.full = True

        return rekeyed
