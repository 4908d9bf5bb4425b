"""Operator tools against the real broker with real worker processes: the HTTP endpoint
(/tables routing, /metrics, /status), `streamkit status`, `tables get|scan` and `reset`."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.partitioner import murmur2
from prometheus_client.parser import text_string_to_metric_families

import streamkit as sk
from streamkit.runtime.web import broker_hosts
from streamkit.runtime.worker import Worker
from streamkit.settings import ConfigError
from tests.kafkahelp import (
    ROOT,
    WorkerProcess,
    bootstrap,
    committed,
    end_offsets,
    produce,
    read_all,
    running,
    wait_until,
)

PARTITIONS = 4
USERS = 40
N = 400


def worker(uid: str, tmp_path: Path, name: str) -> WorkerProcess:
    return WorkerProcess(
        "tests.opsapp:app",
        {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / name)},
        tmp_path / f"{name}.log",
    )


def endpoint_of(w: WorkerProcess) -> str | None:
    found = re.search(r"http endpoint http://(\S+)", w.log())
    return found.group(1) if found else None


async def http_endpoint(w: WorkerProcess) -> str | None:
    await wait_until(lambda: bool(endpoint_of(w)) or not w.alive, within=60, what="http")
    return endpoint_of(w)


def cli(uid: str, *args: str, workdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKTEST_ID": uid}
    if workdir is not None:
        env["STREAMKIT_WORKDIR"] = str(workdir)
    return subprocess.run(
        [sys.executable, "-m", "streamkit.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def owner_partition(key: str) -> int:
    """Kafka's default partitioner, computed here independently of streamkit."""
    return int((murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS)


async def get(endpoint: str, path: str, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"http://{endpoint}{path}", params=params) as resp,
    ):
        body = await resp.read()
        if resp.content_type == "application/json":
            return resp.status, orjson.loads(body)
        return resp.status, body.decode()


async def produce_purchases(uid: str) -> dict[str, int]:
    values = [{"user": f"u{i % USERS}", "amount": i} for i in range(N)]
    await produce(f"ops-in-{uid}", [orjson.dumps(v) for v in values])
    expected: dict[str, int] = defaultdict(int)
    for v in values:
        expected[str(v["user"])] += int(v["amount"])  # type: ignore[call-overload]
    return dict(expected)


async def scan_all(endpoint: str) -> dict[str, int]:
    code, body = await get(endpoint, "/tables/totals", limit="1000")
    if code != 200:
        return {}
    return {row["key"]: row["value"] for row in body["items"]}


def metric_sums(text: str) -> dict[tuple[str, str], float]:
    """(sample name, topic or '') → sum of the sample's values."""
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[(sample.name, sample.labels.get("topic", ""))] += sample.value
    return sums


async def both_serving(a: str, b: str) -> bool:
    sa, sb = (await get(a, "/status"))[1], (await get(b, "/status"))[1]
    owned = [
        {x["partition"] for x in s["assigned"] if x["topic"].endswith("-repartition")}
        for s in (sa, sb)
    ]
    return (
        len(sa["group"]) == 2
        and len(sb["group"]) == 2
        and all(owned)
        and not owned[0] & owned[1]
        and owned[0] | owned[1] == set(range(PARTITIONS))
    )


async def two_serving(a: WorkerProcess, b: WorkerProcess) -> tuple[str, str]:
    """The HTTP endpoints of two workers, once each serves half of the partitions."""
    await wait_until(
        lambda: bool(endpoint_of(a) and endpoint_of(b)) or not (a.alive and b.alive),
        within=60,
        what="both HTTP endpoints",
    )
    assert a.alive and b.alive, a.log() + b.log()
    ea, eb = endpoint_of(a), endpoint_of(b)
    assert ea and eb
    await wait_until(lambda: both_serving(ea, eb), within=60, what="the partitions to split")
    return ea, eb


async def test_two_workers_route_table_queries_and_report_metrics_and_status(
    uid: str, tmp_path: Path
) -> None:
    a, b = worker(uid, tmp_path, "a").start(), worker(uid, tmp_path, "b").start()
    try:
        ea, eb = await two_serving(a, b)
        expected = await produce_purchases(uid)

        async def all_totals() -> bool:
            return await scan_all(ea) == expected

        await wait_until(all_totals, within=60, what="every total, scanned through worker A")

        status_a, status_b = (await get(ea, "/status"))[1], (await get(eb, "/status"))[1]
        repartition = f"ops-{uid}-by-user-repartition"
        owned_by_b = {x["partition"] for x in status_b["assigned"] if x["topic"] == repartition}
        owned_by_a = {x["partition"] for x in status_a["assigned"] if x["topic"] == repartition}

        # a key of B's partition asked of A: routed to B, B's value
        key_b = next(k for k in sorted(expected) if owner_partition(k) in owned_by_b)
        code, answer = await get(ea, f"/tables/totals/{key_b}")
        assert code == 200, answer
        assert answer["value"] == expected[key_b]
        assert answer["partition"] == owner_partition(key_b)
        assert answer["served_by"] == status_b["worker"] and answer["endpoint"] == eb
        # and the other way round
        key_a = next(k for k in sorted(expected) if owner_partition(k) in owned_by_a)
        code, answer = await get(eb, f"/tables/totals/{key_a}")
        assert (code, answer["value"], answer["served_by"]) == (
            200,
            expected[key_a],
            status_a["worker"],
        )
        code, answer = await get(ea, "/tables/totals/nobody")
        assert code == 404 and answer["found"] is False
        assert answer["partition"] == owner_partition("nobody")
        code, answer = await get(ea, "/tables/totals/a%2Fb c")  # any text is a key
        assert code == 404 and answer["key"] == "a/b c"
        assert answer["partition"] == owner_partition("a/b c")

        # scan: every key across both workers, and prefix + limit
        code, scan = await get(eb, "/tables/totals", limit="1000")
        assert code == 200 and scan["partitions"] == list(range(PARTITIONS))
        assert {r["key"]: r["value"] for r in scan["items"]} == expected
        assert {r["partition"] for r in scan["items"]} == set(range(PARTITIONS))
        code, scan = await get(ea, "/tables/totals", prefix="u1", limit="5")
        keys = [r["key"] for r in scan["items"]]
        assert keys == sorted(k for k in expected if k.startswith("u1"))[:5]

        # /status: the assignment, the group, the guarantee; the broker as hosts only
        assert status_a["member_id"] in status_b["group"]
        assert status_b["member_id"] in status_a["group"]
        assert status_a["member_id"] != status_b["member_id"]
        assert status_a["group"][status_b["member_id"]] == eb
        assert status_a["guarantee"] == "at_least_once"
        assert status_a["broker"] == bootstrap().split(",")
        assert {x["topic"] for x in status_a["assigned"]} == {f"ops-in-{uid}", repartition}

        # a checkpoint is reported (a cooperative rebalance's rounds may still be delaying
        # worker A's first one when every total is there: the commit waits for SyncGroup)
        async def a_checkpointed() -> bool:
            return bool((await get(ea, "/status"))[1]["last_checkpoint"]["count"] > 0)

        await wait_until(a_checkpointed, within=30, what="worker A's first checkpoint")

        # /metrics: the counters match what was sent
        async def metrics_settled() -> bool:
            texts = [(await get(e, "/metrics"))[1] for e in (ea, eb)]
            sums = [metric_sums(t) for t in texts]
            total: dict[tuple[str, str], float] = defaultdict(float)
            for s in sums:
                for k, v in s.items():
                    total[k] += v
            metrics_settled.total = total  # type: ignore[attr-defined]
            return bool(total[("streamkit_events_out_total", f"ops-out-{uid}")] == N)

        await wait_until(metrics_settled, within=30, what="every output acknowledged")
        total = metrics_settled.total  # type: ignore[attr-defined]
        assert total[("streamkit_events_in_total", f"ops-in-{uid}")] == N
        assert total[("streamkit_events_in_total", repartition)] == N
        assert total[("streamkit_events_out_total", repartition)] == N
        # each event reads its key twice (`+=`, then the yield)
        assert total[("streamkit_table_reads_total", "")] == 2 * N
        assert total[("streamkit_dead_letters_total", f"ops-in-{uid}")] == 0
        assert total[("streamkit_commit_failures_total", "")] == 0
        assert total[("streamkit_checkpoint_duration_seconds_count", "")] > 0
        assert total[("streamkit_rebalances_total", "")] >= 2
        assert total[("streamkit_assigned_partitions", "")] == 2 * PARTITIONS

        # streamkit status: both members, lag down to 0, the workers' stage counts
        def status_done() -> bool:
            out = cli(uid, "status", "tests.opsapp:app")
            status_done.out = out  # type: ignore[attr-defined]
            return out.returncode == 0 and "total lag 0" in out.stdout

        await wait_until(status_done, within=30, what="streamkit status to show lag 0")
        out = status_done.out.stdout  # type: ignore[attr-defined]
        assert status_a["member_id"] in out and status_b["member_id"] in out
        assert re.search(rf"ops-in-{uid}\s+\S+\s+{N}\b", out), out  # the stages, by name
        assert re.search(rf"by-user\s+\S+\s+{N}\b", out), out

        # streamkit tables get / scan, through any worker
        got = cli(uid, "tables", "get", "tests.opsapp:app", "totals", key_b)
        assert got.returncode == 0, got.stderr
        assert f"= {expected[key_b]} " in got.stdout and status_b["worker"] in got.stdout
        scanned = cli(uid, "tables", "scan", "tests.opsapp:app", "totals", "--limit", "1000")
        assert scanned.returncode == 0, scanned.stderr
        rows = [orjson.loads(line) for line in scanned.stdout.splitlines()]
        assert {r["key"]: r["value"] for r in rows} == expected

        # reset refuses while workers run, and changes nothing
        refused = cli(uid, "reset", "tests.opsapp:app", "--yes", workdir=tmp_path / "a")
        assert refused.returncode == 1 and "stop every worker" in refused.stderr
        assert (tmp_path / "a" / f"ops-{uid}").exists()
        assert await scan_all(ea) == expected
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log() + b.log()


async def test_reset_puts_the_group_at_earliest_and_a_rerun_recomputes_the_same_totals(
    uid: str, tmp_path: Path
) -> None:
    source, app_id = f"ops-in-{uid}", f"ops-{uid}"
    internal = [f"ops-{uid}-by-user-repartition", f"ops-{uid}-totals-changelog"]
    first = worker(uid, tmp_path, "w").start()
    try:
        endpoint = await http_endpoint(first)
        assert endpoint, first.log()
        expected = await produce_purchases(uid)

        async def totals_are(want: dict[str, int], where: str) -> bool:
            return await scan_all(where) == want

        await wait_until(lambda: totals_are(expected, endpoint), within=60, what="the totals")
    finally:
        first.stop()
    assert first.wait(5) == 0
    assert await committed(app_id, source) == await end_offsets(source)

    unconfirmed = cli(uid, "reset", "tests.opsapp:app", workdir=tmp_path / "w")  # no stdin
    assert unconfirmed.returncode != 0 and "delete topics" in unconfirmed.stdout
    assert (tmp_path / "w" / app_id).exists(), "reset ran without confirmation"
    assert await committed(app_id, source) == await end_offsets(source)
    reset = cli(uid, "reset", "tests.opsapp:app", "--yes", workdir=tmp_path / "w")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert await committed(app_id, source) == {p: 0 for p in range(PARTITIONS)}
    for topic in internal:  # the broker dropped the offsets of the deleted topics
        assert await committed(app_id, topic) == {}
    assert not (tmp_path / "w" / app_id).exists()
    from streamkit.runtime.admin import describe, open_admin

    app = sk.App("ops-reset-check")
    admin = await open_admin(app.settings, "ops-test")
    try:
        assert await describe(admin, internal) == {name: None for name in internal}
    finally:
        await admin.close()

    again = worker(uid, tmp_path, "w2").start()
    try:
        endpoint = await http_endpoint(again)
        assert endpoint, again.log()
        await wait_until(lambda: totals_are(expected, endpoint), within=60, what="recomputed")

        async def drained() -> bool:
            return await committed(app_id, source) == await end_offsets(source)

        await wait_until(drained, within=30, what="the rerun to commit everything")
        assert await scan_all(endpoint) == expected, "the rerun did not start from scratch"
    finally:
        again.stop()
    # the sink is the user's: the rerun wrote every result a second time
    assert len(await read_all(f"ops-out-{uid}")) == 2 * N


async def test_web_can_be_turned_off_and_the_broker_list_hides_credentials(uid: str) -> None:
    app = sk.App(f"ops-off-{uid}", web_enabled=False, commit_interval=0.2)
    src = app.topic(f"ops-off-in-{uid}", partitions=1)

    @app.agent(src)
    async def noop(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    async with running(app) as w:
        assert w.web is None
        assert w.assignor.members == {w.assignor.member_id: None}
        assert w.assignor.endpoints == {}
    await asyncio.sleep(0)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy = sk.App(f"ops-busy-{uid}", web_port=taken.getsockname()[1])
        busy.agent(busy.topic(f"ops-busy-in-{uid}", partitions=1))(noop)
        with pytest.raises(ConfigError, match="STREAMKIT_WEB_PORT"):
            await Worker(busy).run(install_signal_handlers=False)
    finally:
        taken.close()
    assert broker_hosts("kafka://user:secret@b1:9092,b2:9093") == ["b1:9092", "b2:9093"]


class _Cluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._partitions[topic]))


def test_assignor_hands_every_serving_member_the_partition_endpoint_map() -> None:
    from aiokafka.structs import TopicPartition

    from streamkit.runtime.assignor import StreamkitAssignor

    def assignor(endpoint: str | None) -> StreamkitAssignor:
        return StreamkitAssignor(set, 0, set, set, endpoint)

    a, b, off = assignor("h1:1"), assignor("h2:2"), assignor(None)
    metas = {"m-a": a.metadata(["t"]), "m-b": b.metadata(["t"]), "m-off": off.metadata(["t"])}
    result = StreamkitAssignor(set, 0, set, set).assign(_Cluster({"t": 6}), metas)
    for member_id, me in (("m-a", a), ("m-b", b), ("m-off", off)):
        me.on_assignment(result[member_id])
        assert me.member_id == member_id
        assert me.members == {"m-a": "h1:1", "m-b": "h2:2", "m-off": None}
    owned = {m: {p for _, ps in result[m].assignment for p in ps} for m in metas}
    assert a.endpoints == b.endpoints
    assert off.endpoints == {}  # it serves no HTTP, so it routes no query: no table sent
    want = {TopicPartition("t", p): "h1:1" for p in owned["m-a"]}
    want |= {TopicPartition("t", p): "h2:2" for p in owned["m-b"]}
    assert a.endpoints == want  # partitions of the member without a server are not routable
    assert owned["m-off"] and all(TopicPartition("t", p) not in want for p in owned["m-off"])
    assert a.rebalances == 1


async def test_metrics_under_exactly_once_count_committed_outputs_and_drain_lag_to_zero(
    uid: str, tmp_path: Path
) -> None:
    app = sk.App(
        f"ops-eos-{uid}",
        processing_guarantee="exactly_once",
        workdir=tmp_path / "eos",
    )
    src = app.topic(f"ops-eos-in-{uid}", partitions=2)
    out = app.topic(f"ops-eos-out-{uid}", partitions=2)
    counts = app.table("counts", default=int)

    @app.agent(app.stream(src).key_by("k", partitions=2), sink=out, state=[counts])
    async def count(stream: sk.Stream[Any]) -> Any:
        async for v in stream:
            counts[v["k"]] += 1
            yield {"k": v["k"], "n": counts[v["k"]]}

    n = 300
    repartition = f"ops-eos-{uid}-ops-eos-in-{uid}-key_by-k-repartition"
    async with running(app) as w:
        assert w.web is not None
        endpoint = w.web.endpoint
        await produce(src.name, [orjson.dumps({"k": f"k{i % 7}"}) for i in range(n)])
        await read_all(out.name, expect=n, within=60)

        async def settled() -> bool:
            sums = metric_sums((await get(endpoint, "/metrics"))[1])
            settled.sums = sums  # type: ignore[attr-defined]
            lags = [
                s.value
                for f in text_string_to_metric_families((await get(endpoint, "/metrics"))[1])
                for s in f.samples
                if s.name == "streamkit_consumer_lag" and s.labels["topic"] == repartition
            ]
            return len(lags) == 2 and not any(lags)

        await wait_until(settled, within=30, what="lag 0 on the transactional repartition topic")
        sums = settled.sums  # type: ignore[attr-defined]
        assert sums[("streamkit_events_out_total", out.name)] == n
        assert sums[("streamkit_events_in_total", repartition)] == n
        assert sums[("streamkit_commit_failures_total", "")] == 0
        assert sums[("streamkit_checkpoint_duration_seconds_count", "")] > 0
        code, answer = await get(endpoint, "/tables/counts/k3")
        assert (code, answer["value"]) == (200, sum(1 for i in range(n) if i % 7 == 3))
        status = (await get(endpoint, "/status"))[1]
        assert status["guarantee"] == "exactly_once"
