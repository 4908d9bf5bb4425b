"""The app's declared graph as text, Mermaid or JSON: stages with their tasks and inputs, the
operator tree of each (fan-out, merges, branches), agents, sinks, internal topics, tables,
windows and timers. `streamkit topology MODULE:APP` prints it; the dashboard draws the JSON."""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

from streamkit.graph import AgentNode, Stage
from streamkit.joins import describe as describe_join
from streamkit.partitioning import declared_tasks
from streamkit.streams import (
    BranchNode,
    ExchangeNode,
    JoinNode,
    JoinSideNode,
    MergeNode,
    Node,
    SinkNode,
    SourceNode,
)
from streamkit.topics import Topic


class Drawn(Protocol):
    """What the topology shows of an app (`App`)."""

    id: str
    global_tables: dict[str, Any]
    dlq: Topic

    @property
    def stages(self) -> list[Stage]: ...


def _count(topic: Topic, default: int | None = None) -> str:
    """`default`: an internal topic's count before the broker is asked (its stage's tasks)."""
    n = topic.partitions or topic.declared_partitions or default
    return "? partitions" if n is None else f"{n} partition{'s' if n != 1 else ''}"


def _label(node: Node, tasks: int | None = None) -> str:
    if isinstance(node, ExchangeNode) and node.output is not None:
        return f"{node.label} => {node.output.name} ({_count(node.output, tasks)}, internal)"
    if isinstance(node, AgentNode) and node.agent is not None:
        sinks = ", ".join(
            [f"{t.name} ({_count(t)})" for t in node.agent.sinks]
            + [f"{s.label} ({s.guarantee})" for s in node.agent.row_sinks]
        )
        return f"agent {node.agent.name}()" + (f" -> {sinks}" if sinks else "")
    if isinstance(node, SinkNode) and node.topic is not None:
        return f"to {node.topic.name} ({_count(node.topic)})"
    if isinstance(node, JoinSideNode) and node.join is not None:
        return f"{node.label} side of join {node.join.name}"
    return node.label


def render(app: Drawn, fmt: str = "text") -> str:
    if fmt == "text":
        return render_text(app)
    if fmt == "mermaid":
        return render_mermaid(app)
    if fmt == "json":
        return orjson.dumps(describe(app), option=orjson.OPT_INDENT_2).decode() + "\n"
    raise ValueError(f"unknown topology format {fmt!r}: use text, mermaid or json")


def _task_count(stage: Stage) -> int | None:
    return stage.partitions or declared_tasks(stage)


def _upstream_tasks(stage: Stage | None) -> int | None:
    return None if stage is None else _task_count(stage)


def _tasks(stage: Stage) -> str:
    n = _task_count(stage)
    return "?" if n is None else str(n)


def render_text(app: Drawn) -> str:
    lines = [f"app {app.id}"]
    for stage in app.stages:
        inputs = ", ".join(
            f"{i.topic.name} ({_count(i.topic, _upstream_tasks(i.upstream))})" for i in stage.inputs
        )
        lines.append(f"stage {stage.name}  x{_tasks(stage)} tasks  <- {inputs}")
        for inp in stage.inputs:
            if len(inp.entries) > 1:
                lines.append(
                    f"  {inp.topic.name}: {len(inp.entries)} branches (fan-out: fetched once, "
                    "every branch sees every event)"
                )
        seen: set[Node] = set()
        for inp in stage.inputs:
            for entry in inp.entries:
                if entry in seen:
                    continue  # a merge of several inputs: drawn under the first
                prefix = "" if isinstance(entry, SourceNode) else f"{inp.topic.name} -> "
                _tree(stage, entry, 1, seen, lines, prefix)
        windowed = [w.table for w in stage.windows] + [t.table for t in stage.timers]
        windowed += [j.table for j in stage.joins]
        for table in stage.tables:
            if table.source:
                lines.append(f"  table {table.name} <- {table.changelog.name} (read-only)")
            elif table.versioned is not None:
                lines.append(f"  {_versioned(table)}")
            elif not any(table is w for w in windowed):
                lines.append(f"  state {table.name} <-> {table.changelog.name} (compacted)")
        for wt in stage.windows:
            out = f" -> {wt.output.name}" if wt.output is not None else ""
            lines.append(
                f"  window {wt.name}: {wt.kind}, {wt.aggregation.name}, emit {wt.emit_mode}"
                f"{out}" + (f"; late -> {wt.late_topic}" if wt.late_topic else "")
            )
        for timers in stage.timers:
            lines.append(f"  timers {timers.name} <-> {timers.table.changelog.name}")
        for join in stage.joins:
            lines.append(
                f"  join {join.name}: {describe_join(join.spec)}; both sides buffered <-> "
                f"{join.table.changelog.name}; late -> {join.late_topic}"
            )
    for gt in app.global_tables.values():
        lines.append(f"global table {gt.name} <- {gt.source.name} (all partitions, every worker)")
    lines.append(f"dead letters -> {app.dlq.name}")
    return "\n".join(lines) + "\n"


def _tree(
    stage: Stage, node: Node, depth: int, seen: set[Node], lines: list[str], prefix: str = ""
) -> None:
    pad = "  " * depth
    if node in seen:
        what = "join" if isinstance(node, JoinNode) else "merge"
        lines.append(f"{pad}{prefix}{_label(node, _task_count(stage))} ({what}: continued above)")
        return
    seen.add(node)
    kids = stage.children.get(node, [])
    notes = []
    if (isinstance(node, SourceNode) and len(node.topics) > 1) or isinstance(node, MergeNode):
        notes.append("merge")
    if len(kids) > 1 and not isinstance(node, (ExchangeNode, BranchNode)):
        notes.append(f"fan-out to {len(kids)}")
    note = f"  [{', '.join(notes)}]" if notes else ""
    lines.append(f"{pad}{prefix}{_label(node, _task_count(stage))}{note}")
    if isinstance(node, ExchangeNode):
        return  # its children run in the next stage
    for kid in kids:
        _tree(stage, kid, depth + 1, seen, lines)


def describe(app: Drawn) -> dict[str, Any]:
    """Nodes and edges of the whole graph: topics, stages, operators, agents, state."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    ids: dict[int, str] = {}
    topics: set[str] = set()

    def topic(t: Topic, internal: bool = False) -> str:
        key = f"topic:{t.name}"
        if t.name not in topics:
            topics.add(t.name)
            nodes.append(
                {
                    "id": key,
                    "kind": "topic",
                    "label": t.name,
                    "partitions": t.partitions,
                    "internal": internal or t.internal,
                }
            )
        return key

    def node_id(stage: Stage, node: Node) -> str:
        key = ids.get(id(node))
        if key is None:
            key = ids[id(node)] = f"op:{stage.name}:{len(ids)}"
            kind = "agent" if isinstance(node, AgentNode) else "operator"
            nodes.append(
                {
                    "id": key,
                    "kind": kind,
                    "label": _label(node).split(" => ")[0],
                    "stage": stage.name,
                }
            )
        return key

    for stage in app.stages:
        nodes.append(
            {
                "id": f"stage:{stage.name}",
                "kind": "stage",
                "label": stage.name,
                "tasks": stage.partitions,
            }
        )
        for inp in stage.inputs:
            tid = topic(inp.topic, inp.upstream is not None)
            for entry in inp.entries:
                edges.append({"from": tid, "to": node_id(stage, entry), "kind": "input"})
        for node in stage.nodes:
            src = node_id(stage, node)
            for kid in stage.children.get(node, []):
                if not isinstance(node, ExchangeNode):
                    edges.append({"from": src, "to": node_id(stage, kid), "kind": "forward"})
            if isinstance(node, ExchangeNode) and node.output is not None:
                edges.append({"from": src, "to": topic(node.output, True), "kind": node.kind})
            if isinstance(node, SinkNode) and node.topic is not None:
                edges.append({"from": src, "to": topic(node.topic), "kind": "sink"})
            if isinstance(node, AgentNode) and node.agent is not None:
                for sink in node.agent.sinks:
                    edges.append({"from": src, "to": topic(sink), "kind": "sink"})
        for table in stage.tables:
            tid = f"table:{table.name}"
            kind = "table"
            if any(table is w.table for w in stage.windows):
                kind = "window"
            elif any(table is t.table for t in stage.timers):
                kind = "timers"
            elif table.versioned is not None:
                kind = "versioned_table"
            elif any(table is j.table for j in stage.joins):
                kind = "join"
            nodes.append({"id": tid, "kind": kind, "label": table.name, "stage": stage.name})
            edges.append({"from": f"stage:{stage.name}", "to": tid, "kind": "state"})
            fed = table.versioned.source if table.versioned is not None else None
            if fed is not None:
                edges.append({"from": topic(fed), "to": tid, "kind": "state"})
        for wt in stage.windows:
            if wt.output is not None:
                edges.append({"from": f"table:{wt.name}", "to": topic(wt.output), "kind": "sink"})
    for gt in app.global_tables.values():
        nodes.append({"id": f"table:{gt.name}", "kind": "global_table", "label": gt.name})
        edges.append({"from": topic(gt.source), "to": f"table:{gt.name}", "kind": "state"})
    return {"app": app.id, "nodes": nodes, "edges": edges}


def _versioned(table: Any) -> str:
    """The text line of a versioned table: its history, its feed, its changelog."""
    vt = table.versioned
    fed = f" <- {vt.source.name} (versions at record times)" if vt.source is not None else ""
    return (
        f"versioned table {table.name}{fed}, history {vt.versioned.retention:g}s "
        f"<-> {table.changelog.name} (compacted)"
    )


def _node(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def render_mermaid(app: Drawn) -> str:
    graph = describe(app)
    lines = ["flowchart LR"]
    for node in graph["nodes"]:
        nid = _node(node["id"])
        label = str(node["label"]).replace('"', "'")
        if node["kind"] == "topic":
            lines.append(f'  {nid}[("{label}<br/>{node["partitions"] or "?"} partitions")]')
        elif node["kind"] == "stage":
            continue
        elif node["kind"] in ("table", "window", "timers", "join", "global_table"):
            lines.append(f'  {nid}[("{node["kind"]} {label}")]')
        else:
            lines.append(f'  {nid}["{label}"]')
    for edge in graph["edges"]:
        if edge["from"].startswith("stage:"):
            continue
        kind = edge["kind"]
        arrow = f" -- {kind} --> " if kind in ("key_by", "shuffle", "rebalance") else " --> "
        lines.append(f"  {_node(edge['from'])}{arrow}{_node(edge['to'])}")
    return "\n".join(lines) + "\n"
