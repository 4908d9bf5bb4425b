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


K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")


def manifests() -> list[dict[str, Any]]:
    import yaml

    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_pass_the_schemas() -> None:
    import kubernetes_validate

    docs = manifests()
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "Secret", "PodDisruptionBudget"} <= kinds
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
    # and a broken one is caught: the check really checks
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    broken = json.loads(json.dumps(sts))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = []
    try:
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError:
        pass
    else:
        raise AssertionError("a probe with a list as port passed the schema")


def test_the_statefulset_matches_the_worker() -> None:
    docs = manifests()
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    assert (
        svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    )
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    # every STREAMKIT_ variable is a setting the worker accepts
    from streamkit.settings import Settings

    for name in env:
        if name.startswith("STREAMKIT_"):
            assert name.removeprefix("STREAMKIT_").lower() in Settings.model_fields, name
    assert "$(POD_NAME).shop-headless" in env["STREAMKIT_WEB_ADVERTISED_HOST"]["value"]
    # the probes are the endpoints that answer without the token
    from streamkit.runtime.webauth import OPEN_PATHS

    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in OPEN_PATHS
    mount = container["volumeMounts"][0]["mountPath"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"STREAMKIT_WORKDIR={mount}" in dockerfile
    assert "STREAMKIT_WEB_PORT=8080" in dockerfile and "USER 10001" in dockerfile
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["ports"][0]["containerPort"] == 8080
    assert container["args"][:1] == ["worker"]
