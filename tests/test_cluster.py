"""A three-broker KRaft cluster (scripts/kafkacluster.py, `localkafka.py up --brokers 3`): the
internal topics get 3 replicas and min.insync.replicas=2, and under exactly-once, mid-run,
`kill -9` of the node that leads the most partitions, then of the node coordinating the most of
the app's transactional ids, then of the active controller — each killed node started again and
the cluster healed (every replica back in sync) before the next — with worker processes killed
-9 and restarted meanwhile, loses nothing and duplicates nothing.

The cluster is the test's own (three more JVMs), started once for this module. The long form
(`CHAOS_LONG=1`, `make chaos`) is the scenario above, twice over (six node kills), a worker
killed at every step, in both producer modes (one transactional producer per input partition,
and one per worker). The short form (`make test`) kills the busiest leader and a worker only:
each further fault needs the node before it started again and its replicas back in sync, and
the three took 100-130 s on the shared 2-core machine, beyond the 90 s `make test` allows it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from asyncio import to_thread
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streamkit.runtime.txn_producers import transactional_id, worker_transactional_ids
from tests import clusterhelp
from tests.chaoshelp import OutputWatch, figures
from tests.kafkahelp import WorkerProcess, read_all, wait_until
from tests.shophelp import assert_exactly_once, holding, purchases, shop_worker

LONG = bool(os.environ.get("CHAOS_LONG"))
RATE = 400  # purchases/s
ROUNDS = 2  # the long form kills the three kinds of node twice over
STEP_OUTPUTS = 400  # outputs between two faults: each fault lands mid-run


@pytest.fixture(scope="module")
def data_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the cluster's data goes (`STREAMKIT_KAFKA_DATA`), a folder of the test's own."""
    return tmp_path_factory.mktemp("kafka-data")


@pytest.fixture(scope="module")
def cluster(data_parent: Path) -> Iterator[Any]:
    import kafkacluster  # scripts/ is on the path (tests/clusterhelp.py)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("STREAMKIT_KAFKA_DATA", str(data_parent))
        nodes = kafkacluster.start_cluster(3)
    try:
        yield nodes
    finally:
        nodes.stop()


def test_the_nodes_keep_their_data_where_streamkit_kafka_data_says(
    cluster: Any, data_parent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`STREAMKIT_KAFKA_DATA` (a tmpfs, for one) holds every node's log folder, the logs of
    the topics the cluster made (its metadata); a folder that is not there is refused."""
    import localkafka

    for node in cluster.nodes:
        assert node.data_dir.is_relative_to(data_parent), node.data_dir
        assert any((node.data_dir / "data").glob("__cluster_metadata-*")), node.data_dir
    monkeypatch.setenv("STREAMKIT_KAFKA_DATA", str(data_parent / "missing"))
    with pytest.raises(localkafka.BrokerError, match=r"STREAMKIT_KAFKA_DATA=.*not a folder"):
        localkafka.data_parent()


def test_every_node_names_the_same_active_controller_and_coordinators(cluster: Any) -> None:
    """The probes the long form relies on (DescribeQuorum, FindCoordinator), asked of each
    node: one answer, a node of the cluster (the short form kills no coordinator and no
    controller, so this is where `make test` checks them). Runs first, on three live nodes."""
    import kafkaprobe  # scripts/ is on the path (tests/clusterhelp.py)

    ids = {1, 2, 3}
    ports = [node.port for node in cluster.nodes]
    controllers = {kafkaprobe.active_controller(port) for port in ports}
    assert len(controllers) == 1 and controllers <= ids, controllers
    for key, kind in (("some-app-input-0", kafkaprobe.TRANSACTION), ("g", kafkaprobe.GROUP)):
        # the first FindCoordinator creates the log behind it: no answer until it has leaders
        deadline = time.monotonic() + 60
        while None in (found := {kafkaprobe.find_coordinator(p, key, kind) for p in ports}):
            assert time.monotonic() < deadline, f"no coordinator for {key} in 60 s"
            time.sleep(0.2)
        assert len(found) == 1 and found <= ids, (key, found)


async def feed(bootstrap: str, topic: str, rows: list[dict[str, Any]], stop: asyncio.Event) -> int:
    """Send rows at RATE until `stop` (or the rows run out) with an idempotent acks=all producer
    (it rides out a leader change without writing an input twice); how many were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    sent = 0
    try:
        started = time.monotonic()
        while sent < len(rows) and not stop.is_set():
            await producer.send(topic, orjson.dumps(rows[sent]))
            sent += 1
            ahead = sent / RATE - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


@dataclass
class Fault:
    """One kind of node to kill: how to pick it, and when its part has moved elsewhere."""

    kind: str
    pick: Callable[[], Awaitable[int]]
    moved: Callable[[int], Awaitable[bool]]


async def test_kill_9_of_the_busiest_broker_the_transaction_coordinator_and_the_controller(
    cluster: Any,
    uid: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    producers: str,
) -> None:
    for i, node in enumerate(cluster.nodes):  # the previous test may end with one down
        if not node.is_alive():
            cluster.start_node(i + 1)
    bootstrap = cluster.bootstrap
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)  # the helpers read it per call
    app_id, source, out = f"shop-{uid}", f"purchases-{uid}", f"totals-{uid}"
    repartition = f"{app_id}-by-user-repartition"
    internal = [repartition, f"{app_id}-spent-changelog", f"{app_id}-count-changelog"]
    internal.append(f"{app_id}-dlq")
    topics = [source, out, *internal]

    def worker(i: int, incarnation: int) -> WorkerProcess:
        w = shop_worker(uid, tmp_path / f"wd{i}", tmp_path, f"w{i}-{incarnation}")
        w.env.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            STREAMKIT_TOPIC_REPLICATION_FACTOR="3",
            STREAMKIT_INSTANCE_ID=f"w{i}-{uid}",  # a restart is no rebalance (static member)
            STREAMKIT_TRANSACTIONAL_PRODUCER=producers,
        )
        return w.start()

    workers = [worker(0, 0), worker(1, 0)]
    incarnations = list(workers)

    txn_ids: list[str] = []  # the app's transactional ids, read while every node is up

    async def transactional_ids() -> list[str]:
        if not txn_ids and producers == "per_worker":
            for i in range(len(workers)):
                txn_ids.extend(worker_transactional_ids(f"{app_id}-w{i}-{uid}"))
        elif not txn_ids:
            parts = await clusterhelp.partitions(bootstrap, [source, repartition])
            txn_ids.extend(
                transactional_id(app_id, TopicPartition(p["topic"], p["partition"])) for p in parts
            )
        return txn_ids

    async def busiest() -> int:
        return (await clusterhelp.leaders(bootstrap, topics)).most_common(1)[0][0]

    async def leads_none(node: int) -> bool:
        try:
            counts = await clusterhelp.leaders(clusterhelp.live_bootstrap(cluster), topics)
        except KafkaError:  # the client may first ask the dead node: not known yet
            return False
        return counts[node] == 0 and counts[-1] == 0

    async def coordinator() -> int:
        found = clusterhelp.coordinators(cluster, await transactional_ids())
        assert found is not None, "no coordinator found for the transactional ids"
        return collections.Counter(found.values()).most_common(1)[0][0]

    async def coordinates_none(node: int) -> bool:
        found = clusterhelp.coordinators(cluster, await transactional_ids())
        return found is not None and node not in found.values()

    async def controller() -> int:
        node = clusterhelp.controller(cluster)
        assert node is not None, "no active controller"
        return node

    async def controls_not(node: int) -> bool:
        return clusterhelp.controller(cluster) not in (None, node)

    faults = [
        Fault("busiest leader", busiest, leads_none),
        Fault("transaction coordinator", coordinator, coordinates_none),
        Fault("active controller", controller, controls_not),
    ]
    rows = purchases(RATE * 600, seed=17)
    watch: OutputWatch | None = None
    stop = asyncio.Event()
    feeder: asyncio.Task[int] | None = None
    steps: list[dict[str, Any]] = []
    down: int | None = None  # the node killed last and not restarted yet
    restart: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        await holding(*workers)
        for topic in internal:
            assert await clusterhelp.replication(bootstrap, topic) == (3, "2"), topic
        await transactional_ids()
        watch = await OutputWatch(out).start()
        feeder = asyncio.create_task(feed(bootstrap, source, rows, stop))
        planned = faults * ROUNDS if LONG else faults[:1]
        for step, fault in enumerate(planned):
            mark = len(watch.records)
            await wait_until(
                lambda mark=mark: len(watch.records) >= mark + STEP_OUTPUTS,
                within=120,
                what=f"output before killing the {fault.kind}",
            )
            node = await fault.pick()
            killed_at = time.monotonic()
            cluster.kill(node)
            down = node
            # a worker too, while the node is down: kill -9, restarted at once (same id)
            i = step % len(workers)
            workers[i].kill9()
            workers[i] = worker(i, step + 1)
            incarnations.append(workers[i])
            await wait_until(
                lambda node=node, fault=fault: fault.moved(node),
                within=60,
                what=f"the {fault.kind}'s part (node {node}) taken over",
                every=0.25,
            )
            moved_s = time.monotonic() - killed_at
            last = step == len(planned) - 1
            # its part taken over, the node starts again (in a thread: the watch keeps
            # reading) while the output recovers; the next fault meets a healed cluster
            restart = None if last else asyncio.create_task(to_thread(cluster.start_node, node))
            await wait_until(
                lambda t=killed_at: watch.resumed_after(t) is not None,
                within=90,
                what=f"output on every partition after killing the {fault.kind}",
                every=0.2,
            )
            resumed_s = watch.resumed_after(killed_at)
            if restart is not None:
                await restart
                down = None
                await wait_until(
                    lambda: clusterhelp.healed(cluster, topics),
                    within=90,
                    what="every replica back in sync",
                    every=0.5,
                )
            steps.append(
                {
                    "killed": fault.kind,
                    "node": node,
                    "taken_over_s": round(moved_s, 2),
                    "output_everywhere_s": round(resumed_s or 0, 2),
                    "healed_s": None if down else round(time.monotonic() - killed_at, 2),
                }
            )
        stop.set()
        sent = await feeder
        await wait_until(
            lambda: len(watch.records) >= sent, within=120, what=f"{sent} outputs", every=0.2
        )
        records = await read_all(out)  # to the end offsets, read_committed
        alive = [w.alive for w in workers]
    finally:
        stop.set()
        if restart is not None:  # a node starting again: let it finish before the teardown
            await asyncio.gather(restart, return_exceptions=True)
        if feeder is not None:
            await asyncio.gather(feeder, return_exceptions=True)
        if watch is not None:
            await watch.stop()
        for w in incarnations:
            w.stop()
    logs = "".join(w.log() for w in incarnations)
    assert_exactly_once(records, rows[:sent])
    assert all(alive), logs[-5000:]
    assert "worker failing" not in logs, logs[-5000:]
    figures(
        "cluster-broker-roles-kill-9" + ("-long" if LONG else ""),
        producers=producers,
        events=sent,
        steps=steps,
        lost=0,
        duplicated=0,
        run_s=round(time.monotonic() - started, 1),
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "producers" in metafunc.fixturenames:
        modes = ["per_partition", "per_worker"] if LONG else ["per_partition"]
        metafunc.parametrize("producers", modes)
