"""The app's graph as text or Mermaid: sources, stages with their parallelism and operators,
internal topics with partition counts, sinks."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from streamkit.stages import Stage
from streamkit.streams import Exchange, Op
from streamkit.topics import Topic

if TYPE_CHECKING:
    from streamkit.app import App


def partitions_of(topic: Topic, stages: list[Stage]) -> int | None:
    """Known partition count: the broker's, the declared one, or the input's (internal)."""
    if topic.partitions is not None:
        return topic.partitions
    for stage in stages:
        if stage.output is topic:
            return partitions_of(stage.source, stages)
    return None


def _count(topic: Topic, stages: list[Stage]) -> str:
    n = partitions_of(topic, stages)
    return "?" if n is None else str(n)


def _op_label(op: Op) -> str:
    if isinstance(op, Exchange) and op.kind == "key_by":
        name = getattr(op.key, "__streamkit_label__", None) or getattr(op.key, "__name__", "")
        return f"key_by({'' if name == '<lambda>' else name})"
    return op.label


def _ops_text(stage: Stage) -> str:
    labels = [_op_label(op) for op in stage.ops]
    if stage.runs_body:
        labels.append(f"{stage.agent.name}()")
    return " → ".join(labels)


def render(app: App, fmt: str = "text") -> str:
    if fmt == "text":
        return render_text(app)
    if fmt == "mermaid":
        return render_mermaid(app)
    raise ValueError(f"unknown topology format {fmt!r}: use text or mermaid")


def render_text(app: App) -> str:
    stages = app.stages
    lines = [f"app {app.id}"]
    for agent in app.agents.values():
        lines.append(f"agent {agent.name}")
        for st in agent.stages:
            n = _count(st.source, stages)
            lines.append(f"  stage {st.name}  x{n} tasks  <- {st.source.name} ({n} partitions)")
            lines.append(f"    {_ops_text(st)}")
            for table in st.tables:
                if table.source:
                    lines.append(f"    table {table.name} <- {table.changelog.name} (read-only)")
                else:
                    lines.append(f"    state {table.name} <-> {table.changelog.name} (compacted)")
            for wt in st.windows:
                out = f" -> {wt.output.name}" if wt.output is not None else ""
                lines.append(
                    f"    window {wt.name}: {wt.kind}, {wt.aggregation.name}, "
                    f"emit {wt.emit_mode}{out}; late -> {wt.late_topic}"
                )
            for timers in st.timers:
                lines.append(f"    timers {timers.name}")
            if st.output is not None:
                lines.append(
                    f"    => {st.output.name} ({_count(st.output, stages)} partitions, internal)"
                )
            else:
                for sink in st.agent.sinks:
                    lines.append(f"    -> sink {sink.name} ({_count(sink, stages)} partitions)")
    for gt in app.global_tables.values():
        lines.append(f"global table {gt.name} <- {gt.source.name} (all partitions, every worker)")
    lines.append(f"dead letters -> {app.dlq.name}")
    return "\n".join(lines) + "\n"


def _node(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def render_mermaid(app: App) -> str:
    stages = app.stages
    lines = ["flowchart LR"]
    topics: set[str] = set()

    def topic_node(topic: Topic) -> str:
        node = "t_" + _node(topic.name)
        if topic.name not in topics:
            topics.add(topic.name)
            lines.append(f'  {node}[("{topic.name}<br/>{_count(topic, stages)} partitions")]')
        return node

    for st in stages:
        node = "s_" + _node(st.name)
        n = _count(st.source, stages)
        lines.append(f'  {node}["{st.name} x{n}<br/>{_ops_text(st)}"]')
        lines.append(f"  {topic_node(st.source)} --> {node}")
        for table in st.tables:
            lines.append(f'  {node} <--> tbl_{_node(table.name)}[("table {table.name}")]')
        if st.output is not None:
            exchange = st.exchange
            kind = exchange.kind if exchange is not None else ""
            lines.append(f"  {node} -- {kind} --> {topic_node(st.output)}")
        else:
            for sink in st.agent.sinks:
                lines.append(f"  {node} --> {topic_node(sink)}")
    return "\n".join(lines) + "\n"
