"""Bad input never stops a worker: every record that does not decode, validate, have an event
time, or survive the agent ends in the dead-letter topic with its bytes, a reason and its
coordinates, and in = out + DLQ exactly. First the real Task with no broker (hypothesis, many
mixes), then a generated batch through a real worker and broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings

from tests.badinput import (
    Made,
    batches,
    check_outcomes,
    fuzz_app,
    near_broker_limit,
    random_batch,
    run_task,
)
from tests.kafkahelp import (
    bootstrap,
    committed,
    create_topic,
    end_offsets,
    read_all,
    running,
    wait_until,
)


def run_pure(made: list[Made], event_time: bool) -> None:
    app, orders, out = fuzz_app("pure")

    async def scenario() -> None:
        task, collector = await run_task(app, orders, made, event_time=event_time)
        try:
            runner = task.runner
            assert runner is not None and not runner.done(), "the task stopped"
            assert task.committable == len(made)
            sink = [r.value for r in collector.records if r.topic == out.name]
            dead = [
                (r.key, r.value, r.headers) for r in collector.records if r.topic == app.dlq.name
            ]
            check_outcomes(made, sink, dead, topic=orders.name, event_time=event_time)
            assert task.dead_letters == len(dead)
        finally:
            await task.close(1.0)

    asyncio.run(scenario())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(made=batches())
def test_decode_and_dispatch_send_every_bad_record_to_the_dlq(made: list[Made]) -> None:
    run_pure(made, event_time=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(made=batches())
def test_with_event_time_bad_times_and_odd_headers_go_to_the_dlq_too(made: list[Made]) -> None:
    run_pure(made, event_time=True)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(made=batches(max_size=6, big=True))
def test_huge_records_go_through_or_to_the_dlq_whole(made: list[Made]) -> None:
    run_pure(made, event_time=True)


async def produce_made(topic: str, made: list[Made], partitions: int) -> dict[int, int]:
    """Send record i to partition i % partitions, in order; the offset each one got."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap(), max_request_size=2 * 1024 * 1024, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for i, m in enumerate(made):
            if m.key is None and m.value is None:  # send() refuses it; Java producers do not
                batch = producer.create_batch()
                batch.append(key=None, value=None, timestamp=None, headers=m.headers)
                futures.append(await producer.send_batch(batch, topic, partition=i % partitions))
            else:
                futures.append(
                    await producer.send(
                        topic, m.value, key=m.key, headers=m.headers, partition=i % partitions
                    )
                )
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {i: meta.offset for i, meta in enumerate(metas)}


@pytest.mark.parametrize("guarantee", ["exactly_once"])
async def test_a_worker_sends_a_generated_bad_batch_to_the_dlq_and_stays_up(
    guarantee: str, uid: str, workdir: Path
) -> None:
    made = random_batch(seed=int(uid, 16), size=400, big=4)
    made.insert(len(made) // 2, near_broker_limit(b"k", [("trace", b"\xff")]))
    app, orders, out = fuzz_app(uid, workdir=workdir, processing_guarantee=guarantee)
    await create_topic(orders.name, 3)
    offsets = await produce_made(orders.name, made, 3)
    async with running(app) as worker:
        ends = await end_offsets(orders.name)

        async def all_committed() -> bool:
            return await committed(app.id, orders.name) == ends

        await wait_until(all_committed, within=60, what="every input offset committed")
        assert not worker.stopping
        assert worker.tasks is not None and len(worker.tasks.tasks) == 3
        assert all(
            t.runner is not None and not t.runner.done() for t in worker.tasks.tasks.values()
        )
    sink = await read_all(out.name)
    dead = await read_all(app.dlq.name)
    kinds = {m.kind for m in made}
    assert {"valid", "random-bytes", "wrong-version", "null-value", "huge-valid"} <= kinds
    assert "near-broker-limit" in kinds
    check_outcomes(
        made,
        [r.value for r in sink],
        [(r.key, r.value, list(r.headers)) for r in dead],
        topic=orders.name,
        event_time=False,  # no window in this app: its agent does not use event time
        partition_of=lambda i: i % 3,
        offset_of=lambda i: offsets[i],
    )
