"""`graph_of(app)`: the app's graph as JSON for the dashboard.

This is the only place the dashboard learns how the app is declared: `app.stages`, the declared
graph cut into stages at its exchanges (`streamkit/graph.py`), each with its inputs (several:
a merge; several streams of one topic: fan-out), operators, agents, sinks and state.
The server and the page only read the dict:

    {"app": str,
     "nodes": [{"id", "kind", "label", ...}],   kind: topic | stage | table | window | timers | sink
     "edges": [{"from", "to", "kind"}]}         kind: source | key_by | shuffle | rebalance |
                                                       sink | state | emit | late | changelog

Runtime numbers are matched to nodes by these fields: a stage node's `stage` (the name in a
worker's `/status` `stages`) and `input` (its input topic); a topic or sink node's `topic`;
a table or window node's `table`. Topic nodes carry `role`: source, internal, sink, dlq, late.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkit.graph import AgentNode, Stage
from streamkit.partitioning import declared_tasks
from streamkit.streams import ExchangeNode, SinkNode, SourceNode, StateNode

if TYPE_CHECKING:
    from streamkit.app import App
    from streamkit.topics import Topic


def _ops_text(stage: Stage) -> str:
    """The stage's operators in declaration order, as one line."""
    labels = []
    for node in stage.nodes:
        if isinstance(node, (SourceNode, StateNode)):
            continue
        if isinstance(node, AgentNode) and node.agent is not None:
            labels.append(f"{node.agent.name}()")
        else:
            labels.append(node.label)
    return " → ".join(labels)


def graph_of(app: App) -> dict[str, Any]:
    stages = app.stages
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []
    consumed = {t.name for st in stages for t in st.topics}
    sources = app.source_topics
    outputs = set(app.sink_topics)
    sinks = outputs - consumed  # an output another agent reads is an ordinary topic

    def topic(t: Topic | str, role: str | None = None) -> str:
        name = t if isinstance(t, str) else t.name
        node_id = f"topic:{name}"
        if node_id not in nodes:
            declared = app.topics.get(name)
            if role is None:
                internal = declared is not None and declared.internal
                role = "internal" if internal else "source" if name in sources else "topic"
                role = "sink" if name in sinks else role
            nodes[node_id] = {
                "id": node_id,
                "kind": "sink" if role == "sink" else "topic",
                "label": name,
                "topic": name,
                "role": role,
                "partitions": None if declared is None else declared.partitions,
            }
        return node_id

    def edge(a: str, b: str, kind: str) -> None:
        edges.append({"from": a, "to": b, "kind": kind})

    for st in stages:
        stage_id = f"stage:{st.name}"
        nodes[stage_id] = {
            "id": stage_id,
            "kind": "stage",
            "label": st.name,
            "stage": st.name,
            "agent": ", ".join(a.name for a in st.agents),
            "input": st.source.name,
            "inputs": [t.name for t in st.topics],
            "ops": _ops_text(st),
            "parallelism": st.partitions or declared_tasks(st),
        }
        for inp in st.inputs:
            edge(topic(inp.topic), stage_id, "source")
        window_tables = {wt.table.name for wt in st.windows} | {t.table.name for t in st.timers}
        for table in st.tables:
            if table.name in window_tables:
                continue
            table_id = f"table:{table.name}"
            nodes[table_id] = {
                "id": table_id,
                "kind": "table",
                "label": table.name,
                "table": table.name,
                "changelog": table.changelog.name,
                "read_only": bool(table.source),
                "queryable": not any(table is j.table for j in st.joins),  # a join's rows
            }
            edge(stage_id, table_id, "state")
            if table.source:
                edge(topic(table.changelog), table_id, "changelog")
        for wt in st.windows:
            window_id = f"window:{wt.name}"
            nodes[window_id] = {
                "id": window_id,
                "kind": "window",
                "label": wt.name,
                "name": wt.name,
                "table": wt.table.name,
                "window": str(wt.kind),
                "aggregation": wt.aggregation.name,
                "emit": wt.emit_mode,
            }
            edge(stage_id, window_id, "state")
            if wt.output is not None:
                edge(window_id, topic(wt.output), "emit")
            if wt.late_topic:
                edge(window_id, topic(wt.late_topic, "late"), "late")
        for timers in st.timers:
            timers_id = f"timers:{timers.name}"
            nodes[timers_id] = {
                "id": timers_id,
                "kind": "timers",
                "label": timers.name,
                "table": timers.table.name,
            }
            edge(stage_id, timers_id, "state")
        for node in st.nodes:
            if isinstance(node, ExchangeNode) and node.output is not None:
                edge(stage_id, topic(node.output), node.kind)
            elif isinstance(node, SinkNode) and node.topic is not None:
                edge(stage_id, topic(node.topic), "sink")
        for agent in st.agents:
            for sink in agent.sinks:
                edge(stage_id, topic(sink), "sink")
    for gt in app.global_tables.values():
        table_id = f"table:{gt.name}"
        nodes[table_id] = {
            "id": table_id,
            "kind": "table",
            "label": gt.name,
            "table": gt.name,
            "global": True,
            "read_only": True,
            "queryable": False,
        }
        edge(topic(gt.source), table_id, "changelog")
    topic(app.dlq, "dlq")
    return {"app": app.id, "nodes": list(nodes.values()), "edges": edges}
