"""Exactly-once, per worker: a partition whose committed offset an open transaction still holds
(its previous owner was killed mid-checkpoint) does not hold up the rebalance callback
(`runtime/positions.py`). The worker keeps heartbeating, runs its other partitions meanwhile,
and starts the held one from its final committed offset once the transaction ends."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

import streamkit as sk
from streamkit.aiokafka_internals import group_metadata
from tests.kafkahelp import bootstrap, create_topic, produce, read_all, running, wait_until

SESSION_MS = 6000  # the broker's minimum: a callback blocked longer gets the worker expelled


async def test_a_partition_held_by_an_open_transaction_waits_outside_the_rebalance(
    uid: str, workdir: Path
) -> None:
    app = sk.App(
        f"held-{uid}",
        workdir=workdir,
        processing_guarantee="exactly_once",
        transactional_producer="per_worker",
        session_timeout_ms=SESSION_MS,
        commit_interval=0.2,
    )
    src = app.topic(f"in-{uid}", partitions=2)
    out = app.topic(f"out-{uid}", partitions=1)
    app.stream(src).map(lambda e: {"n": e["n"]}).to(out)
    await create_topic(src.name, 2)
    await create_topic(out.name, 1)
    for p in (0, 1):
        await produce(src.name, [orjson.dumps({"n": p * 100 + i}) for i in range(5)], partition=p)
    # the killed previous owner: a transaction with offsets for in[0], left open
    zombie = AIOKafkaProducer(
        bootstrap_servers=bootstrap(),
        transactional_id=f"zombie-{uid}",
        transaction_timeout_ms=120_000,
    )
    await zombie.start()
    try:
        await zombie.begin_transaction()
        await zombie.send_offsets_to_transaction({TopicPartition(src.name, 0): 3}, app.id)
        async with running(app) as worker:
            assert worker.positions is not None
            # in[1] runs at once; in[0] waits, and the callback returned: the worker heartbeats
            got = await read_all(out.name, expect=5, within=SESSION_MS / 1000)
            assert sorted(orjson.loads(r.value)["n"] for r in got) == list(range(100, 105))
            assert worker.positions.pending == {TopicPartition(src.name, 0)}
            member = group_metadata(worker.consumer).member_id
            held_since = time.monotonic()
            await wait_until(  # longer than a session: an expelled worker would rejoin anew
                lambda: time.monotonic() - held_since > SESSION_MS / 1000 + 2,
                within=SESSION_MS / 1000 + 5,
                what="a session timeout to pass",
            )
            assert group_metadata(worker.consumer).member_id == member
            assert worker.positions.pending == {TopicPartition(src.name, 0)}
            await zombie.abort_transaction()  # its offsets go: in[0] starts from the beginning
            got = await read_all(out.name, expect=10, within=30)
            assert sorted(orjson.loads(r.value)["n"] for r in got) == [
                *range(5),
                *range(100, 105),
            ]
            assert worker.positions.pending == set()
            assert group_metadata(worker.consumer).member_id == member
            assert worker.checkpointer is not None
            assert worker.checkpointer.commit_failures == 0
    finally:
        await zombie.stop()
