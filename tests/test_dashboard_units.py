"""The dashboard and the operations kit without a broker: graph_of, the hot-partition rule,
the quiet coordinator lookup, the bearer token, proxying only to members, the packaged page."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka.structs import TopicPartition
from pydantic import SecretStr

from streamkit.dashboard.collect import mark_hot
from streamkit.dashboard.graph import graph_of
from streamkit.dashboard.server import STATIC
from streamkit.logfilters import CommitInRebalanceFilter, CoordinatorLookupFilter
from streamkit.runtime import webauth
from streamkit.runtime.web import WebServer
from streamkit.settings import Settings
from tests.kafkahelp import ROOT

KINDS = {"topic", "stage", "table", "window", "timers", "sink"}


def check_shape(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"])
    for n in graph["nodes"]:
        assert n["kind"] in KINDS and n["label"]
    for e in graph["edges"]:
        assert e["from"] in nodes and e["to"] in nodes, e
    return nodes


def test_graph_of_the_ecommerce_app() -> None:
    from apps.ecommerce.pipeline import app

    graph = graph_of(app)
    nodes = check_shape(graph)
    prefix = app.id
    edges = {(e["from"], e["to"], e["kind"]) for e in graph["edges"]}
    stages = {n["stage"]: n for n in nodes.values() if n["kind"] == "stage"}
    assert set(stages) == {s.name for s in app.stages}
    assert stages[f"{prefix}-purchases"]["input"] == f"{prefix}-purchases"
    assert stages["by-user-purchases"]["parallelism"] == 4  # key_by's default: its input's
    assert (
        f"stage:{prefix}-purchases",
        f"topic:{prefix}-by-user-purchases-repartition",
        "key_by",
    ) in edges
    assert (
        "stage:by-user",
        f"topic:{prefix}-by-user-rebalance-repartition",
        "rebalance",
    ) in edges
    assert ("stage:by-user-rebalance", f"topic:{prefix}-log-repartition", "shuffle") in edges
    assert ("stage:by-user-purchases", "table:spent", "state") in edges
    assert (f"topic:{prefix}-catalog", "table:products", "changelog") in edges
    assert nodes["table:products"]["read_only"] and nodes["table:products-all"]["global"]
    assert nodes["window:trending"]["aggregation"] == "top_k"
    assert ("window:trending", f"topic:{prefix}-trending", "emit") in edges
    assert nodes[f"topic:{prefix}-trending"]["kind"] == "sink"
    assert nodes[f"topic:{prefix}-trending-late"]["role"] == "late"
    # fan-out: the by-user stage feeds the sessions window and the enrichment; the enriched
    # events leave the graph (a sink), the shuffled stage also feeds key_by product
    assert ("stage:by-user", "window:user-sessions", "state") in edges
    assert nodes[f"topic:{prefix}-enriched"]["kind"] == "sink"
    assert ("stage:log", f"topic:{prefix}-by-product-repartition", "key_by") in edges
    assert nodes[f"topic:{prefix}-totals"]["kind"] == "sink"
    assert nodes[f"topic:{prefix}-dlq"]["role"] == "dlq"


def test_graph_of_timers_and_a_named_late_topic() -> None:
    from tests import timerapp, windowapp

    nodes = check_shape(graph_of(timerapp.app))
    assert {"timers:reminders", "timers:nudges"} <= set(nodes)
    graph = graph_of(windowapp.app)
    nodes = check_shape(graph)
    late = [e for e in graph["edges"] if e["kind"] == "late"]
    assert [e["to"] for e in late] == [f"topic:{windowapp.late.name}"]
    assert nodes[f"topic:{windowapp.late.name}"]["role"] == "late"


def parts(*rates: float) -> list[dict[str, Any]]:
    return [{"topic": "t", "partition": p, "rate": r} for p, r in enumerate(rates)]


def test_a_partition_is_hot_at_twice_its_even_share() -> None:
    rows = parts(1.0, 1.0, 10.0, 1.0)
    mark_hot(rows)
    assert [r["hot"] for r in rows] == [False, False, True, False]
    rows = parts(3.0, 3.0, 3.0, 3.0)
    mark_hot(rows)
    assert not any(r["hot"] for r in rows)
    rows = parts(0.0, 0.0, 0.5, 0.0)  # hardly moving: nothing to point at
    mark_hot(rows)
    assert not any(r["hot"] for r in rows)
    rows = parts(100.0)  # one partition: no skew
    mark_hot(rows)
    assert not rows[0]["hot"]


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord(
        "aiokafka.consumer.group_coordinator", logging.ERROR, __file__, 1, message, (), None
    )


def test_the_coordinator_lookup_on_a_fresh_broker_is_not_an_error() -> None:
    quiet = CoordinatorLookupFilter()
    line = "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
    assert not quiet.filter(record(line))
    assert quiet.filter(record("Group Coordinator Request failed: [Error 30] Authorization"))
    assert quiet.filter(record("something else entirely"))
    late = CoordinatorLookupFilter(grace=0.0)  # still failing after the grace: a warning
    shown = record(line)
    assert late.filter(shown) and shown.levelname == "WARNING"


def test_a_commit_refused_during_a_rebalance_is_a_warning_not_an_error() -> None:
    shown = CommitInRebalanceFilter()
    line = record(
        "OffsetCommit failed for group g due to group error "
        "([Error 22] IllegalGenerationError: g), will rejoin"
    )
    line.levelno, line.levelname = logging.ERROR, "ERROR"
    assert shown.filter(line) and line.levelname == "WARNING"
    other = record("OffsetCommit failed for group g due to group error (UnknownMemberIdError)")
    other.levelno, other.levelname = logging.ERROR, "ERROR"
    assert shown.filter(other) and other.levelname == "ERROR"  # lost membership: an error


async def serve(settings: Settings) -> tuple[web.AppRunner, str]:
    app = web.Application(middlewares=webauth.middlewares(settings))

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/status", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/status"


async def test_the_bearer_token() -> None:
    settings = Settings(broker="localhost:9092", web_token=SecretStr("t0ken"))
    assert "t0ken" not in repr(settings)
    runner, url = await serve(settings)
    try:
        async with aiohttp.ClientSession() as session:
            for headers, query, status in [
                ({}, "", 401),
                ({"Authorization": "Bearer nope"}, "", 401),
                ({"Authorization": "Basic t0ken"}, "", 401),
                ({"Authorization": "Bearer t0ken"}, "", 200),
                ({"Authorization": "bearer t0ken"}, "", 200),
                ({}, "?token=t0ken", 200),
                ({}, "?token=t0ke", 401),
            ]:
                async with session.get(url + query, headers=headers) as resp:
                    assert resp.status == status, (headers, query)
    finally:
        await runner.cleanup()
    open_settings = Settings(broker="localhost:9092")
    assert webauth.middlewares(open_settings) == []
    assert webauth.auth_headers(open_settings) == {}
    assert webauth.auth_headers(settings) == {"Authorization": "Bearer t0ken"}


def test_queries_are_proxied_only_to_members_of_the_current_assignment() -> None:
    from tests import opsapp

    tp = TopicPartition("in", 0)
    assignor = SimpleNamespace(
        endpoints={tp: "10.0.0.9:80", TopicPartition("in", 1): "10.0.0.2:80"},
        members={"m1": "10.0.0.1:80", "m2": "10.0.0.2:80"},
    )
    worker = SimpleNamespace(app=opsapp.app, settings=opsapp.app.settings, assignor=assignor)
    server = WebServer(worker)
    server.endpoint = "10.0.0.1:80"
    assert server.peers() == {"10.0.0.1:80", "10.0.0.2:80"}
    assert server._owner(tp) is None  # a stale or forged endpoint: not a member
    assert server._owner(TopicPartition("in", 1)) == "10.0.0.2:80"
    assignor.endpoints[tp] = "10.0.0.1:80"
    assert server._owner(tp) is None  # ourselves: served here


def test_the_page_needs_nothing_but_this_server() -> None:
    files = sorted(STATIC.iterdir())
    assert {f.name for f in files} == {"index.html", "dashboard.js", "dashboard.css"}
    for f in files:
        urls = set(re.findall(r"https?://[^\s\"'`)]+", f.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (f.name, urls)


@pytest.mark.slow
def test_the_wheel_ships_the_page(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("streamkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("index.html", "dashboard.js", "dashboard.css"):
        assert f"streamkit/dashboard/static/{asset}" in names
