"""What ships for deployment, checked here: the Grafana dashboard's queries name only metrics
a worker exports; the Kubernetes manifests pass the Kubernetes JSON schemas; the Dockerfile
has what the manifests rely on."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

from streamkit.runtime.metrics import WorkerMetrics
from tests.kafkahelp import ROOT

GRAFANA = ROOT / "deploy" / "grafana" / "streamkit.json"


def exported_samples() -> set[str]:
    """Every sample name a worker's /metrics can carry, from its registry's families."""
    from tests import opsapp

    worker: Any = SimpleNamespace(
        app=opsapp.app, settings=opsapp.app.settings, tasks=None, checkpointer=None, assignor=None
    )
    names: set[str] = set()
    for family in WorkerMetrics(worker).registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def test_every_grafana_query_names_an_exported_metric() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    exported = exported_samples()
    assert "streamkit_events_in_total" in exported
    assert "streamkit_checkpoint_duration_seconds_bucket" in exported
    exprs = queries(dashboard)
    assert len(exprs) >= 12
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bstreamkit_[a-z_]+", expr))
        assert names, f"no streamkit metric in {expr!r}"
        assert names <= exported, (expr, names - exported)
        assert expr.count("(") == expr.count(")"), expr
        used |= names
    # every family is on the dashboard at least once
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in exported}
    assert families <= {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
