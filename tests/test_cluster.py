"""A three-broker KRaft cluster (scripts/kafkacluster.py, `localkafka.py up --brokers 3`): the
internal topics get 3 replicas and min.insync.replicas=2, and under exactly-once a `kill -9` of
the broker leading the most partitions, mid-run, loses nothing and duplicates nothing.

The cluster is the test's own (three more JVMs), started once for this module. The long form
(`CHAOS_LONG=1`, `make chaos`) sends more and also kills -9 a worker while the broker is down.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.chaoshelp import OutputWatch, figures
from tests.kafkahelp import WorkerProcess, read_all, wait_until
from tests.shophelp import assert_exactly_once, holding, purchases, shop_worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

LONG = bool(os.environ.get("CHAOS_LONG"))
EVENTS = 12_000 if LONG else 4_000
RATE = 400  # purchases/s


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    import kafkacluster

    nodes = kafkacluster.start_cluster(3)
    try:
        yield nodes
    finally:
        nodes.stop()


async def _admin(bootstrap: str) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def leaders(bootstrap: str, topics: list[str]) -> collections.Counter[int]:
    """node id → how many of the partitions of `topics` it leads."""
    admin = await _admin(bootstrap)
    try:
        counts: collections.Counter[int] = collections.Counter()
        for meta in await admin.describe_topics(topics):
            for p in meta["partitions"]:
                counts[p["leader"]] += 1
        return counts
    finally:
        await admin.close()


async def replication(bootstrap: str, topic: str) -> tuple[int, str]:
    """(replicas of partition 0, min.insync.replicas) of a topic."""
    admin = await _admin(bootstrap)
    try:
        (meta,) = await admin.describe_topics([topic])
        replicas = len(meta["partitions"][0]["replicas"])
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})
        (response,) = await admin.describe_configs([resource])
        configs = response.resources[0][4]
        isr = next(c[1] for c in configs if c[0] == "min.insync.replicas")
        return replicas, str(isr)
    finally:
        await admin.close()


async def feed(bootstrap: str, topic: str, rows: list[dict[str, Any]], sent: list[int]) -> None:
    """Send every row at RATE with an idempotent acks=all producer (it rides out a leader
    change without writing an input twice)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        started = time.monotonic()
        for i, row in enumerate(rows):
            await producer.send(topic, orjson.dumps(row))
            sent.append(i)
            ahead = (i + 1) / RATE - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


async def test_kill_9_of_the_busiest_broker_under_exactly_once_loses_and_duplicates_nothing(
    cluster: Any, uid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = cluster.bootstrap
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)  # the helpers read it per call
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAMKIT_TOPIC_REPLICATION_FACTOR": "3"}
    workers: list[WorkerProcess] = []
    for i in range(2):
        w = shop_worker(uid, tmp_path / f"wd{i}", tmp_path, f"w{i}")
        w.env.update(env)
        workers.append(w.start())
    rows = purchases(EVENTS, seed=17)
    source, out = f"purchases-{uid}", f"totals-{uid}"
    repartition = f"shop-{uid}-by-user-repartition"
    internal = [repartition, f"shop-{uid}-spent-changelog", f"shop-{uid}-count-changelog"]
    internal.append(f"shop-{uid}-dlq")
    watch: OutputWatch | None = None
    feeder: asyncio.Task[None] | None = None
    sent: list[int] = []
    killed, killed_at, restarted_worker = 0, 0.0, None
    try:
        await holding(*workers)
        for topic in internal:
            assert await replication(bootstrap, topic) == (3, "2"), topic
        watch = await OutputWatch(out).start()
        feeder = asyncio.create_task(feed(bootstrap, source, rows, sent))
        await wait_until(
            lambda: len(watch.records) >= EVENTS // 4, within=120, what="a quarter of the output"
        )
        # kill -9 the node leading the most partitions of the app's topics, mid-run
        counts = await leaders(bootstrap, [source, out, *internal])
        killed = counts.most_common(1)[0][0]
        killed_at = time.monotonic()
        cluster.kill(killed)
        if LONG:  # a worker too, while the broker is down; restarted on its workdir
            await asyncio.sleep(2)
            workers[0].kill9()
            restarted_worker = shop_worker(uid, tmp_path / "wd0", tmp_path, "w0-again")
            restarted_worker.env.update(env)
            workers.append(restarted_worker.start())
        await feeder
        await wait_until(
            lambda: len(watch.records) >= EVENTS, within=180, what=f"{EVENTS} outputs", every=0.2
        )
        resumed = watch.resumed_after(killed_at)
        records = await read_all(out)  # to the end offsets, read_committed
        alive = [w.alive for w in workers]
    finally:
        if feeder is not None:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
        if watch is not None:
            await watch.stop()
        for w in workers:
            w.stop()
        if killed:
            cluster.start_node(killed)  # the next test gets three nodes again
    logs = "".join(w.log() for w in workers)
    assert len(sent) == EVENTS
    assert_exactly_once(records, rows)
    if not LONG:
        assert all(alive), logs[-5000:]
    figures(
        "cluster-broker-kill-9" + ("-long" if LONG else ""),
        killed_node=killed,
        leaders_before=dict(counts),
        events=EVENTS,
        output_resumed_everywhere_s=None if resumed is None else round(resumed, 2),
        lost=0,
        duplicated=0,
        workers_failed=logs.count("worker failing"),
    )
