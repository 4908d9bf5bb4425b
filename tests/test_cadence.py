"""When checkpoints are due (`runtime/cadence.py`): a fixed rate, and under exactly-once the
follow-up that commits a second stage's outputs once it processed what the last checkpoint
wrote to its input, rather than a whole interval later."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

import streamkit as sk
from streamkit.runtime import cadence as cadence_module
from streamkit.runtime.cadence import Cadence
from streamkit.runtime.exactly_once import TransactionalCheckpointer, last_written
from tests.kafkahelp import bootstrap, create_topic, produce, running, wait_until

TP0, TP1 = TopicPartition("a-repartition", 0), TopicPartition("a-repartition", 1)


def test_the_rate_is_fixed_from_start_to_start() -> None:
    c = Cadence(1.0, follow_up=True)
    c.started, c.ended = 100.0, 100.4  # a checkpoint of 0.4 s
    assert c.regular_due() == 101.0  # not 101.4
    c.started, c.ended = 100.0, 101.7  # one longer than the interval
    assert c.regular_due() == 101.7 + 1.0 * cadence_module.REST_SHARE


def test_the_follow_up_waits_for_the_inputs_written_and_only_those() -> None:
    c = Cadence(1.0, follow_up=True)
    written = {("a-repartition", 0): 41, ("a-repartition", 1): 9, ("out", 0): 77}
    c.arm(written, {TP0, TP1, TopicPartition("source", 0)})
    assert c.targets == {TP0: 42, TP1: 10}  # "out" is not an input of this worker
    assert c.chase_deadline() is not None
    assert not c.reached({TP0: 42, TP1: 9})
    assert c.reached({TP0: 42, TP1: 10})
    assert c.reached({TP0: 50})  # TP1 no longer this worker's: not waited for
    c.disarm()
    assert c.chase_deadline() is None


def test_a_checkpoint_that_will_be_followed_leaves_the_store_writes_to_the_follow_up() -> None:
    """Step 4 of a checkpoint that wrote to this worker's inputs waits for the next checkpoint
    (the follow-up, due as soon as they are processed): the follow-up's transaction does not
    wait for the SQLite writes. Never twice in a row: the next checkpoint writes."""
    inputs: dict[TopicPartition, Any] = {TP0: None, TP1: None}
    checkpointer = TransactionalCheckpointer("g", cast(Any, None), inputs)
    wrote_input = {("a-repartition", 0): 41, ("out", 0): 77}
    # one dict per worker, shared by every task's result: merged once
    assert last_written([wrote_input, wrote_input, None]) == wrote_input
    assert last_written([RuntimeError("failed"), None]) == {}
    assert checkpointer._followed(last_written([wrote_input, wrote_input, None]))
    assert not checkpointer._followed(wrote_input)  # the follow-up writes
    assert checkpointer._followed(last_written([None, wrote_input]))
    assert not checkpointer._followed({})  # (a failed one) whichever comes next writes
    assert not checkpointer._followed({("out", 0): 78})  # nothing this worker reads
    del inputs[TP0]  # the partition went to another worker
    assert not checkpointer._followed(wrote_input)


def test_nothing_to_chase_arms_nothing_and_at_least_once_never_arms() -> None:
    c = Cadence(1.0, follow_up=True)
    c.arm({("out", 0): 5}, {TP0})
    assert c.chase_deadline() is None
    alo = Cadence(1.0, follow_up=False)
    alo.arm({("a-repartition", 0): 5}, {TP0})
    assert alo.chase_deadline() is None


async def _watch(topics: list[str], seen: dict[str, list[float]]) -> None:
    """Per topic, the monotonic time at which each record became visible to a
    read_committed reader, appended to `seen` until cancelled."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap(),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=20)
            now = time.monotonic()
            for tp, recs in batch.items():
                seen[tp.topic].extend(now for _ in recs)
    finally:
        await consumer.stop()


async def test_a_second_stage_commits_soon_after_its_input_is_committed(
    uid: str, workdir: Path
) -> None:
    """Exactly-once, a 4 s commit interval, one worker running both stages of a key_by
    pipeline: each output is visible well within half an interval after the repartition
    record it comes from (without the follow-up it waits for the next interval: ~4 s)."""
    interval = 4.0
    app = sk.App(
        f"t-{uid}",
        workdir=workdir,
        processing_guarantee="exactly_once",
        commit_interval=interval,
    )
    src = app.topic(f"in-{uid}", partitions=2)
    out = app.topic(f"out-{uid}", partitions=2)
    app.stream(src).key_by("user", name="by-user").map(lambda e: {"seen": e["user"]}).to(out)
    repartition = f"t-{uid}-by-user-repartition"
    seen: dict[str, list[float]] = {repartition: [], out.name: []}
    async with running(app) as worker:
        watch = asyncio.create_task(_watch([repartition, out.name], seen))
        try:
            for i in range(3):  # one event at a time: one record per stage per checkpoint
                await produce(src.name, [orjson.dumps({"user": f"u{i}"})])
                await wait_until(
                    lambda i=i: len(seen[out.name]) > i, within=4 * interval, what=f"output {i}"
                )
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        assert worker.cadence is not None and worker.cadence.follow_ups >= 3
    gaps = [o - r for r, o in zip(seen[repartition], seen[out.name], strict=True)]
    assert all(g < interval / 2 for g in gaps), gaps


class _Started:
    """A task as the lead sees it: its committable offsets, empty until its first event."""

    def __init__(self) -> None:
        self.done: dict[TopicPartition, int] = {}

    def offsets(self) -> dict[TopicPartition, int]:
        return self.done


def test_started_tasks_lead_a_checkpoint_once_one_has_processed_an_event() -> None:
    c = Cadence(1.0, follow_up=True)
    idle, busy = _Started(), _Started()
    c.lead([idle, busy])
    assert not c.led()  # nothing processed yet: nothing to commit early
    busy.done = {TP0: 5}
    assert c.led() and c.leads == 1
    c.begin()  # the regular checkpoint it made due has them: the lead is over
    assert not c.leading and not c.led()
    alo = Cadence(1.0, follow_up=False)  # at-least-once: outputs are visible as written
    alo.lead([busy])
    assert not alo.led()


async def test_the_first_outputs_after_a_start_do_not_wait_for_the_interval(
    uid: str, workdir: Path
) -> None:
    """Exactly-once, a 30 s commit interval, a backlog waiting for a key_by pipeline when its
    worker starts: the first outputs are visible within seconds (the lead checkpoint, then
    the follow-up), not after the first interval (without the lead: 30 s)."""
    interval = 30.0
    app = sk.App(
        f"t-{uid}", workdir=workdir, processing_guarantee="exactly_once", commit_interval=interval
    )
    src = app.topic(f"in-{uid}", partitions=2)
    out = app.topic(f"out-{uid}", partitions=2)
    app.stream(src).key_by("user", name="by-user").map(lambda e: {"seen": e["user"]}).to(out)
    await create_topic(src.name, 2)
    await produce(src.name, [orjson.dumps({"user": f"u{i % 50}"}) for i in range(2000)])
    seen: dict[str, list[float]] = {out.name: []}
    async with running(app) as worker:
        watch = asyncio.create_task(_watch([out.name], seen))
        try:
            await wait_until(
                lambda: bool(seen[out.name]), within=interval / 3, what="a first output"
            )
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        assert worker.cadence is not None and worker.cadence.leads >= 1


def test_due_says_which_checkpoint_comes_and_when_to_look_again() -> None:
    c = Cadence(1.0, follow_up=True)
    c.started = c.ended = 100.0
    assert c.due(100.2, {}) == (False, 101.0)  # nothing waited on: the regular one
    assert c.due(101.0, {}) == (False, 101.0)  # due now
    c.arm({("a-repartition", 0): 41}, {TP0})
    c.armed_at = 100.0
    reader = _Started()
    reader.done = {TP0: 30}  # its task has not reached what the checkpoint wrote
    follow_up, until = c.due(100.2, {TP0: reader})
    assert not follow_up and until == 100.2 + cadence_module.CHASE_POLL  # looking again
    reader.done = {TP0: 42}
    assert c.due(100.3, {TP0: reader}) == (True, 100.3)  # processed: the follow-up now
    reader.done = {TP0: 30}
    assert c.due(100.6, {TP0: reader}) == (False, 101.0)  # half an interval: dropped
    assert c.chase_deadline() is None
