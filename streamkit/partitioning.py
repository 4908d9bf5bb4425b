"""Partition counts of a built graph: what each stage's task count is, and co-partitioning.

The graph (`graph.build`) is cut from the declarations alone; the partition counts of source
topics are known only once the broker is asked (`runtime/admin.py`) or the testing driver
sets them. Then `resolve_partitions` gives each internal topic (repartition, changelog) its
stage's count and refuses inputs that are not co-partitioned where that matters: a merge of
keyed streams, a join, a stage that owns state, a table read from a topic.
"""

from __future__ import annotations

from streamkit.graph import Stage
from streamkit.settings import ConfigError


def declared_tasks(stage: Stage) -> int | None:
    """The stage's task count from the declarations alone (before the broker is asked): an
    internal topic without a count has its upstream stage's."""
    counts = []
    for inp in stage.inputs:
        n = inp.topic.partitions or inp.topic.declared_partitions
        if n is None and inp.upstream is not None:
            n = declared_tasks(inp.upstream)
        if n is None:
            return None
        counts.append(n)
    return max(counts) if counts else None


def resolve_partitions(stages: list[Stage]) -> None:
    """Once the source topics' counts are known: an internal topic without a declared count
    gets its stage's task count; changelogs get their stage's. Co-partitioning is checked."""
    for stage in stages:
        count = stage.partitions
        for exchange in stage.exchanges:
            out = exchange.output
            if out is not None and out.declared_partitions is None and count is not None:
                out.declared_partitions = out.partitions = count
        check_partitions(stage)
        for table in stage.tables:
            if not table.source and count is not None:
                table.changelog.declared_partitions = table.changelog.partitions = count


def check_partitions(stage: Stage) -> None:
    counts = {i.topic.name: i.topic.partitions for i in stage.inputs}
    keyed = {
        i.topic.name: i.topic.partitions
        for i in stage.inputs
        if i.upstream is not None
        and any(x.output is i.topic and x.kind == "key_by" for x in i.upstream.exchanges)
    }
    if len(keyed) > 1 and len(set(keyed.values())) > 1:
        listed = ", ".join(f"{n} ({c})" for n, c in keyed.items())
        raise ConfigError(
            f"stage {stage.name} merges keyed streams that are not co-partitioned: {listed}; "
            "partition p of each must hold the same keys: give every key_by before the merge "
            "the same partitions=..."
        )
    if stage.joins and len(set(counts.values())) > 1:
        listed = ", ".join(f"{n} ({c})" for n, c in counts.items())
        names = ", ".join(j.name for j in stage.joins)
        raise ConfigError(
            f"join {names} reads inputs that are not co-partitioned: {listed}; partition p of "
            "each side must hold the same keys: key_by both sides with the same partitions=... "
            "(or give the join on=... and partitions=...)"
        )
    if stage.tables and len(set(counts.values())) > 1:
        listed = ", ".join(f"{n} ({c})" for n, c in counts.items())
        raise ConfigError(
            f"stage {stage.name} merges inputs that are not co-partitioned: {listed}; it owns "
            f"state ({', '.join(t.name for t in stage.tables)}), so every input needs the same "
            "partition count: give the key_by before the merge partitions=..."
        )
    for table in stage.tables:
        fed = table.versioned.source if table.versioned is not None else None
        source = table.changelog if table.source else fed
        if source is not None and source.partitions != stage.partitions:
            raise ConfigError(
                f"table {table.name} reads {source.name} "
                f"({source.partitions} partitions) in stage {stage.name}, whose input "
                f"has {stage.partitions}: give the key_by before it "
                f"partitions={source.partitions} (co-partitioned), or use "
                "app.global_table"
            )
