"""Distribution patterns against the real broker: key_by (murmur2 like Java), rebalance,
shuffle, forward, per-operator parallelism with one and with three worker processes."""

from __future__ import annotations

import collections
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from tests.kafkahelp import ROOT, WorkerProcess, end_offsets, produce, read_all, wait_until

N_USERS, N_EVENTS = 50, 2000


def events() -> list[tuple[bytes, bytes]]:
    rows = []
    for i in range(N_EVENTS):
        user = f"user_{(i * 7919) % N_USERS}"
        rows.append((str(i).encode(), orjson.dumps({"i": i, "user": user})))
    return rows


def java_partitions(keys: list[str], n: int) -> dict[str, int]:
    """What Kafka's Java client says: Utils.toPositive(Utils.murmur2(key)) % n."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import localkafka

    lib = localkafka.resolve_jars()
    source = Path(__file__).with_name("JavaPartitions.java")
    out = subprocess.run(
        [localkafka.find_java(), "-cp", f"{lib}/*", str(source), str(n), *keys],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout.decode()
    return {k: int(p) for k, p in (line.split() for line in out.splitlines())}


def load_pipeline(uid: str) -> sk.App:
    os.environ["SKTEST_ID"] = uid
    module = importlib.reload(importlib.import_module("tests.pipeapp"))
    app: sk.App = module.app
    return app


def check_outputs(results: list[dict[str, Any]], java: dict[str, int]) -> None:
    assert sorted(r["i"] for r in results) == list(range(N_EVENTS)), "lost or duplicated"
    # forward: the parse step ran on the event's own input partition (2 of them).
    assert {r["parse"] for r in results} == {0, 1}
    # key_by: every event of a user on the partition Java would choose, by one task only.
    for r in results:
        assert r["session"] == java[r["user"]], r
    tasks_per_user = collections.defaultdict(set)
    for r in results:
        tasks_per_user[r["user"]].add((r["session"], r["session_pid"]))
    assert all(len(t) == 1 for t in tasks_per_user.values())
    # each stage ran as many tasks as its input has partitions
    assert {r["session"] for r in results} == {0, 1, 2, 3}
    assert {r["enrich"] for r in results} == set(range(8))
    assert {r["log"] for r in results} == {0, 1, 2}
    # rebalance: per producing task (session partition), counts per target differ by <= 1
    per_task: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for r in results:
        per_task[r["session"]][r["enrich"]] += 1
    for counts in per_task.values():
        full = [counts.get(p, 0) for p in range(8)]
        assert max(full) - min(full) <= 1, full
    # shuffle: spread uniform over 3 partitions (chi-square, 2 dof, p=0.001 -> 13.82)
    spread = collections.Counter(r["log"] for r in results)
    expected = N_EVENTS / 3
    chi2 = sum((spread[p] - expected) ** 2 / expected for p in range(3))
    assert chi2 < 13.82, (spread, chi2)
    # keys: a key_by key becomes the record key of the stages after it
    assert all(r["key"] == r["user"] for r in results)


@pytest.fixture(scope="module")
def java() -> dict[str, int]:
    return java_partitions([f"user_{u}" for u in range(N_USERS)], 4)


async def test_pipeline_with_one_worker(uid: str, java: dict[str, int]) -> None:
    from tests.kafkahelp import running

    app = load_pipeline(uid)
    async with running(app) as worker:
        await produce(f"pipe-clicks-{uid}", [v for _, v in events()])
        records = await read_all(f"pipe-out-{uid}", expect=N_EVENTS, within=90)
        assert worker.tasks is not None
        by_topic = collections.Counter(tp.topic for tp in worker.tasks.tasks)
    check_outputs([orjson.loads(r.value) for r in records], java)
    # one worker holds every task: a task per partition of each stage's input
    assert sorted(by_topic.values()) == [2, 3, 4, 8]
    # forward made no topic; the three exchanges made three, with their counts
    internal = {
        t.name: t.partitions for t in app.topics.values() if t.name.endswith("-repartition")
    }
    assert internal == {
        f"pipe-{uid}-by-user-repartition": 4,
        f"pipe-{uid}-by-user-rebalance-repartition": 8,
        f"pipe-{uid}-by-user-rebalance-shuffle-repartition": 3,
    }
    assert len(await end_offsets(f"pipe-{uid}-by-user-rebalance-shuffle-repartition")) == 3


async def test_pipeline_with_three_worker_processes(
    uid: str, tmp_path: Path, java: dict[str, int]
) -> None:
    workers = [
        WorkerProcess(
            "tests.pipeapp:app",
            {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / f"w{i}")},
            tmp_path / f"w{i}.log",
        ).start()
        for i in range(3)
    ]
    try:
        await wait_until(
            lambda: all("assigned" in w.log().rsplit("revoked", 1)[-1] for w in workers),
            within=90,
            what="three workers holding partitions",
        )
        await produce(f"pipe-clicks-{uid}", [v for _, v in events()])
        records = await read_all(f"pipe-out-{uid}", expect=N_EVENTS, within=120)
    finally:
        for w in workers:
            w.stop()
    results = [orjson.loads(r.value) for r in records]
    check_outputs(results, java)
    # the work really was spread over the processes
    assert len({r["session_pid"] for r in results}) >= 2
    assert len({r["enrich_pid"] for r in results}) >= 2


def test_topology_of_the_pipeline(uid: str) -> None:
    app = load_pipeline(uid)
    p = f"pipe-{uid}"
    assert app.topology() == (
        f"app {p}\n"
        f"stage pipe-clicks-{uid}  x2 tasks  <- pipe-clicks-{uid} (2 partitions)\n"
        f"  stream(pipe-clicks-{uid})\n"
        "    map(note_parse)\n"
        "      forward\n"
        f"        key_by(user) => {p}-by-user-repartition (4 partitions, internal)\n"
        f"stage by-user  x4 tasks  <- {p}-by-user-repartition (4 partitions)\n"
        f"  {p}-by-user-repartition -> map(note_session)\n"
        f"    rebalance => {p}-by-user-rebalance-repartition (8 partitions, internal)\n"
        f"stage by-user-rebalance  x8 tasks  <- {p}-by-user-rebalance-repartition (8 partitions)\n"
        f"  {p}-by-user-rebalance-repartition -> map(note_enrich)\n"
        f"    shuffle => {p}-by-user-rebalance-shuffle-repartition (3 partitions, internal)\n"
        "stage by-user-rebalance-shuffle  x3 tasks  "
        f"<- {p}-by-user-rebalance-shuffle-repartition (3 partitions)\n"
        f"  {p}-by-user-rebalance-shuffle-repartition -> agent sessions() "
        f"-> pipe-out-{uid} (1 partition)\n"
        f"dead letters -> {p}-dlq\n"
    )
    mermaid = app.topology("mermaid")
    assert mermaid.startswith("flowchart LR\n")
    assert (
        f"-- rebalance --> topic_{p.replace('-', '_')}_by_user_rebalance_repartition\n" in mermaid
    )
    assert mermaid.count("-- key_by -->") == 1 and mermaid.count("-- shuffle -->") == 1
    proc = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "topology", "tests.pipeapp:app"],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "SKTEST_ID": uid},
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.decode() == app.topology()


async def test_a_chain_inside_a_body_is_refused_and_says_where_to_declare_it() -> None:
    """Code before the loop may await (it runs once per task, never at declaration); chaining
    operators on the body's stream is refused with the declared form as the hint."""
    from streamkit.testing import AsyncTestDriver

    app = sk.App("shape-check")
    src = app.topic("shape-in")
    ran: list[str] = []

    async def sneaky(stream: sk.Stream[Any]) -> None:
        import asyncio

        ran.append("start")
        await asyncio.sleep(0)
        async for _ in stream.key_by("k"):
            pass

    app.agent(src)(sneaky)  # declaring runs nothing of the body
    assert ran == []
    with pytest.raises(sk.ConfigError, match=r"declared before the agent.*app.stream\(topic\)"):
        async with AsyncTestDriver(app):
            pass
    assert ran and set(ran) == {"start"}
